"""Polygon rasterization: segfast.ops.rasterize_polygons."""

import torch

from segfast import _extension
from segfast.ops import _reference
from segfast.ops._backend import Backend, choose, compiled_on
from segfast.ops._checks import check_choice, check_size, check_tensor

RULES = ("center", "coco")

# Coordinates beyond this many pixels are rejected: pycocotools' 5x integer grid would overflow,
# and the exactness arguments of the kernels assume it. Vertices outside the image but within
# this range are fine: the rules clip them.
MAX_COORDINATE = float(2**20)


def rasterize_polygons(
    vertices: torch.Tensor,
    height: int,
    width: int,
    *,
    lengths: torch.Tensor | None = None,
    groups: torch.Tensor | None = None,
    num_masks: int | None = None,
    rule: str = "center",
    packed: bool = False,
) -> torch.Tensor:
    """Rasterize polygons into masks.

    Args:
        vertices: (N, V, 2) floating tensor of (x, y) pixel coordinates; pixel (x, y) covers
            [x, x + 1) x [y, y + 1), so its centre is (x + 0.5, y + 0.5). Any float dtype;
            the math is done in float64.
        height, width: output size in pixels.
        lengths: (N,) integer tensor, the number of vertices each polygon uses (3 <= l <= V),
            so polygons of different sizes share one padded tensor. Padding may hold anything,
            NaN included. Default: every polygon uses all V vertices.
        groups: (N,) integer tensor mapping each polygon to an output mask; a mask is the union
            of its polygons (COCO objects and LLaFS answers with several parts). Default: one
            mask per polygon.
        num_masks: number of output masks when `groups` is given (default groups.max() + 1,
            which synchronises with the GPU; pass it to avoid that).
        rule: "center" — a pixel is inside when its centre is, by the even-odd rule, half-open
            on edges so that polygons sharing an edge never share a pixel. "coco" — bit-exact
            with pycocotools `frPyObjects` + `decode` (its 5x-grid boundary trace).
        packed: return bits instead of bools (see below).

    Returns:
        (M, H, W) bool masks, or with packed=True (M, H, 8 * ceil(W / 64)) uint8: bits along the
        width in little bit order (pixel x is bit x % 8 of byte x // 8, as
        numpy.packbits(..., bitorder="little")), each row padded with zero bits to whole 64-bit
        words. M = N without groups, else num_masks.

    Raises:
        TypeError / ValueError naming the argument for wrong types, shapes, devices, fewer than
        3 vertices, NaN/Inf or coordinates beyond +-2^20, and negative sizes.
    """
    vertices = check_tensor("vertices", vertices, ndim=3, floating=True)
    if vertices.shape[-1] != 2:
        raise ValueError(f"vertices must have shape (N, V, 2), got {tuple(vertices.shape)}")
    height, width = check_size("height", height), check_size("width", width)
    check_choice("rule", rule, RULES)
    if not isinstance(packed, bool):
        raise TypeError(f"packed must be a bool, got {type(packed).__name__}")
    n, v, _ = vertices.shape
    dev = vertices.device
    if v < 3 and n > 0 and lengths is None:
        raise ValueError(f"vertices must hold at least 3 vertices per polygon, got V={v}")
    lengths = _lengths(lengths, n, v, dev)
    groups, num_masks = _groups(groups, num_masks, n, dev)
    vertices = vertices.detach().to(torch.float64).contiguous()  # masks carry no gradient
    _check_coordinates(vertices, lengths)
    # Kernels take polygons grouped by mask (CSR): polygons of mask m are offsets[m]:offsets[m+1].
    if groups is None:
        groups, offsets = torch.arange(n, device=dev), torch.arange(n + 1, device=dev)
    else:
        order = torch.argsort(groups, stable=True)
        vertices, lengths, groups = vertices[order].contiguous(), lengths[order].contiguous(), groups[order]
        offsets = torch.zeros(num_masks + 1, dtype=torch.int64, device=dev)
        offsets[1:] = torch.cumsum(torch.bincount(groups, minlength=num_masks), 0)
    args = (vertices, lengths, offsets, groups, height, width, rule, packed)
    return choose("rasterize_polygons", _BACKENDS, *args).run(*args)


def _lengths(lengths, n, v, dev):
    if lengths is None:
        return torch.full((n,), v, dtype=torch.int64, device=dev)
    check_tensor("lengths", lengths, ndim=1, device=dev)
    if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
        raise TypeError(f"lengths must be an integer tensor, got {lengths.dtype}")
    if lengths.shape[0] != n:
        raise ValueError(f"lengths must have shape ({n},) to match vertices, got {tuple(lengths.shape)}")
    lengths = lengths.to(torch.int64)
    if n and bool(((lengths < 3) | (lengths > v)).any()):
        bad = lengths[(lengths < 3) | (lengths > v)][0].item()
        raise ValueError(f"lengths must be between 3 and V={v} (a polygon needs 3 vertices), got {bad}")
    return lengths


def _groups(groups, num_masks, n, dev):
    if groups is None:
        if num_masks is not None and num_masks != n:
            raise ValueError(f"num_masks={num_masks} needs groups (without groups there is one mask per polygon)")
        return None, n
    check_tensor("groups", groups, ndim=1, device=dev)
    if groups.is_floating_point() or groups.is_complex() or groups.dtype == torch.bool:
        raise TypeError(f"groups must be an integer tensor, got {groups.dtype}")
    if groups.shape[0] != n:
        raise ValueError(f"groups must have shape ({n},) to match vertices, got {tuple(groups.shape)}")
    groups = groups.to(torch.int64)
    if num_masks is None:
        num_masks = int(groups.max().item()) + 1 if n else 0
    num_masks = check_size("num_masks", num_masks)
    if n and bool(((groups < 0) | (groups >= num_masks)).any()):
        raise ValueError(f"groups must lie in [0, num_masks={num_masks})")
    return groups, num_masks


def _check_coordinates(vertices, lengths):
    """Every used vertex must be finite and within +-MAX_COORDINATE; padding is ignored."""
    if vertices.numel() == 0:
        return
    used = torch.arange(vertices.shape[1], device=vertices.device) < lengths[:, None]
    ok = (vertices.abs() <= MAX_COORDINATE).all(-1) | ~used
    if bool(ok.all()):
        return
    bad = vertices[~ok][0]
    what = "NaN" if bad.isnan().any() else "Inf" if bad.isinf().any() else f"beyond +-{MAX_COORDINATE:.0f}"
    raise ValueError(f"vertices must be finite and within +-2^20 pixels; found {what}: {bad.tolist()}")


def _compiled(vertices, lengths, offsets, groups, height, width, rule, packed):
    return torch.ops.segfast.rasterize_polygons(vertices, lengths, offsets, height, width, rule, packed)


def _reference_run(vertices, lengths, offsets, groups, height, width, rule, packed):
    return _reference.rasterize_polygons(vertices, lengths, groups, offsets.numel() - 1, height, width, rule, packed)


def _cuda_unsupported(vertices, lengths, offsets, groups, height, width, *_):
    reason = compiled_on("cuda")(vertices)
    if reason is None and width > _extension.build_info()["cuda_max_raster_width"]:
        return f"width {width} exceeds the kernel's shared-memory tile"
    return reason


_BACKENDS = [
    Backend("cuda", _cuda_unsupported, _compiled),
    Backend("cpu", compiled_on("cpu"), _compiled),
    Backend("reference", lambda *a: None, _reference_run),
]

if _extension._C is not None:

    @torch.library.register_fake("segfast::rasterize_polygons")
    def _(vertices, lengths, mask_offsets, height, width, rule, packed):
        num_masks = mask_offsets.shape[0] - 1
        if packed:
            return vertices.new_empty((num_masks, height, _reference.packed_row_bytes(width)), dtype=torch.uint8)
        return vertices.new_empty((num_masks, height, width), dtype=torch.bool)
