"""COCO run-length encoding of packed masks, without unpacking them.

Output matches pycocotools: uncompressed RLE {"size": [H, W], "counts": [...]} with runs down
the columns starting with zeros (segment-anything's mask_to_rle_pytorch), or compressed RLE
{"size", "counts": str} (pycocotools.mask.encode / frPyObjects, decoded to str for JSON).
The kernel runs on the CPU for every mask in parallel; CUDA inputs are copied over as bits.
"""

import torch

from segfast import _extension
from segfast.ops import _reference
from segfast.ops._backend import Backend, choose, compiled_on
from segfast.ops._checks import check_size
from segfast.ops.overlap import as_packed
from segfast.ops.packing import packed_row_bytes, unpack_masks, word_aligned


def rle_encode(masks: torch.Tensor, width: int | None = None, *, compress: bool = True) -> list:
    """Dense bool (N, H, W) or packed (N, H, 8k) masks -> list of COCO RLE dicts. Packed input
    needs `width` (the padded rows do not say it)."""
    if masks.dtype == torch.bool:
        width = masks.shape[-1] if width is None else width
        if width != masks.shape[-1]:
            raise ValueError(f"width={width} disagrees with the dense masks' width {masks.shape[-1]}")
    elif width is None:
        raise ValueError("width is required with packed masks")
    width = check_size("width", width)
    packed = as_packed("masks", masks)
    height = packed.shape[1]
    if packed.shape[-1] != packed_row_bytes(width):
        raise ValueError(f"packed masks of shape {tuple(packed.shape)} do not have width {width}")
    packed = word_aligned(packed.cpu())
    data, offsets = choose("rle_encode", _BACKENDS, packed, height, width, compress).run(
        packed, height, width, compress
    )
    size = [height, width]
    offsets = offsets.tolist()
    if compress:
        raw = data.numpy().tobytes()
        return [{"size": size, "counts": raw[a:b].decode("ascii")} for a, b in zip(offsets[:-1], offsets[1:])]
    counts = data.tolist()
    return [{"size": size, "counts": counts[a:b]} for a, b in zip(offsets[:-1], offsets[1:])]


def _compiled(packed, height, width, compress):
    return torch.ops.segfast.rle_encode(packed, height, width, compress)


def _reference_encode(packed, height, width, compress):
    """Plain PyTorch (+ pycocotools for the string form), in the compiled op's flat layout."""
    masks = unpack_masks(packed, width)
    runs = [_reference.rle_counts(m) for m in masks]
    if compress:
        from pycocotools import mask as mask_utils

        runs = [
            list(mask_utils.frPyObjects({"size": [height, width], "counts": r}, height, width)["counts"]) for r in runs
        ]
    flat = [c for r in runs for c in r]
    offsets = torch.tensor([0] + [len(r) for r in runs]).cumsum(0)
    return torch.tensor(flat, dtype=torch.uint8 if compress else torch.int64), offsets


_BACKENDS = [Backend("cpu", compiled_on("cpu"), _compiled), Backend("reference", lambda *a: None, _reference_encode)]

if _extension._C is not None:

    @torch.library.register_fake("segfast::rle_encode")
    def _(packed, height, width, compress):
        n = packed.shape[0]
        total = torch.library.get_ctx().new_dynamic_size()
        return packed.new_empty((total,), dtype=torch.uint8 if compress else torch.int64), packed.new_empty(
            (n + 1,), dtype=torch.int64
        )
