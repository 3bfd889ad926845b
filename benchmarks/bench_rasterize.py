"""Polygon rasterization: segfast against pycocotools, cv2.fillPoly and a vectorised PyTorch
even-odd test, plus the floor every dense contender pays: allocating and writing an output
of the same size.

Every contender returns fully materialised masks (no lazily zeroed pages): the cv2 loop fills
a zero-written array, pycocotools decodes into its own array, torch.zeros writes its output.

    python -m benchmarks.bench_rasterize [--quick] [--device cpu|cuda] [--out DIR]
"""

import ctypes
import math
import sys

import numpy as np
import torch

from benchmarks.harness import Report, measure, parse_args
from segfast.ops import _reference, rasterize_polygons

SIZES = (256, 512, 1024)
VERTICES = (16, 100)
BATCHES = (256, 1024)
QUICK = [(1024, 16, 256), (256, 100, 256)]
TORCH_BUDGET = 2**28  # elements of the (N, V, H, W) even-odd test per timed call


def star_polygons(n, v, size, seed=0):
    """LLaFS-like answers: simple star-shaped polygons well inside the image."""
    g = torch.Generator().manual_seed(seed)
    angle = torch.sort(torch.rand(n, v, generator=g, dtype=torch.float64) * 2 * math.pi, 1).values
    radius = size * (0.1 + 0.3 * torch.rand(n, v, generator=g, dtype=torch.float64))
    centre = size * (0.3 + 0.4 * torch.rand(n, 1, 2, generator=g, dtype=torch.float64))
    return centre + torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], -1)


def zeros_huge_pages(shape, device):
    """The floor for an allocator that asks for transparent huge pages, as segfast's CPU op does."""
    out = torch.empty(shape, dtype=torch.bool, device=device)
    if device == "cpu" and sys.platform.startswith("linux"):
        huge, ptr, n = 1 << 21, out.data_ptr(), out.numel()
        start, end = (ptr + huge - 1) & ~(huge - 1), (ptr + n) & ~(huge - 1)
        if end > start:
            ctypes.CDLL(None).madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), 14)  # MADV_HUGEPAGE
    return out.zero_()


def cv2_loop(polys_np, n, size):
    import cv2

    out = np.empty((n, size, size), np.uint8)
    out.fill(0)
    for i, p in enumerate(polys_np):
        cv2.fillPoly(out[i], [p], 1)
    return out


def coco_decode(polys_list, size):
    from pycocotools import mask as mask_utils

    return mask_utils.decode(mask_utils.frPyObjects(polys_list, size, size))


def torch_evenodd(polys, size, device):
    n, v, _ = polys.shape
    return _reference.rasterize_polygons(
        polys, torch.full((n,), v, device=device), torch.arange(n, device=device), n, size, size, "center"
    )


def run_case(report, size, v, n, device, repeats):
    case = f"N={n} V={v} {size}x{size}"
    polys = star_polygons(n, v, size).to(device)
    dense_bytes = n * size * size
    rep = lambda fn: measure(fn, device, repeats)  # noqa: E731
    report.add(
        "floor: torch.zeros",
        case,
        rep(lambda: torch.zeros(n, size, size, dtype=torch.bool, device=device)),
        bytes=dense_bytes,
    )
    copy_gbps = None
    if device == "cpu":
        report.add(
            "floor: zeros (huge pages)", case, rep(lambda: zeros_huge_pages((n, size, size), device)), bytes=dense_bytes
        )
    else:  # device-to-device copy of the output's size: bytes copied per second is the yardstick
        src = torch.empty(dense_bytes, dtype=torch.uint8, device=device)
        dst = torch.empty_like(src)
        copy_ms = rep(lambda: dst.copy_(src))
        copy_gbps = dense_bytes / copy_ms / 1e6
        report.add("copy of the output size", case, copy_ms, bytes=dense_bytes, write_gbps=f"{copy_gbps:.1f}")
        del src, dst

    def add_segfast(name, out_bytes, fn):
        ms = rep(fn)
        gbps = out_bytes / ms / 1e6
        extra = {"bytes": out_bytes, "write_gbps": f"{gbps:.1f}"}
        note = ""
        if copy_gbps:  # fraction of copy bandwidth reached on the output bytes
            extra["copy_fraction"] = f"{gbps / copy_gbps:.2f}"
            note = f"{gbps:.0f} GB/s = {gbps / copy_gbps:.0%} of copy"
        report.add(name, case, ms, note, **extra)

    for rule in ("center", "coco"):
        add_segfast(
            f"segfast {device} dense {rule}", dense_bytes, lambda: rasterize_polygons(polys, size, size, rule=rule)
        )
    add_segfast(
        f"segfast {device} packed center",
        n * size * 8 * math.ceil(size / 64),
        lambda: rasterize_polygons(polys, size, size, packed=True),
    )
    if device == "cpu":
        try:
            polys_np = [np.round(p.numpy()).astype(np.int32) for p in polys]
            report.add("cv2.fillPoly loop", case, rep(lambda: cv2_loop(polys_np, n, size)), "integer vertices")
        except ImportError:
            print("  cv2 not installed: skipped", file=sys.stderr)
        try:
            polys_list = [p.flatten().tolist() for p in polys]
            report.add(
                "pycocotools frPyObjects+decode",
                case,
                measure(lambda: coco_decode(polys_list, size), device, max(1, repeats // 2)),
            )
        except ImportError:
            print("  pycocotools not installed: skipped", file=sys.stderr)
    # the vectorised even-odd test is O(N V H W): time a slice of the batch and scale it
    per_poly = v * size * size
    k = max(1, min(n, TORCH_BUDGET // per_poly))
    ms = measure(lambda: torch_evenodd(polys[:k], size, device), device, max(1, repeats // 2))
    note = "" if k == n else f"timed on {k} of {n} polygons, scaled"
    report.add(f"torch even-odd ({device})", case, ms * n / k, note)


def main(argv=None):
    args = parse_args(__doc__, argv)
    report = Report("rasterize_polygons", args.device)
    cases = QUICK if args.quick else [(s, v, n) for n in BATCHES for v in VERTICES for s in SIZES]
    if args.quick and args.device == "cuda":
        cases = cases + [(1024, 16, 1024)]  # the GPU bandwidth criterion's case
    for i, (size, v, n) in enumerate(cases, 1):
        print(f"[{i}/{len(cases)}] N={n} V={v} {size}x{size}", file=sys.stderr, flush=True)
        run_case(report, size, v, n, args.device, args.repeats)
    report.save(args.out, "rasterize", baseline=f"segfast {args.device} dense center")
    return report


if __name__ == "__main__":
    main()
