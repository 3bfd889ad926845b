"""Masked attention: segfast.ops.masked_attention (packed per-query bits, shared by the heads)
against SDPA with a boolean mask (memory-efficient and cuDNN backends), FlexAttention (the block
mask is built on every call, since the mask changes every decoder layer), xformers when
importable, and eager nn.MultiheadAttention-style attention with attn_mask. Forward and
forward+backward, time and peak GPU memory. Masks are Mask2Former-like: blobs from upsampled
random mask logits, with a few fully masked queries.

Each row also gives its fraction of the roofline: 4 * B * H * Lq * Lk * D FLOPs forward (3.5 times
that with the backward: five matmuls to two) at the bf16 matmul peak, against the minimum bytes
(q, k, v, out, plus dO, dq, dk, dv with the backward, and the packed mask) at the copy bandwidth;
peaks measured on the GPU at the start of the run (benchmarks.harness.peaks). The FLOPs are the
dense count: a kernel that skips masked tiles can pass 100%.

Without a GPU the Triton kernel does not run natively; the CPU run is a smoke test of the
harness on one small shape: the Triton kernels under the interpreter, and segfast's SDPA fallback.

    python -m benchmarks.bench_attention [--quick] [--device cpu|cuda] [--out DIR]
"""

import sys
import warnings

import torch
import torch.nn.functional as F

from benchmarks.harness import Report, interpret_triton_on_cpu, measure, parse_args, peaks, with_env
from segfast.ops import attend_mask_from_logits, masked_attention, unpack_masks

# scripts/gpu_check.sh's limit for --quick: the first call per shape autotunes 3 kernels x 4
# launch configurations (on an H200 the default 60 s ran out in the second of two shapes)
GPU_CHECK_SECONDS = 120

MASK2FORMER = [(16, 8, q, hw, 32) for q in (100, 200) for hw in (32, 64, 128)]
LONG_KEYS = [(2, 8, 1024, 128, 64)]  # Lk = 128 * 128 = 16384
QUICK_CUDA = [(16, 8, 100, 64, 32), (2, 8, 1024, 128, 64)]
CPU_CASES = [(2, 4, 32, 16, 32)]
OURS = {"cuda": "segfast masked_attention", "cpu": "segfast masked_attention (Triton interpreter)"}


def work(b, h, q_len, lk, d, itemsize, backward):
    """(FLOPs, minimum bytes) of masked attention, forward or forward + backward."""
    flops = 4 * b * h * q_len * lk * d * (3.5 if backward else 1.0)
    elements = b * h * (2 * q_len + 2 * lk) * d * (2 if backward else 1)  # q, k, v, out (+ dO, dq, dk, dv)
    return flops, elements * itemsize + b * q_len * lk / 8


def make_inputs(b, h, q_len, side, d, device, dtype):
    g = torch.Generator(device="cpu").manual_seed(0)
    q = torch.randn(b, h, q_len, d, generator=g).to(device, dtype)
    k = torch.randn(b, h, side * side, d, generator=g).to(device, dtype)
    v = torch.randn(b, h, side * side, d, generator=g).to(device, dtype)
    logits = torch.randn(b, q_len, 8, 8, generator=g).to(device)
    logits[:, :2] = -10.0  # fully masked queries
    packed = attend_mask_from_logits(logits, (side, side))
    return q, k, v, packed


def contenders(q, k, v, packed, device):
    attend = unpack_masks(packed, k.shape[2])  # (B, Q, HW) bool
    attend = attend | ~attend.any(-1, keepdim=True)  # Mask2Former's empty-row rule
    bool4 = attend[:, None]  # SDPA broadcasts over heads
    out = {OURS[device]: lambda: masked_attention(q, k, v, packed)}
    if device == "cpu":
        out["segfast masked_attention (SDPA fallback)"] = with_env(out[OURS[device]], TRITON_INTERPRET="0")
    if device == "cuda":
        from torch.nn.attention import SDPBackend, sdpa_kernel

        def sdpa(backend):
            def run():
                with sdpa_kernel(backend):
                    return F.scaled_dot_product_attention(q, k, v, attn_mask=bool4)

            return run

        out["SDPA bool mask (mem-efficient)"] = sdpa(SDPBackend.EFFICIENT_ATTENTION)
        out["SDPA bool mask (cuDNN)"] = sdpa(SDPBackend.CUDNN_ATTENTION)
        try:
            from torch.nn.attention.flex_attention import create_block_mask, flex_attention

            flex = torch.compile(flex_attention)
            b, _, lq, lk = q.shape[0], q.shape[1], q.shape[2], k.shape[2]

            def flex_run():
                block = create_block_mask(lambda bi, hi, qi, ki: attend[bi, qi, ki], b, None, lq, lk, device=device)
                return flex(q, k, v, block_mask=block)

            out["FlexAttention (+ block mask)"] = flex_run
        except ImportError:
            pass
        try:
            import xformers.ops as xops

            bias = torch.zeros(attend.shape, dtype=q.dtype, device=device).masked_fill(~attend, float("-inf"))
            out["xformers (bias)"] = lambda: xops.memory_efficient_attention(
                q.transpose(1, 2),
                k.transpose(1, 2),
                v.transpose(1, 2),
                attn_bias=bias[:, None].expand(-1, q.shape[1], -1, -1),
            ).transpose(1, 2)
        except ImportError:
            pass
    else:
        out["SDPA bool mask"] = lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=bool4)

    def eager():  # what nn.MultiheadAttention does with attn_mask: a float B*H*Lq*Lk score matrix
        scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
        return torch.softmax(scores.masked_fill(~bool4, float("-inf")), -1) @ v

    out["eager (MultiheadAttention math)"] = eager
    return out


def run_case(report, shape, device, dtype, repeats):
    b, h, q_len, side, d = shape
    roof = peaks(device)
    case = f"B={b} H={h} Q={q_len} Lk={side * side} D={d}"
    q, k, v, packed = make_inputs(b, h, q_len, side, d, device, dtype)
    for backward in (False, True):
        for t in (q, k, v):
            t.requires_grad_(backward)
        for name, fn in contenders(q, k, v, packed, device).items():

            def run():
                out = fn()
                if backward:
                    out.sum().backward()
                return out

            label = f"{name} {'fwd+bwd' if backward else 'fwd'}"
            try:
                if device == "cuda":
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated() if device == "cuda" else 0
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ms = measure(run, device, repeats)
                extra, note = {}, ""
                if device == "cuda":
                    peak = torch.cuda.max_memory_allocated() - base
                    extra["peak_mib"] = f"{peak / 2**20:.0f}"
                    note = f"peak +{peak / 2**20:.0f} MiB"
                flops, nbytes = work(b, h, q_len, side * side, d, q.element_size(), backward)
                report.add_with_roofline(roof, label, case, ms, flops, nbytes, note, **extra)
            except Exception as exc:  # a peer that rejects this mask/shape is reported, not fatal
                report.add(label, case, float("nan"), f"unsupported: {type(exc).__name__}: {str(exc)[:80]}")
            for t in (q, k, v):
                t.grad = None


def main(argv=None):
    args = parse_args(__doc__, argv)
    interpret_triton_on_cpu(args.device)
    report = Report("masked_attention", args.device)
    if args.device == "cuda":
        cases = QUICK_CUDA if args.quick else MASK2FORMER + LONG_KEYS
        dtype = torch.bfloat16
    else:
        cases, dtype = CPU_CASES, torch.float32
    for i, shape in enumerate(cases, 1):
        print(f"[{i}/{len(cases)}] {shape}", file=sys.stderr, flush=True)
        run_case(report, shape, args.device, dtype, args.repeats)
    report.save(args.out, "attention", baseline=f"{OURS[args.device]} fwd")
    return report


if __name__ == "__main__":
    main()
