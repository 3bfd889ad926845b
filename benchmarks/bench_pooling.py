"""Mask pooling: segfast.ops.mask_pool against LLM-Seg-style F.interpolate (antialiased
bilinear) + einsum and against adaptive-average-pool + matmul, forward and forward+backward
(w.r.t. the features), with peak GPU memory. On GPU the table also has the floor for reading
the packed masks once. Masks are SAM-proposal-like blobs at 1024x1024.

    python -m benchmarks.bench_pooling [--quick] [--device cpu|cuda] [--out DIR]
"""

import sys

import torch
import torch.nn.functional as F

from benchmarks.bench_rasterize import star_polygons
from benchmarks.harness import Report, measure, parse_args
from segfast.ops import mask_pool, pack_masks, rasterize_polygons

COUNTS = (50, 256, 1024)
CHANNELS = (1024, 256)
QUICK_CPU = [(256, 256)]
QUICK_CUDA = [(1024, 1024), (256, 256)]
SIZE, GRID = 1024, 64


def interpolate_einsum(features, masks):
    w = F.interpolate(
        masks[0][:, None].to(features.dtype),
        size=features.shape[-2:],
        mode="bilinear",
        antialias=True,
        align_corners=False,
    )[:, 0]
    return (torch.einsum("khw,chw->kc", w, features[0]) / (w.sum((1, 2))[:, None] + 1e-8))[None]


def avgpool_matmul(features, masks):
    w = F.adaptive_avg_pool2d(masks[0].to(features.dtype), features.shape[-2:]).flatten(1)
    return ((w @ features[0].flatten(1).T) / (w.sum(1, keepdim=True) + 1e-8))[None]


def timed(report, name, case, device, repeats, fn, features, backward):
    def run():
        out = fn()
        if backward:
            out.sum().backward()
        return out

    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    ms = measure(run, device, repeats)
    extra = {}
    note = ""
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
        extra["peak_mib"] = f"{peak / 2**20:.1f}"
        note = f"peak +{peak / 2**20:.0f} MiB"
    features.grad = None
    report.add(name + (" fwd+bwd" if backward else " fwd"), case, ms, note, **extra)


def run_case(report, k, c, device, repeats):
    case = f"K={k} C={c} {SIZE}x{SIZE}->{GRID}x{GRID}"
    masks = rasterize_polygons(star_polygons(k, 16, SIZE), SIZE, SIZE)[None].to(device)
    packed = pack_masks(masks)
    features = torch.randn(1, c, GRID, GRID, device=device, requires_grad=True)
    if device == "cuda":
        words = packed.view(torch.int64)
        report.add(
            "floor: read packed masks once", case, measure(lambda: words.sum(), device, repeats), bytes=packed.numel()
        )
    for backward in (False, True):
        timed(
            report,
            "segfast (packed in)",
            case,
            device,
            repeats,
            lambda: mask_pool(features, packed, width=SIZE),
            features,
            backward,
        )
        timed(
            report, "segfast (bool in)", case, device, repeats, lambda: mask_pool(features, masks), features, backward
        )
        timed(
            report,
            "interpolate+einsum",
            case,
            device,
            repeats,
            lambda: interpolate_einsum(features, masks),
            features,
            backward,
        )
        timed(
            report,
            "adaptive avgpool+matmul",
            case,
            device,
            repeats,
            lambda: avgpool_matmul(features, masks),
            features,
            backward,
        )


def main(argv=None):
    args = parse_args(__doc__, argv)
    report = Report("mask_pool", args.device)
    if args.quick:
        cases = QUICK_CUDA if args.device == "cuda" else QUICK_CPU
    else:
        cases = [(k, c) for c in CHANNELS for k in COUNTS]
    for i, (k, c) in enumerate(cases, 1):
        print(f"[{i}/{len(cases)}] K={k} C={c}", file=sys.stderr, flush=True)
        run_case(report, k, c, args.device, args.repeats)
    report.save(args.out, "pooling", baseline="segfast (packed in) fwd")
    return report


if __name__ == "__main__":
    main()
