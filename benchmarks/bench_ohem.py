"""OHEM cross-entropy: segfast's fused Triton path against mmseg's OHEMPixelSampler as it is
written (softmax, gather, full sort, then cross-entropy with a weight map), forward and
forward+backward, with peak GPU memory and, on GPU, the floor of reading the logits twice and
writing the gradient once.

Selection alone (the kept-pixel mask from per-pixel losses or probabilities, thresh 0.7 and
none): segfast's fused radix select (Triton histogram kernels, no host sync) against the eager
radix select it replaced (four torch passes over int64 keys) and mmseg's way, a full sort (or
topk / kthvalue, its cheaper cousins).

Each row gives its fraction of the copy roofline from the minimum bytes: the logits read once
(twice with the backward, plus the gradient written) and the int64 target; for selection the
float32 values and the valid mask read and the kept mask written.

Without a GPU the Triton kernels run under the interpreter, on small cases (a smoke test of the
code paths, not a speed measurement); segfast's reference serves the op there otherwise.

    python -m benchmarks.bench_ohem [--quick] [--device cpu|cuda] [--out DIR]
"""

import sys

import torch
import torch.nn.functional as F

from benchmarks.harness import Report, interpret_triton_on_cpu, measure, parse_args, peaks, with_env
from segfast.ops import ohem_cross_entropy
from segfast.ops.ohem import select_kept, select_kept_fused

CASES = {"cityscapes": (8, 19, 512, 1024), "ade20k": (8, 150, 512, 512), "llafs": (16, 2, 384, 384)}
CPU_CASES = {"cityscapes (small)": (2, 19, 32, 48), "llafs (small)": (2, 2, 48, 48)}
THRESH, MIN_KEPT = 0.7, 100000
CPU_MIN_KEPT = 500
OURS = {"cuda": "segfast ohem_cross_entropy", "cpu": "segfast ohem_cross_entropy (Triton interpreter)"}
BASELINE = "mmseg OHEMPixelSampler (sort)"
SELECTION_BASELINE = "mmseg: sort"


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


def sort_selection(values, valid, thresh, budget, how):
    """mmseg's selection by sort (as written there), or by topk / kthvalue."""
    kept = torch.zeros_like(valid)
    idx = valid.nonzero()[:, 0]
    chosen = values[idx]
    if thresh is not None:
        k = min(budget, chosen.numel() - 1)
        if how == "sort":
            cutoff = chosen.sort().values[k]
        else:
            cutoff = chosen.kthvalue(k + 1).values
        kept[idx] = chosen < torch.clamp(cutoff, min=thresh)
    elif how == "sort":
        kept[idx[chosen.sort(descending=True).indices[:budget]]] = True
    else:
        kept[idx[chosen.topk(min(budget, chosen.numel())).indices]] = True
    return kept


def run_case(report, name, shape, device, repeats, min_kept):
    n, c, h, w = shape
    case = f"{name} {n}x{c}x{h}x{w}"
    roof = peaks(device)
    g = torch.Generator(device=device).manual_seed(0)
    logits = torch.randn(shape, device=device, generator=g).requires_grad_()
    target = torch.randint(0, c, (n, h, w), device=device, generator=g)
    target[torch.rand(n, h, w, device=device, generator=g) < 0.1] = 255
    contenders = {
        BASELINE: lambda: mmseg_ohem(logits, target, min_kept=min_kept),
        OURS[device]: lambda: ohem_cross_entropy(logits, target, thresh=THRESH, min_kept=min_kept),
    }
    if device == "cpu":
        contenders["segfast ohem_cross_entropy (reference)"] = with_env(contenders[OURS[device]], TRITON_INTERPRET="0")
    if device == "cuda":
        data = logits.detach()
        read = measure(lambda: data.sum(), device, repeats)
        grad = torch.empty_like(data)
        write = measure(lambda: grad.zero_(), device, repeats)
        report.add("floor: read logits x2 + write grad", case, 2 * read + write)
    for backward in (False, True):
        nbytes = logits.numel() * logits.element_size() * (3 if backward else 1) + target.numel() * 8
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
            report.add_with_roofline(
                roof, f"{label} {'fwd+bwd' if backward else 'fwd'}", case, ms, nbytes=nbytes, note=note, **extra
            )


def run_selection(report, name, shape, device, repeats, min_kept):
    """The kept mask alone, from per-pixel values as the fused forward leaves them."""
    n, _, h, w = shape
    pixels = n * h * w
    g = torch.Generator(device=device).manual_seed(1)
    prob = torch.rand(pixels, device=device, generator=g)
    nll = -prob.log()
    valid = torch.rand(pixels, device=device, generator=g) >= 0.1
    budget = min_kept * n
    roof = peaks(device)
    nbytes = pixels * (4 + 1 + 1)  # values and valid read, kept written
    for thresh in (THRESH, None):
        case = f"select {name} {pixels} px thresh={thresh}"
        values = nll if thresh is None else prob
        contenders = {
            "fused radix select (Triton)": lambda: select_kept_fused(nll, prob, valid, thresh, budget),
            "eager radix select (torch)": lambda: select_kept(nll, prob, valid, thresh, budget),
            SELECTION_BASELINE: lambda: sort_selection(values, valid, thresh, budget, "sort"),
            f"{'kthvalue' if thresh is not None else 'topk'}": lambda: sort_selection(
                values, valid, thresh, budget, "top"
            ),
        }
        for label, fn in contenders.items():
            report.add_with_roofline(roof, label, case, measure(fn, device, repeats), nbytes=nbytes)


def main(argv=None):
    args = parse_args(__doc__, argv)
    interpret_triton_on_cpu(args.device)
    report = Report("ohem_cross_entropy", args.device)
    if args.device == "cuda":
        cases = {k: CASES[k] for k in (["cityscapes", "llafs"] if args.quick else CASES)}
        min_kept = MIN_KEPT
    else:
        cases, min_kept = CPU_CASES, CPU_MIN_KEPT
    for i, (name, shape) in enumerate(cases.items(), 1):
        print(f"[{i}/{len(cases)}] {name}", file=sys.stderr, flush=True)
        run_case(report, name, shape, args.device, args.repeats, min_kept)
        run_selection(report, name, shape, args.device, args.repeats, min_kept)
    report.save(args.out, "ohem", baseline=(f"{BASELINE} fwd+bwd", SELECTION_BASELINE))
    return report


if __name__ == "__main__":
    main()
