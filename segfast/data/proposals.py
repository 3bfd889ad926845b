"""Reading the proposals JSON files that `segfast proposals` (segfast.jobs.proposals) writes:
{"height", "width" (the size SAM ran at), "annotations": SamAutomaticMaskGenerator records with
COCO RLE segmentations, ...}."""

import json
from pathlib import Path

import torch

from segfast.ops.packing import pack_masks, packed_row_bytes


def load_proposals(path: str | Path, top_k: int | None = None):
    """A proposals JSON -> (packed masks (K, H, 8*ceil(W/64)) uint8, records, (H, W)): the top_k
    largest by area, largest first (ties keep the file's order), as LLM-Seg's SAM_Mask_Reader
    sorts and cuts them."""
    from pycocotools import mask as mask_utils

    data = json.loads(Path(path).read_text())
    height, width = int(data["height"]), int(data["width"])
    records = sorted(data["annotations"], key=lambda r: -r["area"])[:top_k]
    if not records:
        return torch.zeros(0, height, packed_row_bytes(width), dtype=torch.uint8), records, (height, width)
    rles = [dict(r["segmentation"], counts=r["segmentation"]["counts"].encode()) for r in records]
    dense = torch.from_numpy(mask_utils.decode(rles)).permute(2, 0, 1).bool()
    if tuple(dense.shape[1:]) != (height, width):
        raise ValueError(f"{path}: masks are {tuple(dense.shape[1:])}, the file says {height}x{width}")
    return pack_masks(dense.contiguous()), records, (height, width)
