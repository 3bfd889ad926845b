"""Pairwise mask IoU: segfast against a float matrix product over dense masks (the usual
approach; bf16 on GPU, float32 on CPU), numpy's float32 matrix product and pycocotools `iou` on
RLE. Masks are SAM-proposal-like blobs (rasterized random polygons).

Peers get their preferred input already prepared (float masks, RLEs): only the IoU is timed.
segfast is timed from packed masks (the backend it picks), from bool masks including the
packing, and per backend of the intersection counts: the popcount kernel (split over the words
on a GPU) and the int8 product of unpacked masks (torch._int_mm; tensor cores on a GPU), each
with its rate in tera-ops/s (one op = one pixel pair: n * m * pixels).

    python -m benchmarks.bench_overlap [--quick] [--device cpu|cuda] [--out DIR]
"""

import sys

import numpy as np
import torch

from benchmarks.bench_rasterize import star_polygons
from benchmarks.harness import Report, measure, parse_args
from segfast.ops import mask_iou, pack_masks, rasterize_polygons
from segfast.ops.overlap import int_mm_intersections

COUNTS = (100, 1000, 3000)
SIZES = (256, 1024)
QUICK = [(1000, "KxK", 256), (100, "Kx4", 1024)]
DENSE_BUDGET = 6 << 30  # bytes of float masks a peer may allocate


def blobs(k, size, seed):
    return rasterize_polygons(star_polygons(k, 16, size, seed=seed), size, size)


def matmul_iou(fa, fb, area_a, area_b):
    inter = fa @ fb.T
    union = area_a[:, None] + area_b[None, :] - inter
    return inter / union.clamp(min=1)


def run_case(report, k, shape, size, device, repeats):
    m = k if shape == "KxK" else 4
    case = f"{k}x{m} {size}x{size}"
    a = blobs(k, size, 1).to(device)
    b = a if shape == "KxK" else blobs(m, size, 2).to(device)
    pa, pb = pack_masks(a), pack_masks(b)
    rep = lambda fn, r=repeats: measure(fn, device, r)  # noqa: E731
    report.add(f"segfast {device} (packed in)", case, rep(lambda: mask_iou(pa, pb)))
    report.add(f"segfast {device} (bool in, packs)", case, rep(lambda: mask_iou(a, b)))
    pairs = k * m * size * size
    for name, fn in (
        ("popcount kernel", lambda: torch.ops.segfast.mask_intersections(pa, pb, False)),
        ("int8 product", lambda: int_mm_intersections(pa, pb)),
    ):
        ms = rep(fn)
        report.add(f"  counts: {name}", case, ms, f"{pairs / ms / 1e9:.2f} Tpair/s", tera_pairs_per_s=pairs / ms / 1e9)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    if (k + m) * size * size * dtype.itemsize <= DENSE_BUDGET:
        fa, fb = a.flatten(1).to(dtype), b.flatten(1).to(dtype)
        area_a, area_b = fa.float().sum(1), fb.float().sum(1)
        report.add(
            f"torch {str(dtype)[6:]} matmul ({device})",
            case,
            rep(lambda: matmul_iou(fa, fb, area_a.to(dtype), area_b.to(dtype))),
            "float masks prepared outside the timing",
        )
        del fa, fb
    else:
        report.add(f"torch {str(dtype)[6:]} matmul ({device})", case, float("nan"), "skipped: dense floats too large")
    if device == "cpu":
        if (k + m) * size * size * 4 <= DENSE_BUDGET:
            na, nb = a.flatten(1).numpy().astype(np.float32), b.flatten(1).numpy().astype(np.float32)
            sa, sb = na.sum(1), nb.sum(1)
            report.add(
                "numpy float32 matmul",
                case,
                rep(lambda: (lambda i: i / np.maximum(sa[:, None] + sb[None] - i, 1))(na @ nb.T)),
            )
            del na, nb
        try:
            from pycocotools import mask as mask_utils

            enc = lambda t: mask_utils.encode(np.asfortranarray(t.permute(1, 2, 0).numpy().astype(np.uint8)))  # noqa: E731
            ra, rb = enc(a), enc(b)
            report.add(
                "pycocotools iou (RLE in)", case, rep(lambda: mask_utils.iou(ra, rb, [0] * m), max(1, repeats // 2))
            )
        except ImportError:
            print("  pycocotools not installed: skipped", file=sys.stderr)


def main(argv=None):
    args = parse_args(__doc__, argv)
    report = Report("mask_iou", args.device)
    cases = QUICK if args.quick else [(k, s, size) for size in SIZES for k in COUNTS for s in ("KxK", "Kx4")]
    if args.quick and args.device == "cuda":
        cases = cases + [(3000, "KxK", 256)]
    for i, (k, shape, size) in enumerate(cases, 1):
        print(f"[{i}/{len(cases)}] {k} {shape} {size}x{size}", file=sys.stderr, flush=True)
        run_case(report, k, shape, size, args.device, args.repeats)
    report.save(args.out, "overlap", baseline=f"segfast {args.device} (packed in)")
    return report


if __name__ == "__main__":
    main()
