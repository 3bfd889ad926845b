"""OHEM cross-entropy: segfast's fused Triton path against mmseg's OHEMPixelSampler as it is
written (softmax, gather, full sort, then cross-entropy with a weight map), forward and
forward+backward, with peak GPU memory and, on GPU, the floor of reading the logits twice and
writing the gradient once.

Without a GPU the fused kernels do not run (Triton needs one); the CPU run measures the mmseg
peer and segfast's CPU fallback (its float64 reference) on the small case only.

    python -m benchmarks.bench_ohem [--quick] [--device cpu|cuda] [--out DIR]
"""

import sys

import torch
import torch.nn.functional as F

from benchmarks.harness import Report, measure, parse_args
from segfast.ops import ohem_cross_entropy

CASES = {"cityscapes": (8, 19, 512, 1024), "ade20k": (8, 150, 512, 512), "llafs": (16, 2, 384, 384)}
THRESH, MIN_KEPT = 0.7, 100000


def mmseg_ohem(logits, target, thresh=THRESH, min_kept=MIN_KEPT, ignore_index=255):
    """mmseg OHEMPixelSampler.sample + CrossEntropyLoss(weight=seg_weight), float32."""
    with torch.no_grad():
        batch_kept = min_kept * target.size(0)
        valid = target != ignore_index
        weight = logits.new_zeros(target.size(), dtype=torch.float32)
        valid_weight = weight[valid]
        prob = F.softmax(logits.float(), dim=1)
        tmp = target.clone().unsqueeze(1)
        tmp[tmp == ignore_index] = 0
        prob = prob.gather(1, tmp).squeeze(1)
        sort_prob, _ = prob[valid].sort()
        min_threshold = sort_prob[min(batch_kept, sort_prob.numel() - 1)] if sort_prob.numel() else 0.0
        threshold = max(min_threshold, thresh)
        valid_weight[prob[valid] < threshold] = 1.0
        weight[valid] = valid_weight
    loss = F.cross_entropy(logits, target, reduction="none", ignore_index=ignore_index)
    return (loss * weight).mean()


def run_case(report, name, shape, device, repeats):
    n, c, h, w = shape
    case = f"{name} {n}x{c}x{h}x{w}"
    g = torch.Generator(device=device).manual_seed(0)
    logits = torch.randn(shape, device=device, generator=g).requires_grad_()
    target = torch.randint(0, c, (n, h, w), device=device, generator=g)
    target[torch.rand(n, h, w, device=device, generator=g) < 0.1] = 255
    ours = "segfast ohem_cross_entropy" + ("" if device == "cuda" else " (CPU: reference)")
    contenders = {"mmseg OHEMPixelSampler (sort)": lambda: mmseg_ohem(logits, target),
                  ours: lambda: ohem_cross_entropy(logits, target, thresh=THRESH,
                                                                           min_kept=MIN_KEPT)}
    if device == "cuda":
        data = logits.detach()
        read = measure(lambda: data.sum(), device, repeats)
        grad = torch.empty_like(data)
        write = measure(lambda: grad.zero_(), device, repeats)
        report.add("floor: read logits x2 + write grad", case, 2 * read + write)
    for backward in (False, True):
        for label, fn in contenders.items():
            def run():
                loss = fn()
                if backward:
                    loss.backward()
                return loss

            if device == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated() if device == "cuda" else 0
            ms = measure(run, device, repeats)
            logits.grad = None
            extra, note = {}, ""
            if device == "cuda":
                peak = torch.cuda.max_memory_allocated() - base
                extra["peak_mib"] = f"{peak / 2**20:.0f}"
                note = f"peak +{peak / 2**20:.0f} MiB"
            report.add(f"{label} {'fwd+bwd' if backward else 'fwd'}", case, ms, note, **extra)


def main(argv=None):
    args = parse_args(__doc__, argv)
    report = Report("ohem_cross_entropy", args.device)
    names = list(CASES) if args.device == "cuda" and not args.quick else ["llafs"]
    if args.device == "cuda" and args.quick:
        names = ["cityscapes", "llafs"]
    for i, name in enumerate(names, 1):
        print(f"[{i}/{len(names)}] {name}", file=sys.stderr, flush=True)
        run_case(report, name, CASES[name], args.device, args.repeats)
    report.save(args.out, "ohem", baseline="mmseg OHEMPixelSampler (sort) fwd+bwd")
    return report


if __name__ == "__main__":
    main()
