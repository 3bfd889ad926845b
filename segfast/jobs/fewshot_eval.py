"""Few-shot evaluation of a trained LLaFS checkpoint on one fold, by the published protocols:
`episodes` episodes under each of `seeds` seeds (BAM: 1000 x 5), scored at the label's original
size with 255 ignored (segfast.models.llafs.scoring), mean foreground IoU over the fold's classes
per seed, averaged; COCO-20i draws the query's class uniformly (HSNet); PFENet / BAM's
small-object filter is --min-class-pixels 2048. The protocol is printed with the number."""

import torch
from tqdm import tqdm

from segfast.data import collate
from segfast.data.fewshot import FewShotEpisodes
from segfast.metrics import FoldIoU
from segfast.models.llafs.scoring import score_fold
from segfast.registry import Job, register_job
from segfast.train.checkpoint import load_trained
from segfast.train.protocols import for_fold


@torch.no_grad()
def evaluate_fold(
    model,
    root,
    dataset: str = "pascal",
    fold: int = 0,
    shots: int = 1,
    episodes: int = 1000,
    batch_size: int = 8,
    seed: int = 0,
    attributes: str | None = None,
    device="cpu",
    seeds: int = 1,
    tables: str | None = None,
    min_class_pixels: int = 0,
) -> dict:
    """Runs episodes x seeds episodes of the fold's test classes through model.predict (generate,
    parse, rasterize, refine) and returns {"mIoU", "per_class", "parsed", ("runs")}."""
    data = FewShotEpisodes(
        root,
        dataset,
        fold,
        shots,
        "val",
        model.image_size,
        episodes,
        seed,
        attributes=attributes,
        tables=tables,
        seeds=seeds,
        min_class_pixels=min_class_pixels,
        num_vertices=model.options.num_vertices,
    )
    meter, parsed, total = FoldIoU(data.classes, seeds), 0, len(data)
    model.eval()
    for start in tqdm(range(0, total, batch_size), desc=f"{dataset} fold {fold}, {shots}-shot"):
        batch = collate([data[i] for i in range(start, min(total, start + batch_size))])
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        out = model.predict(batch)
        score_fold(meter, out, batch, model.image_size)
        parsed += sum(e is None for e in out["errors"])
    return {**meter.compute(), "parsed": parsed / total}


def arguments(p) -> None:
    p.add_argument("--checkpoint", required=True, help="a checkpoints/step-* directory")
    p.add_argument("--root", required=True, help="PASCAL-5i or COCO-20i root (see segfast.data.fewshot)")
    p.add_argument("--dataset", default="pascal", choices=["pascal", "coco"])
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--shots", type=int, default=1)
    p.add_argument("--episodes", type=int, default=1000, help="episodes per seed")
    p.add_argument("--seeds", type=int, default=5, help="runs under seeds 0..N-1, mIoU averaged (BAM: 5)")
    p.add_argument("--min-class-pixels", type=int, default=0, help="PFENet / BAM's filter: 2048")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--attributes", help="JSON of per-class attributes")
    p.add_argument("--tables", help="region-attribute tables (segfast llafs-tables output)")
    p.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. model.path=/weights/CodeLlama-7b")


def run(args) -> int:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    result = evaluate_fold(
        load_trained(args.checkpoint, device, getattr(args, "overrides", ())),
        args.root,
        args.dataset,
        args.fold,
        args.shots,
        args.episodes,
        args.batch_size,
        attributes=args.attributes,
        device=device,
        seeds=args.seeds,
        tables=args.tables,
        min_class_pixels=args.min_class_pixels,
    )
    for cls, iou in result["per_class"].items():
        print(f"  class {cls:3d}: IoU {iou:.4f}")
    runs = ", ".join(f"{r:.4f}" for r in result.get("runs", []))
    print(
        f"{args.dataset} fold {args.fold}, {args.shots}-shot: mean foreground IoU {result['mIoU']:.4f} over "
        f"{args.episodes} episodes x {args.seeds} seed(s){f' ({runs})' if runs else ''}, small-object filter "
        f"{args.min_class_pixels} px, answers parsed {result['parsed']:.1%}"
    )
    protocol = for_fold(args.dataset, args.fold, args.shots)
    if protocol is not None:
        print(protocol.describe())
        if (args.episodes, args.seeds) == (protocol.data["episodes"], protocol.data["seeds"]):
            print(protocol.compare({"eval/fold/mIoU": result["mIoU"], "eval/samples": args.episodes * args.seeds}))
        else:
            print("  (not the protocol's episodes x seeds: the papers' numbers are not compared)")
    return 0


register_job(Job("llafs-eval", arguments, run, "few-shot mean foreground IoU of an LLaFS checkpoint on one fold"))
