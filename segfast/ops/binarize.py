"""Mask logits -> packed masks, stability scores, areas and boxes in one pass.

This is the post-processing of segment-anything's everything mode (SamAutomaticMaskGenerator)
fused: calculate_stability_score, `logits > mask_threshold`, batched_mask_to_box and
uncrop_masks each read or write full-resolution masks, several times; one kernel reads each
logit once and writes only packed bits (1/32 of the float traffic) and per-mask totals.
Numbers equal segment-anything's: comparisons in float32 against the thresholds, stability as
int32 counts divided in float32, boxes XYXY inclusive with (0, 0, 0, 0) for an empty mask.
"""

from typing import NamedTuple

import torch

from segfast import _extension
from segfast.ops import _reference
from segfast.ops._backend import Backend, choose, compiled_on
from segfast.ops._checks import check_size, check_tensor
from segfast.ops.packing import packed_row_bytes


class Binarized(NamedTuple):
    packed: torch.Tensor  # (N, height, 8 * ceil(width / 64)) uint8: logit > threshold
    area: torch.Tensor  # (N,) int64
    stability: torch.Tensor  # (N,) float32: #(> threshold + offset) / #(> threshold - offset)
    boxes: torch.Tensor  # (N, 4) int64 XYXY inclusive, canvas coordinates; zeros when empty


def binarize_logits(
    logits: torch.Tensor,
    threshold: float = 0.0,
    *,
    stability_offset: float = 1.0,
    canvas: tuple | None = None,
    origin: tuple = (0, 0),
) -> Binarized:
    """Threshold (N, h, w) float32 mask logits into packed masks on a (height, width) canvas.

    canvas: the output size (default (h, w)); origin: (top, left) of the logit maps on it, so a
    crop's masks land at their place in the full image (pixels off the crop are 0).
    """
    check_tensor("logits", logits, ndim=3, dtypes=(torch.float32,))
    height, width = canvas if canvas is not None else logits.shape[1:]
    height, width = check_size("canvas[0]", height), check_size("canvas[1]", width)
    top, left = check_size("origin[0]", origin[0]), check_size("origin[1]", origin[1])
    if top + logits.shape[1] > height or left + logits.shape[2] > width:
        raise ValueError(
            f"logits of size {tuple(logits.shape[1:])} at origin {(top, left)} do not fit the canvas {(height, width)}"
        )
    # The sums are computed in Python floats, as segment-anything does, then compared in float32.
    hi, lo, mid = threshold + stability_offset, threshold - stability_offset, float(threshold)
    args = (logits.contiguous(), hi, lo, mid, height, width, top, left)
    packed, counts, boxes = choose("binarize_logits", _BACKENDS, *args).run(*args)
    return Binarized(packed, counts[:, 2].long(), counts[:, 0] / counts[:, 1], boxes)


def _compiled(*args):
    return torch.ops.segfast.binarize_logits(*args)


_BACKENDS = [
    Backend("cuda", compiled_on("cuda"), _compiled),
    Backend("cpu", compiled_on("cpu"), _compiled),
    Backend("reference", lambda *a: None, _reference.binarize_logits),
]

if _extension._C is not None:

    @torch.library.register_fake("segfast::binarize_logits")
    def _(logits, hi, lo, mid, height, width, top, left):
        n = logits.shape[0]
        return (
            logits.new_empty((n, height, packed_row_bytes(width)), dtype=torch.uint8),
            logits.new_empty((n, 3), dtype=torch.int32),
            logits.new_empty((n, 4), dtype=torch.int64),
        )
