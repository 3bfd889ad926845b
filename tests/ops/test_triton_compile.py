"""segfast's Triton kernels compiled for an H100 (sm_90) on a machine without a GPU.

The interpreter checks what the kernels compute, not whether they compile: a construct that only
the interpreter accepts would first fail on the GPU. triton.compile with an explicit target runs
the whole pipeline (TTIR, TTGIR, LLVM, PTX, ptxas) without a device. On a GPU machine the other
tests compile these kernels for real, so this one is skipped there.
"""

import importlib.util
from pathlib import Path

import pytest
import torch

from segfast import kernels

pytestmark = pytest.mark.skipif(not kernels.available() or torch.cuda.is_available(),
                                reason="needs triton; on a GPU the other tests compile the kernels for real")

KERNELS = Path(kernels.__file__).parent


@pytest.fixture(scope="module")
def compiled_modules():
    """Fresh copies of the kernel modules with TRITON_INTERPRET unset: JIT functions, not
    interpreted ones (tests/conftest.py turns the interpreter on before they are first imported)."""
    with pytest.MonkeyPatch.context() as env:
        env.delenv("TRITON_INTERPRET", raising=False)
        modules = {}
        for name in ("ohem", "attention"):
            spec = importlib.util.spec_from_file_location(f"_compiled_{name}", KERNELS / f"{name}.py")
            modules[name] = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(modules[name])
        yield modules


def compile_for_h100(kernel, types, constants, num_warps=4, num_stages=3):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = kernel.fn if isinstance(kernel, triton.runtime.Autotuner) else kernel
    names = fn.arg_names
    signature = {n: "constexpr" if n in constants else types.get(n, types["*"]) for n in names}
    source = ASTSource(fn=fn, signature=signature, constexprs={(names.index(k),): v for k, v in constants.items()})
    return triton.compile(source, target=GPUTarget("cuda", 90, 32),
                          options={"num_warps": num_warps, "num_stages": num_stages})


def test_ohem_kernels_compile(compiled_modules):
    ohem = compiled_modules["ohem"]
    pointers = {"logits_ptr": "*bf16", "target_ptr": "*i64", "class_weight_ptr": "*fp32", "lse_ptr": "*fp32",
                "nll_ptr": "*fp32", "prob_ptr": "*fp32", "state_ptr": "*i64", "values_ptr": "*fp32", "hist_ptr": "*i64",
                "kept_ptr": "*u8", "loss_ptr": "*fp32", "scale_ptr": "*fp32", "grad_ptr": "*bf16", "thresh": "fp32",
                "denominator": "fp32", "ignore_index": "i64", "budget": "i64", "*": "i32"}
    flags = dict(HAS_CLASS_WEIGHT=True, HAS_THRESH=True)
    compile_for_h100(ohem.ohem_forward_kernel, pointers, dict(flags, COUNT_VALID=True, BLOCK_P=128, BLOCK_C=32))
    compile_for_h100(ohem.radix_histogram_kernel, pointers, dict(SHIFT=8, INDEX_PASS=True, BLOCK=1024))
    compile_for_h100(ohem.radix_pick_kernel, pointers,
                     dict(SHIFT=0, FIRST=False, LAST_VALUE_PASS=True, INDEX_PASS=False, HAS_THRESH=False))
    compile_for_h100(ohem.radix_kept_kernel, pointers, dict(HAS_THRESH=False, BLOCK=1024))
    compile_for_h100(ohem.ohem_finish_kernel, pointers, dict(flags, AVG_NON_IGNORE=True, BLOCK=1024))
    compile_for_h100(ohem.ohem_backward_kernel, pointers, dict(BLOCK_P=128, BLOCK_C=32))


def test_attention_kernels_compile_and_pipeline(compiled_modules):
    """The forward and dQ loops iterate over a plan, not over every tile with a branch inside:
    their K and V loads are software-pipelined (asynchronous copies to shared memory), which
    the branch prevented (the kernels before the plans compiled to none)."""
    attention = compiled_modules["attention"]
    types = {"Q": "*bf16", "K": "*bf16", "V": "*bf16", "M": "*i64", "E": "*u8", "Out": "*bf16", "Lse": "*fp32",
             "Blocks": "*i32", "Counts": "*i32", "DO": "*bf16", "Delta": "*fp32", "DK": "*bf16", "DV": "*bf16",
             "DQ": "*bf16", "scale": "fp32", "*": "i32"}
    compile_for_h100(attention.attention_plan_kernel, types, dict(UNMASK_EMPTY=True))
    compile_for_h100(attention.attention_plan_by_key_kernel, types, dict(UNMASK_EMPTY=True))
    meta = dict(UNMASK_EMPTY=True, DOT_PRECISION="tf32", UPCAST_DOT=False, BLOCK_D=64)
    for name in ("attention_forward_kernel", "attention_backward_q_kernel", "attention_backward_kv_kernel"):
        ttgir = compile_for_h100(getattr(attention, name), types, meta).asm["ttgir"]
        assert "async_copy_global_to_local" in ttgir, f"{name}: loads not pipelined"
