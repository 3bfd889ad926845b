"""segfast's Triton kernels compiled for an H100 (sm_90) on a machine without a GPU.

The interpreter checks what the kernels compute, not whether they compile: a construct that only
the interpreter accepts would first fail on the GPU. triton.compile with an explicit target runs
the whole pipeline (TTIR, TTGIR, LLVM, PTX, ptxas) without a device. It runs in a child process:
the kernels must be defined with TRITON_INTERPRET unset, and the interpreter, once used, leaves
triton.language patched in this one. On a GPU machine the other tests compile the kernels for
real, so this one is skipped there.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from segfast import kernels

pytestmark = pytest.mark.skipif(
    not kernels.available() or torch.cuda.is_available(),
    reason="needs triton; on a GPU the other tests compile the kernels for real",
)

OHEM_TYPES = {
    "logits_ptr": "*bf16",
    "target_ptr": "*i64",
    "class_weight_ptr": "*fp32",
    "lse_ptr": "*fp32",
    "nll_ptr": "*fp32",
    "prob_ptr": "*fp32",
    "state_ptr": "*i64",
    "values_ptr": "*fp32",
    "hist_ptr": "*i64",
    "kept_ptr": "*u8",
    "loss_ptr": "*fp32",
    "scale_ptr": "*fp32",
    "grad_ptr": "*bf16",
    "thresh": "fp32",
    "denominator": "fp32",
    "ignore_index": "i64",
    "budget": "i64",
    "*": "i32",
}
ATTENTION_TYPES = {
    "Q": "*bf16",
    "K": "*bf16",
    "V": "*bf16",
    "M": "*i64",
    "E": "*u8",
    "Out": "*bf16",
    "Lse": "*fp32",
    "Blocks": "*i32",
    "Counts": "*i32",
    "DO": "*bf16",
    "Delta": "*fp32",
    "DK": "*bf16",
    "DV": "*bf16",
    "DQ": "*bf16",
    "scale": "fp32",
    "*": "i32",
}
FLAGS = dict(HAS_CLASS_WEIGHT=True, HAS_THRESH=True)
ATTENTION_META = dict(UNMASK_EMPTY=True, DOT_PRECISION="tf32", UPCAST_DOT=False, BLOCK_D=64)
# (module, kernel, argument types, constexprs)
KERNELS = [
    ("ohem", "ohem_forward_kernel", OHEM_TYPES, dict(FLAGS, COUNT_VALID=True, BLOCK_P=128, BLOCK_C=32)),
    ("ohem", "radix_histogram_kernel", OHEM_TYPES, dict(SHIFT=8, INDEX_PASS=True, BLOCK=1024)),
    (
        "ohem",
        "radix_pick_kernel",
        OHEM_TYPES,
        dict(SHIFT=0, FIRST=False, LAST_VALUE_PASS=True, INDEX_PASS=False, HAS_THRESH=False),
    ),
    ("ohem", "radix_kept_kernel", OHEM_TYPES, dict(HAS_THRESH=False, BLOCK=1024)),
    ("ohem", "ohem_finish_kernel", OHEM_TYPES, dict(FLAGS, AVG_NON_IGNORE=True, BLOCK=1024)),
    ("ohem", "ohem_backward_kernel", OHEM_TYPES, dict(BLOCK_P=128, BLOCK_C=32)),
    ("attention", "attention_plan_kernel", ATTENTION_TYPES, dict(UNMASK_EMPTY=True)),
    ("attention", "attention_plan_by_key_kernel", ATTENTION_TYPES, dict(UNMASK_EMPTY=True)),
    ("attention", "attention_forward_kernel", ATTENTION_TYPES, ATTENTION_META),
    ("attention", "attention_backward_q_kernel", ATTENTION_TYPES, ATTENTION_META),
    ("attention", "attention_backward_kv_kernel", ATTENTION_TYPES, ATTENTION_META),
]


def compile_all():
    """(In the child.) Prints {kernel: "pipelined" | "compiled" | the error} as JSON."""
    import importlib

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    results = {}
    for module, name, types, constants in KERNELS:
        kernel = getattr(importlib.import_module(f"segfast.kernels.{module}"), name)
        fn = kernel.fn if isinstance(kernel, triton.runtime.Autotuner) else kernel
        names = fn.arg_names
        signature = {n: "constexpr" if n in constants else types.get(n, types["*"]) for n in names}
        source = ASTSource(fn=fn, signature=signature, constexprs={(names.index(k),): v for k, v in constants.items()})
        try:
            compiled = triton.compile(
                source, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4, "num_stages": 3}
            )
        except Exception as exc:  # reported to the parent, which fails
            results[name] = f"{type(exc).__name__}: {exc}"
            continue
        results[name] = "pipelined" if "async_copy_global_to_local" in compiled.asm["ttgir"] else "compiled"
    print(json.dumps(results))


@pytest.fixture(scope="module")
def compiled():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run(
        [sys.executable, "-c", "from tests.ops.test_triton_compile import compile_all; compile_all()"],
        cwd=Path(__file__).parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", [name for _, name, _, _ in KERNELS])
def test_kernel_compiles_for_sm90(compiled, name):
    assert compiled[name] in ("compiled", "pipelined"), compiled[name]


@pytest.mark.parametrize(
    "name", ["attention_forward_kernel", "attention_backward_q_kernel", "attention_backward_kv_kernel"]
)
def test_attention_loops_are_software_pipelined(compiled, name):
    """The loops iterate over a plan, not over every tile with a branch inside: their K and V (or
    q and dO) loads are pipelined (asynchronous copies to shared memory), which the branch
    prevented (the kernels before the plans compiled to none, and spilled registers)."""
    assert compiled[name] == "pipelined", compiled[name]
