"""segfast ops. Each checks its inputs, picks a backend per call (compiled CPU/CUDA, Triton or
the plain-PyTorch reference; SEGFAST_BACKEND forces one) and runs it."""

from segfast.ops.attention import attend_mask_from_blocked, attend_mask_from_logits, masked_attention
from segfast.ops.binarize import binarize_logits
from segfast.ops.ohem import ohem_cross_entropy
from segfast.ops.overlap import mask_area, mask_intersection, mask_iop, mask_iou, mask_nms
from segfast.ops.packing import pack_masks, packed_row_bytes, unpack_masks
from segfast.ops.polar import mask_to_polar_polygons, object_polygons
from segfast.ops.pooling import mask_grid_weights, mask_pool
from segfast.ops.rasterize import rasterize_polygons
from segfast.ops.rle import rle_encode

__all__ = [
    "rasterize_polygons",
    "pack_masks",
    "unpack_masks",
    "packed_row_bytes",
    "mask_intersection",
    "mask_area",
    "mask_iou",
    "mask_iop",
    "mask_nms",
    "mask_pool",
    "mask_grid_weights",
    "ohem_cross_entropy",
    "masked_attention",
    "attend_mask_from_blocked",
    "attend_mask_from_logits",
    "mask_to_polar_polygons",
    "object_polygons",
    "binarize_logits",
    "rle_encode",
]
