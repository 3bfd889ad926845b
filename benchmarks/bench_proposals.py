"""SAM everything mode: segfast.models.sam.ProposalGenerator against segment-anything's
SamAutomaticMaskGenerator, same model, same settings, same images; ms per image, images/s and
peak GPU memory. Plus the LLM-Seg mask-selection side's training step (mask pooling, fusion,
heads, losses, ground-truth IoU/IoP) with segfast's kernels and with the plain-PyTorch
references (SEGFAST_BACKEND=reference).

SAM weights are random (nothing is downloaded; timing only). With random weights few masks pass
the default filters, so the post-processing load is lighter than with a trained SAM; the
"filters off" case post-processes every mask (3 per point) and bounds it from above.

    python -m benchmarks.bench_proposals [--quick] [--device cpu|cuda] [--out DIR]
"""

import os
import sys

import numpy as np
import torch

from benchmarks.harness import Report, measure, parse_args

GPU_CHECK_SECONDS = 150  # scripts/gpu_check.sh's limit for --quick


def images(n: int, height: int, width: int, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        im = np.empty((height, width, 3), np.uint8)
        im[:] = rng.integers(0, 256, 3)
        for _ in range(12):
            y, x = rng.integers(0, height - 16), rng.integers(0, width - 16)
            im[y : y + rng.integers(16, height // 2), x : x + rng.integers(16, width // 2)] = rng.integers(0, 256, 3)
        out.append(im)
    return out


def peak_mib(device, fn):
    """Peak GPU memory of one fn() in MiB; off the GPU "" without running it."""
    if device != "cuda":
        return ""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return round(torch.cuda.max_memory_allocated() / 2**20)


def bench_generators(report, device, quick, repeats):
    from segment_anything import SamAutomaticMaskGenerator

    from segfast.models.sam import ProposalGenerator, load_sam

    models = ["tiny"] if device == "cpu" else ["vit_b", "vit_h"]
    settings = {"default": {}, "filters off": dict(pred_iou_thresh=0.0, stability_score_thresh=0.0)}
    if device == "cpu":
        settings = {k: dict(v, points_per_side=16) for k, v in settings.items()}
    ims = images(2 if quick else 4, 768, 1024) if device == "cuda" else images(1 if quick else 2, 240, 320)
    for model_type in models:
        sam = load_sam(model_type, None, device)
        for name, kw in settings.items():
            if quick and name != "default" and (model_type == "vit_h" or device == "cpu"):
                continue  # keeps the GPU check in its budget (SAM's unfiltered CPU path takes ~30 s an image)
            case = f"{model_type} {name} {ims[0].shape[1]}x{ims[0].shape[0]}"
            contenders = {
                "sam-amg": SamAutomaticMaskGenerator(sam, output_mode="coco_rle", **kw),
                "segfast": ProposalGenerator(sam, output_mode="coco_rle", **kw),
                "segfast points_per_batch=256": ProposalGenerator(
                    sam, output_mode="coco_rle", points_per_batch=256, **kw
                ),
            }
            counts = {}
            for label, gen in contenders.items():

                def run(gen=gen):
                    return [gen.generate(im) for im in ims]

                counts[label] = sum(len(r) for r in run())
                memory = peak_mib(device, run)
                ms = measure(run, device, repeats=repeats, warmup=0) / len(ims)
                report.add(
                    label, case, ms, note=f"{counts[label]} masks", images_per_s=round(1e3 / ms, 3), peak_mib=memory
                )
            if len(set(counts.values())) != 1:
                print(f"note: mask counts differ in {case}: {counts}", file=sys.stderr)
        del sam
        if device == "cuda":
            torch.cuda.empty_cache()


def bench_selection_step(report, device, quick, repeats):
    from segfast.data.referring import proposal_targets
    from segfast.models.llmseg.fusion import Fusion
    from segfast.models.llmseg.heads import iop_loss, iou_alignment_loss, mlp, similarity
    from segfast.ops import mask_pool, pack_masks

    size, k, batch = (1024, 50, 4) if device == "cuda" else (224, 32, 2)
    gen = torch.Generator().manual_seed(0)
    boxes = torch.randint(0, size // 2, (batch, k, 2), generator=gen)
    ys, xs = torch.arange(size)[:, None], torch.arange(size)[None]
    dense = [(ys >= y) & (ys < y + size // 3) & (xs >= x) & (xs < x + size // 4) for y, x in boxes.view(-1, 2).tolist()]
    proposals = pack_masks(torch.stack(dense)).view(batch, k, size, -1).to(device)
    gt = [dense[b * k] | dense[b * k + 1] for b in range(batch)]
    grid = 64 if device == "cuda" else 16
    feats = torch.randn(batch, 1024, grid, grid, device=device)
    project = torch.nn.Conv2d(1024, 256, 1).to(device)
    fusion, iop_head = Fusion().to(device), mlp([256, 64, 1], True).to(device)
    emb_head = mlp([256, 2048, 256]).to(device)
    seg = torch.randn(batch, 256, device=device, requires_grad=True)
    valid = torch.ones(batch, k, dtype=torch.bool, device=device)

    def step():
        pooled = [
            mask_pool(project(feats[b : b + 1]), proposals[b : b + 1], weights="bilinear", grid=(256, 256), width=size)
            for b in range(batch)
        ]
        emb = torch.cat(pooled)
        fused = fusion(emb, seg, valid)
        targets = [proposal_targets(proposals[b], size, gt[b][None].to(device)) for b in range(batch)]
        gt_iou, gt_iop = (torch.cat([t[i] for t in targets]) for i in (0, 1))
        loss = (
            iou_alignment_loss(similarity(emb_head(fused), seg), gt_iou, valid).mean()
            + 50 * iop_loss(iop_head(fused)[..., 0], gt_iop, valid).mean()
        )
        loss.backward()
        return loss

    case = f"B={batch} K={k} {size}px"
    for label, backend in (("segfast", ""), ("plain torch (reference)", "reference")):
        old = os.environ.get("SEGFAST_BACKEND")
        os.environ["SEGFAST_BACKEND"] = backend
        try:
            memory = peak_mib(device, step)
            report.add(label, case, measure(step, device, repeats=repeats), peak_mib=memory)
        finally:
            os.environ.pop("SEGFAST_BACKEND") if old is None else os.environ.update(SEGFAST_BACKEND=old)


def main(argv=None):
    args = parse_args(__doc__, argv)
    report = Report("sam everything mode", args.device)
    bench_generators(
        report, args.device, args.quick, 1 if args.quick and args.device == "cpu" else min(args.repeats, 3)
    )
    report.save(args.out, "proposals", baseline="sam-amg")
    step = Report("llm-seg selection step", args.device)
    bench_selection_step(step, args.device, args.quick, 2 if args.quick and args.device == "cpu" else args.repeats)
    step.save(args.out, "llmseg_step", baseline="plain torch (reference)")


if __name__ == "__main__":
    main()
