"""Packed bit masks: the layout every segfast mask op accepts besides dense bool masks.

Bits run along the width in little bit order (pixel x is bit x % 8 of byte x // 8, as
numpy.packbits(..., bitorder="little"), which on little-endian machines is also bit x % 64 of
64-bit word x // 64); each row is padded with zero bits to a whole number of 64-bit words, so a
row of a W-wide mask takes 8 * ceil(W / 64) bytes (128 for W = 1024). Padding to words lets
kernels load and popcount whole 64-bit words without edge cases.
"""

import torch

from segfast import _extension
from segfast.ops import _reference
from segfast.ops._backend import Backend, choose, compiled_on
from segfast.ops._checks import check_size, check_tensor

packed_row_bytes = _reference.packed_row_bytes


def word_aligned(packed: torch.Tensor) -> torch.Tensor:
    """`packed` contiguous and starting on an 8-byte boundary, copied only when it is not: the
    kernels read packed rows as 64-bit words, and a uint8 view at an odd byte offset (a slice
    of a flat buffer, torch.frombuffer) would be a misaligned access on the GPU."""
    packed = packed.contiguous()
    return packed if packed.data_ptr() % 8 == 0 else packed.clone()


def pack_masks(masks: torch.Tensor) -> torch.Tensor:
    """(..., H, W) bool -> (..., H, 8 * ceil(W / 64)) uint8 packed bits."""
    check_tensor("masks", masks, dtypes=(torch.bool,))
    if masks.dim() < 2:
        raise ValueError(f"masks must have shape (..., H, W), got {tuple(masks.shape)}")
    masks = masks.contiguous()
    return choose("pack_masks", _PACK, masks).run(masks)


def unpack_masks(packed: torch.Tensor, width: int) -> torch.Tensor:
    """(..., H, 8 * ceil(W / 64)) uint8 packed bits -> (..., H, W) bool."""
    check_tensor("packed", packed, dtypes=(torch.uint8,))
    width = check_size("width", width)
    if packed.dim() < 2 or packed.shape[-1] != packed_row_bytes(width):
        raise ValueError(
            f"packed must have shape (..., H, {packed_row_bytes(width)}) for width={width}, got {tuple(packed.shape)}"
        )
    packed = word_aligned(packed)
    return choose("unpack_masks", _UNPACK, packed, width).run(packed, width)


def _pack_compiled(masks):
    return torch.ops.segfast.pack_masks(masks)


def _unpack_compiled(packed, width):
    return torch.ops.segfast.unpack_masks(packed, width)


_PACK = [
    Backend("cuda", compiled_on("cuda"), _pack_compiled),
    Backend("cpu", compiled_on("cpu"), _pack_compiled),
    Backend("reference", lambda *a: None, _reference.pack_masks),
]
_UNPACK = [
    Backend("cuda", compiled_on("cuda"), _unpack_compiled),
    Backend("cpu", compiled_on("cpu"), _unpack_compiled),
    Backend("reference", lambda *a: None, _reference.unpack_masks),
]

if _extension._C is not None:

    @torch.library.register_fake("segfast::pack_masks")
    def _(masks):
        return masks.new_empty((*masks.shape[:-1], packed_row_bytes(masks.shape[-1])), dtype=torch.uint8)

    @torch.library.register_fake("segfast::unpack_masks")
    def _(packed, width):
        return packed.new_empty((*packed.shape[:-1], width), dtype=torch.bool)
