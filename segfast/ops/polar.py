"""Polar polygons of masks (LLaFS ground truth): segfast.ops.mask_to_polar_polygons.

Definitions (pixel (x, y) is the square [x, x + 1) x [y, y + 1)):
  * centre: the centroid of the object, the mean of its pixel centres (x + 0.5, y + 0.5). For a
    non-convex object it may lie outside the object; the rays still start there.
  * rays: num_vertices directions theta_k = 2 pi k / num_vertices, k = 0 .. V - 1, direction
    (cos theta, sin theta) in image coordinates (x right, y down): k = 0 points right and k grows
    clockwise on screen. 16 vertices are 22.5 degrees apart.
  * vertex k: the farthest point where ray k leaves the object, i.e. the exit point of the last
    object pixel the ray passes through (exact: every pixel square crossed is visited). A ray that
    only touches a pixel's corner, or runs along a pixel's edge, does not pass through it: a pixel
    counts when the ray crosses its interior, and a ray along a grid line x = k or y = k belongs to
    the half-open pixel on the k side.
  * a ray that meets no object pixel gets the centre itself; an empty mask gets V copies of the
    image centre.
Batched and vectorised in PyTorch, so the same code runs on CPU and GPU tensors.
"""

import math

import torch

from segfast.ops._checks import check_size, check_tensor

_CORNER = 1e-9  # px: float64 crossing error is ~1e-12 px even for 10k-px images


def mask_centres(masks: torch.Tensor) -> torch.Tensor:
    """(N, H, W) bool -> (N, 2) float64 centroids (x, y) of the pixel centres; image centre if empty."""
    n, h, w = masks.shape
    # exact integer column and row counts: no float copy of the masks
    per_column = masks.sum(1, dtype=torch.int64).double()  # (N, W)
    per_row = masks.sum(2, dtype=torch.int64).double()  # (N, H)
    area = per_column.sum(1)
    xs = torch.arange(w, dtype=torch.float64, device=masks.device) + 0.5
    ys = torch.arange(h, dtype=torch.float64, device=masks.device) + 0.5
    cx = (per_column * xs).sum(1) / area.clamp(min=1)
    cy = (per_row * ys).sum(1) / area.clamp(min=1)
    empty = area == 0
    cx = torch.where(empty, torch.full_like(cx, w / 2), cx)
    cy = torch.where(empty, torch.full_like(cy, h / 2), cy)
    return torch.stack([cx, cy], 1)


def mask_to_polar_polygons(
    masks: torch.Tensor, num_vertices: int = 16, centres: torch.Tensor | None = None
) -> torch.Tensor:
    """(N, H, W) bool masks -> (N, num_vertices, 2) float64 polygon vertices (x, y); see the module
    doc for the definitions. `centres` (N, 2) overrides the centroids."""
    check_tensor("masks", masks, ndim=3, dtypes=(torch.bool,))
    num_vertices = check_size("num_vertices", num_vertices)
    if num_vertices < 3:
        raise ValueError(f"num_vertices must be >= 3, got {num_vertices}")
    n, h, w = masks.shape
    dev = masks.device
    c = mask_centres(masks) if centres is None else check_tensor("centres", centres, ndim=2).to(dev, torch.float64)
    if n == 0 or h == 0 or w == 0:
        return c[:, None, :].expand(n, num_vertices, 2).clone()
    theta = torch.arange(num_vertices, dtype=torch.float64, device=dev) * (2 * math.pi / num_vertices)
    dx, dy = torch.cos(theta), torch.sin(theta)
    dx = torch.where(dx.abs() < 1e-12, torch.zeros_like(dx), dx)  # exact axis-aligned rays
    dy = torch.where(dy.abs() < 1e-12, torch.zeros_like(dy), dy)
    cx, cy = c[:, 0, None, None], c[:, 1, None, None]  # (N, 1, 1)
    # ray parameters where the ray crosses pixel grid lines x = k and y = k
    kx = torch.arange(w + 1, dtype=torch.float64, device=dev)
    ky = torch.arange(h + 1, dtype=torch.float64, device=dev)
    with torch.no_grad():
        tx = (kx - cx) / dx[None, :, None]  # (N, V, W + 1)
        ty = (ky - cy) / dy[None, :, None]  # (N, V, H + 1)
    t = torch.cat([torch.zeros(n, num_vertices, 1, dtype=torch.float64, device=dev), tx, ty], 2)
    t = torch.where(torch.isfinite(t) & (t > 0), t, torch.full_like(t, float("inf")))
    t[..., 0] = 0.0
    t = torch.sort(t, dim=2).values
    start, end = t[..., :-1], t[..., 1:]
    # Non-empty segments. Where the ray passes a pixel corner, the x and y crossings are equal in
    # exact arithmetic but may differ by an ulp here; the sliver between them only touches the
    # diagonal neighbour's corner, so segments far below a pixel (1e-9 px) are not crossings.
    real = torch.isfinite(end) & (end - start > _CORNER)
    mid = torch.where(real, (start + end) / 2, torch.zeros_like(end))
    px = torch.floor(cx + mid * dx[None, :, None]).long()
    py = torch.floor(cy + mid * dy[None, :, None]).long()
    in_image = (px >= 0) & (px < w) & (py >= 0) & (py < h)
    flat = (torch.arange(n, device=dev)[:, None, None] * h + py.clamp(0, h - 1)) * w + px.clamp(0, w - 1)
    inside = real & in_image & masks.reshape(-1)[flat]
    reach = torch.where(inside, end, torch.zeros_like(end)).max(2).values  # (N, V), 0 when the ray misses
    return torch.stack([c[:, 0, None] + reach * dx, c[:, 1, None] + reach * dy], 2)


def object_polygons(objects: list, num_vertices: int = 16) -> torch.Tensor:
    """One polygon per (H, W) bool object mask, (len(objects), num_vertices, 2) float64; (0, V, 2)
    for no objects (an empty support or query)."""
    if not objects:
        return torch.zeros(0, check_size("num_vertices", num_vertices), 2, dtype=torch.float64)
    return mask_to_polar_polygons(torch.stack(objects), num_vertices)
