"""Offline everything-mode proposals over an image folder (what LLM-Seg trains from).

    segfast proposals --images DIR --checkpoint sam_vit_h.pth --out DIR [--top-k 50] [--max-side 1024]
    torchrun --nproc-per-node 8 -m segfast proposals ...      # images sharded by rank

As LLM-Seg's prepare_datasets scripts: an image whose longer side exceeds max_side (1024) is
scaled down first (OpenCV INTER_AREA), then SAM's everything mode runs with
SamAutomaticMaskGenerator's defaults. One JSON per image, at the image's relative path with
.json: height and width of the masks (the size SAM ran at), original_height/original_width, the
seconds SAM took, the settings, and the top-k proposals by area (LLM-Seg keeps 50) as
SamAutomaticMaskGenerator records with COCO RLE segmentations. Files are written atomically; a
rerun skips images already done. An image that cannot be read is not fatal: it is warned about,
listed in failed-rank<r>.json in the output folder (with the reason) and tried again by the next
run.
"""

import time
import warnings
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from segfast.frames import shrink_longest_side
from segfast.io import save_json
from segfast.models.sam.build import load_sam
from segfast.models.sam.proposals import ProposalGenerator
from segfast.registry import Job, register_job
from segfast.train.distributed import init_distributed, shutdown

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


class _Images(torch.utils.data.Dataset):
    def __init__(self, paths, max_side: int = 0):
        self.paths, self.max_side = paths, max_side

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        """(path, RGB array SAM runs on or None, original (h, w) or why it could not be read)."""
        from PIL import Image

        try:
            with Image.open(self.paths[i]) as image:
                array = np.asarray(image.convert("RGB"))
        except (OSError, ValueError, Image.DecompressionBombError) as exc:  # unreadable, truncated, not an image
            return self.paths[i], None, f"{type(exc).__name__}: {exc}"
        return self.paths[i], shrink_longest_side(array, self.max_side), array.shape[:2]


def list_images(root: Path) -> list:
    if not root.is_dir():
        raise FileNotFoundError(f"images: {root} is not a directory")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def extract_proposals(
    images: str | Path,
    out: str | Path,
    *,
    model_type: str = "vit_h",
    checkpoint: str | Path | None = None,
    top_k: int = 50,
    max_side: int = 1024,
    device: str = "auto",
    workers: int = 2,
    **settings,
) -> dict:
    """Writes one JSON per image of this rank's shard; returns counts and timing."""
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if max_side < 0:
        raise ValueError(f"max_side must be >= 0 (0 keeps every image's size), got {max_side}")
    images, out = Path(images), Path(out)
    env = init_distributed(device)
    paths = list_images(images)
    if not paths:
        raise FileNotFoundError(f"images: no {'/'.join(sorted(IMAGE_SUFFIXES))} files under {images}")
    targets = {p: out / p.relative_to(images).with_suffix(".json") for p in paths[env.rank :: env.world_size]}
    todo = [p for p, t in targets.items() if not t.exists()]
    generator = ProposalGenerator(load_sam(model_type, checkpoint, env.device), **settings)
    batch = generator.image_batch
    loader = torch.utils.data.DataLoader(
        _Images(todo, max_side), batch_size=batch, num_workers=workers, collate_fn=list
    )
    done, seconds, failed = 0, 0.0, []
    bar = tqdm(total=len(todo), desc=f"proposals rank {env.rank}", unit="img", disable=not env.is_main)
    for batch_items in loader:
        items = []
        for path, array, original in batch_items:
            if array is not None:
                items.append((path, array, original))
            else:
                why = original
                warnings.warn(f"proposals: cannot read {path} ({why}); recorded as failed, going on", stacklevel=2)
                failed.append({"image": str(path.relative_to(images)), "error": why})
        if items:
            if env.device.type == "cuda":
                torch.cuda.synchronize(env.device)
            began = time.perf_counter()
            proposals = generator.generate_batch([array for _, array, _ in items])
            records = [p.top_k_by_area(top_k).records("coco_rle") for p in proposals]
            elapsed = (time.perf_counter() - began) / len(items)
            for (path, array, original), recs in zip(items, records):
                save_json(
                    {
                        "image": str(path.relative_to(images)),
                        "height": array.shape[0],
                        "width": array.shape[1],
                        "original_height": int(original[0]),
                        "original_width": int(original[1]),
                        "seconds": elapsed,
                        "model_type": model_type,
                        "top_k": top_k,
                        "max_side": max_side,
                        "settings": settings,
                        "annotations": recs,
                    },
                    targets[path],
                )
            done += len(items)
            seconds += elapsed * len(items)
            bar.set_postfix(s_per_img=f"{seconds / done:.3f}")
        bar.update(len(batch_items))
    bar.close()
    failures = out / f"failed-rank{env.rank}.json"
    if failed:
        save_json(failed, failures)
    else:
        failures.unlink(missing_ok=True)  # an earlier run's failures were read this time
    shutdown(env)
    return {
        "rank": env.rank,
        "images": len(targets),
        "skipped": len(targets) - len(todo),
        "done": done,
        "failed": failed,
        "failures_file": str(failures) if failed else None,
        "seconds_per_image": seconds / done if done else None,
    }


def arguments(p) -> None:
    p.add_argument("--images", required=True, help="folder of images (searched recursively)")
    p.add_argument("--out", required=True, help="one JSON per image is written here")
    p.add_argument("--checkpoint", help="SAM checkpoint (e.g. sam_vit_h_4b8939.pth); omitted = random weights")
    p.add_argument("--model-type", default="vit_h", help="vit_h, vit_l, vit_b or tiny")
    p.add_argument("--top-k", type=int, default=50, help="keep the k largest proposals per image (LLM-Seg: 50)")
    p.add_argument(
        "--max-side", type=int, default=1024, help="scale larger images down to this longer side first (0: never)"
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu"])
    p.add_argument("--workers", type=int, default=2, help="image-decoding worker processes")
    p.add_argument("--points-per-side", type=int, default=32)
    p.add_argument("--points-per-batch", type=int, default=64)
    p.add_argument("--pred-iou-thresh", type=float, default=0.88)
    p.add_argument("--stability-score-thresh", type=float, default=0.95)
    p.add_argument("--box-nms-thresh", type=float, default=0.7)
    p.add_argument("--crop-n-layers", type=int, default=0)
    p.add_argument("--min-mask-region-area", type=int, default=0)
    p.add_argument("--image-batch", type=int, default=1, help="images per image-encoder call")


def run(args) -> int:
    settings = dict(
        points_per_side=args.points_per_side,
        points_per_batch=args.points_per_batch,
        pred_iou_thresh=args.pred_iou_thresh,
        stability_score_thresh=args.stability_score_thresh,
        box_nms_thresh=args.box_nms_thresh,
        crop_n_layers=args.crop_n_layers,
        min_mask_region_area=args.min_mask_region_area,
        image_batch=args.image_batch,
    )
    result = extract_proposals(
        args.images,
        args.out,
        model_type=args.model_type,
        checkpoint=args.checkpoint,
        top_k=args.top_k,
        max_side=args.max_side,
        device=args.device,
        workers=args.workers,
        **settings,
    )
    per_image = result["seconds_per_image"]
    print(
        f"rank {result['rank']}: {result['done']} images done, {result['skipped']} already there, "
        f"{len(result['failed'])} failed" + (f", {per_image:.3f} s/image" if per_image is not None else "")
    )
    if result["failed"]:
        shown = "\n".join(f"  {f['image']}: {f['error']}" for f in result["failed"][:10])
        more = len(result["failed"]) - 10
        print(
            f"rank {result['rank']}: images that could not be read (all in {result['failures_file']}; the next "
            f"run tries them again):\n{shown}" + (f"\n  ... and {more} more" if more > 0 else "")
        )
    return 0


register_job(
    Job(
        "proposals",
        arguments,
        run,
        "SAM everything-mode proposals for an image folder (resumable; torchrun shards by rank)",
    )
)
