"""COCO-style segmentations -> masks, one way for every dataset reader."""

import numpy as np
import torch

from segfast.ops import rasterize_polygons


def segmentation_mask(segmentation, height: int, width: int) -> torch.Tensor:
    """(height, width) bool mask of one object: a list of polygon parts (COCO's flat
    [x0, y0, x1, y1, ...] or [[x, y], ...] point lists; parts with fewer than 3 vertices are
    skipped), rasterized with segfast's pycocotools rule and unioned; or a COCO RLE dict
    (counts as a list, or compressed str/bytes)."""
    if isinstance(segmentation, dict):
        try:
            from pycocotools import mask as mask_utils
        except ImportError:
            raise ImportError("COCO RLE segmentations need pycocotools: pip install pycocotools") from None
        rle = dict(segmentation)
        if isinstance(rle["counts"], list):
            rle = mask_utils.frPyObjects(rle, height, width)
        elif isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode()
        return torch.from_numpy(mask_utils.decode(rle).astype(bool))
    parts = [torch.as_tensor(np.asarray(p, dtype=np.float64).reshape(-1, 2)) for p in segmentation]
    parts = [p for p in parts if len(p) >= 3]
    if not parts:
        return torch.zeros(height, width, dtype=torch.bool)
    vertices = torch.full((len(parts), max(len(p) for p in parts), 2), float("nan"), dtype=torch.float64)
    for i, p in enumerate(parts):
        vertices[i, : len(p)] = p
    return rasterize_polygons(
        vertices,
        height,
        width,
        lengths=torch.tensor([len(p) for p in parts]),
        groups=torch.zeros(len(parts), dtype=torch.long),
        num_masks=1,
        rule="coco",
    )[0]
