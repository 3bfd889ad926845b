"""Reading the proposals JSON files that `segfast proposals` (segfast.jobs.proposals) writes."""

import json
from pathlib import Path

import torch

from segfast.ops.packing import pack_masks, packed_row_bytes


def load_proposals(path: str | Path, top_k: int | None = None):
    """A proposals JSON -> (packed masks (K, H, 8*ceil(W/64)) uint8, records), largest first."""
    from pycocotools import mask as mask_utils

    data = json.loads(Path(path).read_text())
    records = data["annotations"][:top_k]
    height, width = data["height"], data["width"]
    if not records:
        return torch.zeros(0, height, packed_row_bytes(width), dtype=torch.uint8), records
    rles = [dict(r["segmentation"], counts=r["segmentation"]["counts"].encode()) for r in records]
    dense = torch.from_numpy(mask_utils.decode(rles)).permute(2, 0, 1).bool()
    return pack_masks(dense.contiguous()), records
