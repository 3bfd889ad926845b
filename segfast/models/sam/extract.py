"""Offline everything-mode proposals over an image folder (what LLM-Seg trains from).

    segfast proposals --images DIR --checkpoint sam_vit_h.pth --out DIR [--top-k 100]
    torchrun --nproc-per-node 8 -m segfast proposals ...      # images sharded by rank

One JSON per image, at the image's relative path with .json: the image size, the seconds SAM
took, the settings, and the top-k proposals by area as SamAutomaticMaskGenerator records with
COCO RLE segmentations. Files are written atomically; a rerun skips images already done. An
image that cannot be read is not fatal: it is warned about, listed in failed-rank<r>.json in
the output folder (with the reason) and tried again by the next run.
"""

import time
import warnings
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from segfast.io import save_json

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


class _Images(torch.utils.data.Dataset):
    def __init__(self, paths):
        self.paths = paths

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        """(path, RGB array or None, why it could not be read or None)."""
        from PIL import Image

        try:
            with Image.open(self.paths[i]) as image:
                return self.paths[i], np.asarray(image.convert("RGB")), None
        except (OSError, ValueError, Image.DecompressionBombError) as exc:  # unreadable, truncated, not an image
            return self.paths[i], None, f"{type(exc).__name__}: {exc}"


def list_images(root: Path) -> list:
    if not root.is_dir():
        raise FileNotFoundError(f"images: {root} is not a directory")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def extract_proposals(images: str | Path, out: str | Path, *, model_type: str = "vit_h",
                      checkpoint: str | Path | None = None, top_k: int = 100, device: str = "auto",
                      workers: int = 2, **settings) -> dict:
    """Writes one JSON per image of this rank's shard; returns counts and timing."""
    from segfast.models.sam.build import load_sam
    from segfast.models.sam.proposals import ProposalGenerator
    from segfast.train.distributed import init_distributed, shutdown

    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    images, out = Path(images), Path(out)
    env = init_distributed(device)
    paths = list_images(images)
    if not paths:
        raise FileNotFoundError(f"images: no {'/'.join(sorted(IMAGE_SUFFIXES))} files under {images}")
    targets = {p: out / p.relative_to(images).with_suffix(".json") for p in paths[env.rank::env.world_size]}
    todo = [p for p, t in targets.items() if not t.exists()]
    generator = ProposalGenerator(load_sam(model_type, checkpoint, env.device), **settings)
    batch = generator.image_batch
    loader = torch.utils.data.DataLoader(_Images(todo), batch_size=batch, num_workers=workers, collate_fn=list)
    done, seconds, failed = 0, 0.0, []
    bar = tqdm(total=len(todo), desc=f"proposals rank {env.rank}", unit="img", disable=not env.is_main)
    for batch_items in loader:
        items = []
        for path, array, why in batch_items:
            if why is None:
                items.append((path, array))
            else:
                warnings.warn(f"proposals: cannot read {path} ({why}); recorded as failed, going on", stacklevel=2)
                failed.append({"image": str(path.relative_to(images)), "error": why})
        if items:
            if env.device.type == "cuda":
                torch.cuda.synchronize(env.device)
            began = time.perf_counter()
            proposals = generator.generate_batch([array for _, array in items])
            records = [p.top_k_by_area(top_k).records("coco_rle") for p in proposals]
            elapsed = (time.perf_counter() - began) / len(items)
            for (path, array), recs in zip(items, records):
                save_json({"image": str(path.relative_to(images)), "height": array.shape[0], "width": array.shape[1],
                           "seconds": elapsed, "model_type": model_type, "top_k": top_k, "settings": settings,
                           "annotations": recs}, targets[path])
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
    return {"rank": env.rank, "images": len(targets), "skipped": len(targets) - len(todo), "done": done,
            "failed": failed, "failures_file": str(failures) if failed else None,
            "seconds_per_image": seconds / done if done else None}


def load_proposals(path: str | Path, top_k: int | None = None):
    """A proposals JSON -> (packed masks (K, H, 8*ceil(W/64)) uint8, records), largest first."""
    import json

    from pycocotools import mask as mask_utils

    from segfast.ops.packing import pack_masks

    data = json.loads(Path(path).read_text())
    records = data["annotations"][:top_k]
    height, width = data["height"], data["width"]
    if not records:
        return torch.zeros(0, height, 8 * -(-width // 64), dtype=torch.uint8), records
    rles = [dict(r["segmentation"], counts=r["segmentation"]["counts"].encode()) for r in records]
    dense = torch.from_numpy(mask_utils.decode(rles)).permute(2, 0, 1).bool()
    return pack_masks(dense.contiguous()), records
