"""Few-shot evaluation of a trained LLaFS checkpoint: mean foreground IoU over a fold's classes."""

import torch
from tqdm import tqdm

from segfast.data import collate
from segfast.data.fewshot import FewShotEpisodes
from segfast.metrics import FoldIoU
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
) -> dict:
    """Runs `episodes` episodes of the fold's test classes through model.predict (generate,
    parse, rasterize, refine) and returns {"mIoU", "per_class", "parsed"}."""
    data = FewShotEpisodes(root, dataset, fold, shots, "val", model.image_size, episodes, seed, attributes=attributes)
    meter, parsed = FoldIoU(data.classes), 0
    model.eval()
    for start in tqdm(range(0, episodes, batch_size), desc=f"{dataset} fold {fold}, {shots}-shot"):
        batch = collate([data[i] for i in range(start, min(episodes, start + batch_size))])
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        out = model.predict(batch)
        meter.update(out["masks"].cpu(), batch["query_mask"].cpu(), batch["class_ids"], batch["query_ignore"].cpu())
        parsed += sum(e is None for e in out["errors"])
    return {**meter.compute(), "parsed": parsed / episodes}


def arguments(p) -> None:
    p.add_argument("--checkpoint", required=True, help="a checkpoints/step-* directory")
    p.add_argument("--root", required=True, help="PASCAL-5i or COCO-20i root (see segfast.data.fewshot)")
    p.add_argument("--dataset", default="pascal", choices=["pascal", "coco"])
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--shots", type=int, default=1)
    p.add_argument("--episodes", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--attributes", help="JSON of per-class region attributes")


def run(args) -> int:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    result = evaluate_fold(
        load_trained(args.checkpoint, device),
        args.root,
        args.dataset,
        args.fold,
        args.shots,
        args.episodes,
        args.batch_size,
        attributes=args.attributes,
        device=device,
    )
    for cls, iou in result["per_class"].items():
        print(f"  class {cls:3d}: IoU {iou:.4f}")
    print(
        f"{args.dataset} fold {args.fold}, {args.shots}-shot: mean foreground IoU {result['mIoU']:.4f} "
        f"(answers parsed {result['parsed']:.1%})"
    )
    protocol = for_fold(args.dataset, args.fold, args.shots)
    if protocol is not None and args.episodes == 1000:
        print(f"{protocol.describe()}\n{protocol.compare({'eval/fold/mIoU': result['mIoU'], 'eval/samples': 1000})}")
    return 0


register_job(Job("llafs-eval", arguments, run, "few-shot mean foreground IoU of an LLaFS checkpoint on one fold"))
