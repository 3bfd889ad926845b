"""Mask pooling: segfast.ops.mask_pool and the mask-to-grid weights behind it.

pooled[b, k] = Σ_cells w_bk(cell) f_b(cell) / (Σ_cells w_bk(cell) + eps), where the weights
w_bk = Ry M_bk Rx^T come from the full-resolution mask M_bk through separable resampling
matrices Ry (h x H), Rx (w x W):

  weights="area"      exact area resampling: the fraction of each feature cell the mask covers
                      (equals F.interpolate(mode="area") / avg pooling when H, W are multiples
                      of h, w).
  weights="bilinear"  F.interpolate(mask, (h, w), mode="bilinear", antialias=True,
                      align_corners=False): PyTorch's antialiased (triangle-filter) resize.
  weights="bilinear", grid=(gh, gw)
                      LLM-Seg's path: masks resized to the grid with antialiased bilinear
                      interpolation, features upsampled to it with bilinear interpolation,
                      pooled there. Bilinear upsampling is linear, so this equals pooling the
                      original features with Ry = U_y^T A_y (and the same for x) — no
                      upsampled features are ever built.

The weights are computed from packed bits by a compiled kernel (a band of each matrix row at a
time; popcounts for uniform bands), so no dense float mask is materialised: the only
intermediate is (B, K, h, w) float32. The weighted sum is one batched matrix product (tensor
cores on GPU), and autograd differentiates it w.r.t. the features.
"""

from functools import lru_cache

import torch

from segfast import _extension
from segfast.ops import _reference
from segfast.ops._backend import Backend, choose, compiled_on
from segfast.ops._checks import check_choice, check_size, check_tensor
from segfast.ops.packing import pack_masks, packed_row_bytes, word_aligned

WEIGHTS = ("area", "bilinear")


@lru_cache(maxsize=64)
def resampling_matrix(n_in: int, n_out: int, weights: str, grid: int | None = None) -> torch.Tensor:
    """(n_out, n_in) float64 matrix taking one mask axis of n_in pixels to n_out feature cells."""
    if weights == "area":
        return _reference.area_matrix(n_in, n_out)
    if grid is None:
        return _reference.resize_matrix(n_in, n_out, antialias=True)
    upsample = _reference.resize_matrix(n_out, grid, antialias=False)  # (grid, n_out)
    return upsample.T @ _reference.resize_matrix(n_in, grid, antialias=True)


@lru_cache(maxsize=64)
def band_table(n_in: int, n_out: int, weights: str, grid: int | None = None) -> tuple:
    """Banded form of a resampling matrix, as the compiled kernels read it: per row the first
    non-zero column and the band's length (start, count: int64 (n_out,)), the band's weights
    zero-padded to the longest band (float32 (n_out, L)), and whether a band's weights are all
    equal (uint8 (n_out,); such a band is summed with a popcount)."""
    r = resampling_matrix(n_in, n_out, weights, grid)
    nonzero = r != 0
    idx = torch.arange(n_in)
    has = nonzero.any(1)
    first = torch.where(has, torch.where(nonzero, idx, n_in).min(1).values, 0)
    last = torch.where(nonzero, idx, -1).max(1).values
    count = torch.where(has, last - first + 1, 0)
    length = max(1, int(count.max()))
    inside = torch.arange(length) < count[:, None]
    cols = (first[:, None] + torch.arange(length)).clamp(max=n_in - 1)
    band = torch.where(inside, torch.gather(r, 1, cols), 0.0).float()
    uniform = torch.where(inside, band == band[:, :1], True).all(1)
    return first, count, band.contiguous(), uniform.to(torch.uint8)


@lru_cache(maxsize=64)
def _bands_on(n_in, n_out, weights, grid, device):
    return tuple(t.to(device) for t in band_table(n_in, n_out, weights, grid))


def mask_grid_weights(
    masks: torch.Tensor, size: tuple, *, weights: str = "area", grid: tuple | None = None, width: int | None = None
) -> torch.Tensor:
    """(B, K, H, W) masks -> (B, K, h, w) float32 weights w = Ry M Rx^T (see the module doc).

    masks: bool, packed uint8 (B, K, H, 8 * ceil(W / 64)) with `width` = W, or soft float weights."""
    check_choice("weights", weights, WEIGHTS)
    h, w = (check_size("size", s) for s in size)
    check_tensor("masks", masks, ndim=4)
    packed_in = masks.dtype == torch.uint8
    if packed_in:
        if width is None:
            raise ValueError("width is required with packed masks (the row padding hides it)")
        width = check_size("width", width)
        if masks.shape[-1] != packed_row_bytes(width):
            raise ValueError(
                f"masks: packed rows of width {width} take {packed_row_bytes(width)} bytes, "
                f"got shape {tuple(masks.shape)}"
            )
    elif width is not None and width != masks.shape[-1]:
        raise ValueError(f"width={width} disagrees with masks of shape {tuple(masks.shape)}")
    elif masks.dtype != torch.bool and not masks.is_floating_point():
        raise TypeError(f"masks must be bool, packed uint8 or floating, got {masks.dtype}")
    b, k, hh = masks.shape[:3]
    ww = width if packed_in else masks.shape[-1]
    if hh < h or ww < w:
        raise ValueError(f"masks ({hh}x{ww}) must not be smaller than the feature grid ({h}x{w})")
    if grid is not None:
        if weights != "bilinear":
            raise ValueError("grid is LLM-Seg's bilinear path: use it with weights='bilinear'")
        gh, gw = (check_size("grid", g) for g in grid)
        if min(gh, gw) < 1:
            raise ValueError(f"grid must be positive, got {grid}")
    else:
        gh = gw = None
    if hh == 0 or ww == 0 or b * k == 0:
        return torch.zeros(b, k, h, w, dtype=torch.float32, device=masks.device)
    flat = masks.reshape(b * k, hh, masks.shape[-1])
    if packed_in:
        flat = word_aligned(flat)
    elif not flat.is_floating_point():
        flat = pack_masks(flat)
    args = (flat, ww, (hh, h, weights, gh), (ww, w, weights, gw))
    out = choose("mask_grid_weights", _BACKENDS, *args).run(*args)
    return out.reshape(b, k, h, w)


def mask_pool(
    features: torch.Tensor,
    masks: torch.Tensor,
    *,
    weights: str = "area",
    eps: float = 1e-8,
    grid: tuple | None = None,
    width: int | None = None,
) -> torch.Tensor:
    """Pool features under masks: (B, C, h, w) features, (B, K, H, W) masks -> (B, K, C).

    features: fp32, fp16, bf16 or fp64; the result has their dtype and is differentiable in them.
    masks: bool, packed bits (give `width`) or soft float weights, any H >= h, W >= w; pad
    ragged K with empty masks, which pool to 0. Result = Σ w f / (Σ w + eps); see the module
    doc for `weights` and `grid`."""
    check_tensor("features", features, ndim=4, floating=True)
    check_tensor("masks", masks, ndim=4, device=features.device)
    if masks.shape[0] != features.shape[0]:
        raise ValueError(f"masks must have batch {features.shape[0]} like features, got {masks.shape[0]}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or eps < 0:
        raise ValueError(f"eps must be a non-negative float, got {eps!r}")
    b, c, h, w = features.shape
    wts = mask_grid_weights(masks, (h, w), weights=weights, grid=grid, width=width)
    norm = wts / (wts.sum((-2, -1), keepdim=True) + eps)
    return torch.matmul(norm.flatten(2).to(features.dtype), features.flatten(2).transpose(1, 2))


def _compiled(flat, width, rows, cols):
    row_start, row_count, row_weights, _ = _bands_on(*rows, flat.device)
    col_start, col_count, col_weights, col_uniform = _bands_on(*cols, flat.device)
    return torch.ops.segfast.mask_grid_weights(
        flat, width, row_start, row_count, row_weights, col_start, col_count, col_weights, col_uniform
    )


def _reference_run(flat, width, rows, cols):
    """Ry M Rx^T with dense float masks, in chunks so memory stays bounded."""
    ry = resampling_matrix(*rows).to(flat.device, torch.float32)
    rx = resampling_matrix(*cols).to(flat.device, torch.float32)
    out = []
    for chunk in flat.split(64):
        dense = chunk if chunk.is_floating_point() else _reference.unpack_masks(chunk, width)
        out.append(torch.einsum("ih,nhw,jw->nij", ry, dense.float(), rx))
    return torch.cat(out)


def _packed_only(device_type):
    compiled = compiled_on(device_type)

    def unsupported(flat, width, rows, cols):
        if flat.is_floating_point():
            return "soft float masks use the reference"
        reason = compiled(flat)
        if reason is None and device_type == "cuda":
            band = band_table(*rows)[2].shape[1]  # the row_len the kernel is given
            limit = _extension.build_info()["cuda_max_pool_band"]
            if band > limit:
                return f"a {band}-row band exceeds the kernel's shared-memory tile of {limit} rows"
        return reason

    return unsupported


_BACKENDS = [
    Backend("cuda", _packed_only("cuda"), _compiled),
    Backend("cpu", _packed_only("cpu"), _compiled),
    Backend("reference", lambda *a: None, _reference_run),
]

if _extension._C is not None:

    @torch.library.register_fake("segfast::mask_grid_weights")
    def _(masks, width, row_start, row_count, row_weights, col_start, col_count, col_weights, col_uniform):
        return masks.new_empty((masks.shape[0], row_start.shape[0], col_start.shape[0]), dtype=torch.float32)


def llmseg_pool_reference(features: torch.Tensor, masks: torch.Tensor, grid: tuple, eps: float = 1e-8) -> torch.Tensor:
    """LLM-Seg's preprocessing done literally, for comparison: features upsampled to `grid` with
    bilinear interpolation, masks resized to it with antialiased bilinear interpolation (dense
    float masks), then the area-weighted mean. Equals mask_pool(..., weights="bilinear",
    grid=grid) up to rounding, at the memory and time cost mask_pool avoids."""
    return _reference.mask_pool(features, masks.float(), "bilinear", eps, grid)
