import math

import pytest
import torch

from segfast.ops import mask_to_polar_polygons, object_polygons, rasterize_polygons
from segfast.ops.polar import mask_centres
from tests.allocations import Allocations


def supersampled(mask, centre, theta, step=1e-3):
    """Independent reference: walk the ray in tiny steps, keep the last point inside the object."""
    h, w = mask.shape
    cx, cy = centre
    # axis-aligned rays exactly (cos(pi/2) is 6e-17, not 0): a centre on a grid line then stays on it,
    # in the half-open pixel the op's definition gives it
    dx, dy = (0.0 if abs(v) < 1e-12 else v for v in (math.cos(theta), math.sin(theta)))
    reach, t = 0.0, 0.0
    limit = math.hypot(h, w) + 2
    while t < limit:
        x, y = cx + t * dx, cy + t * dy
        px, py = math.floor(x), math.floor(y)
        if 0 <= px < w and 0 <= py < h and mask[py, px]:
            reach = t
        t += step
    return reach


def blobs(gen, n, h, w):
    angle = torch.sort(torch.rand(n, 9, generator=gen, dtype=torch.float64) * 2 * math.pi, 1).values
    radius = torch.rand(n, 9, generator=gen, dtype=torch.float64) * min(h, w) * 0.35 + 2
    centre = (
        torch.rand(n, 1, 2, generator=gen, dtype=torch.float64) * torch.tensor([w, h]) * 0.6
        + torch.tensor([w, h]) * 0.2
    )
    return rasterize_polygons(centre + torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], -1), h, w)


def test_matches_supersampled_rays(gen):
    masks = blobs(gen, 3, 23, 31)
    masks[2, 3:6, 20:26] = True  # a detached part: some rays leave and re-enter the object
    polys = mask_to_polar_polygons(masks)
    assert polys.shape == (3, 16, 2) and polys.dtype == torch.float64
    centres = mask_centres(masks)
    for i in range(3):
        for k in range(16):
            theta = 2 * math.pi * k / 16
            reach = supersampled(masks[i], centres[i].tolist(), theta)
            got = (polys[i, k] - centres[i]).norm().item()
            assert abs(got - reach) <= 2e-3, (i, k, got, reach)


def test_rays_through_pixel_corners_and_along_grid_lines():
    # Random centroids land on these often (x + y an integer; x an integer), and once failed CI.
    mask = torch.zeros(1, 10, 10, dtype=torch.bool)
    mask[0, 3, 3] = True  # the pixel holding the centre (3.5, 3.5)
    mask[0, 5, 2] = mask[0, 7, 0] = True  # the 135-degree ray x + y = 7 only touches their corners
    mask[0, 0, 6] = True  # the 315-degree ray, on the same line, crosses this one's interior
    centre = torch.tensor([[3.5, 3.5]], dtype=torch.float64)
    polys = mask_to_polar_polygons(mask, 8, centres=centre)[0]
    torch.testing.assert_close(polys[3], torch.tensor([3.0, 4.0], dtype=torch.float64))  # the centre pixel's corner
    torch.testing.assert_close(polys[7], torch.tensor([7.0, 0.0], dtype=torch.float64))  # leaves it at (7, 0)
    line = torch.zeros(1, 10, 10, dtype=torch.bool)
    line[0, 2:5, 4] = True  # column x in [4, 5): the upward ray from x = 4 runs along its left edge
    line[0, 0:8, 3] = True  # column x in [3, 4): reaches higher, but lies on the other side
    up = mask_to_polar_polygons(line, 4, centres=torch.tensor([[4.0, 4.5]], dtype=torch.float64))[0, 3]
    torch.testing.assert_close(up, torch.tensor([4.0, 2.0], dtype=torch.float64))


def test_square_and_definitions():
    mask = torch.zeros(1, 10, 10, dtype=torch.bool)
    mask[0, 2:8, 2:8] = True  # centre (5, 5), half-width 3
    polys = mask_to_polar_polygons(mask, num_vertices=4)[0]
    expect = torch.tensor(
        [[8.0, 5.0], [5.0, 8.0], [2.0, 5.0], [5.0, 2.0]], dtype=torch.float64
    )  # right, down, left, up
    torch.testing.assert_close(polys, expect)
    diag = mask_to_polar_polygons(mask, num_vertices=8)[0, 1]  # 45 degrees: the corner (8, 8)
    torch.testing.assert_close(diag, torch.tensor([8.0, 8.0], dtype=torch.float64))


def test_misses_and_empty_masks():
    ring = torch.zeros(1, 21, 21, dtype=torch.bool)
    ring[0, 5:16, 5:16] = True
    ring[0, 8:13, 8:13] = False  # hollow: rays start in the hole and still reach the outer edge
    polys = mask_to_polar_polygons(ring, 16)[0]
    assert ((polys - torch.tensor([10.5, 10.5], dtype=torch.float64)).norm(dim=1) >= 5.4).all()
    empty = torch.zeros(2, 6, 8, dtype=torch.bool)
    assert torch.equal(mask_to_polar_polygons(empty), torch.tensor([4.0, 3.0], dtype=torch.float64).expand(2, 16, 2))
    miss = torch.zeros(1, 9, 9, dtype=torch.bool)
    miss[0, 0, 0] = miss[0, 8, 8] = True  # centroid (4.5, 4.5) lies outside the object
    polys = mask_to_polar_polygons(miss, 8)[0]
    assert torch.equal(polys[0], torch.tensor([4.5, 4.5], dtype=torch.float64))  # the rightward ray misses
    assert (polys[1] - torch.tensor([9.0, 9.0], dtype=torch.float64)).abs().max() < 1e-9  # 45 degrees hits (8, 8)


def test_object_polygons_of_a_list_and_of_none(gen):
    objects = list(blobs(gen, 2, 20, 24))
    torch.testing.assert_close(object_polygons(objects, 8), mask_to_polar_polygons(torch.stack(objects), 8))
    none = object_polygons([], 12)
    assert none.shape == (0, 12, 2) and none.dtype == torch.float64


def test_round_trip_through_rasterization(gen):
    # Near-round ellipses (semi-axes >= 10 px, aspect <= 1.5) are star-shaped about their centroid,
    # so 16 rays describe them well. The bound leaves room for pixel-exit overshoot on small ones:
    # over 6,000 random ellipses the lowest IoU seen was 0.916.
    yy, xx = torch.meshgrid(torch.arange(64) + 0.5, torch.arange(64) + 0.5, indexing="ij")
    p = torch.rand(6, 4, generator=gen)
    a = 10 + 10 * p[:, 2]
    params = torch.stack([22 + 20 * p[:, 0], 22 + 20 * p[:, 1], a, a * (1 + 0.5 * p[:, 3])], 1)
    masks = torch.stack([((xx - cx) / sa) ** 2 + ((yy - cy) / sb) ** 2 <= 1 for cx, cy, sa, sb in params])
    back = rasterize_polygons(mask_to_polar_polygons(masks), 64, 64)
    iou = (back & masks).flatten(1).sum(1) / (back | masks).flatten(1).sum(1)
    assert (iou > 0.88).all(), (iou, params)


def test_no_float_copy_of_the_masks(gen):
    """Centroids come from integer row and column counts: no float64 copy of N x H x W masks."""
    masks = blobs(gen, 6, 200, 300)
    with Allocations() as seen:
        polys = mask_to_polar_polygons(masks)
    assert max(seen.float_sizes) < masks.numel() // 4
    ys, xs = torch.meshgrid(torch.arange(200) + 0.5, torch.arange(300) + 0.5, indexing="ij")
    area = masks.flatten(1).sum(1)
    centres = torch.stack([(masks * xs).flatten(1).sum(1) / area, (masks * ys).flatten(1).sum(1) / area], 1)
    torch.testing.assert_close(mask_centres(masks), centres.double())
    assert polys.shape == (6, 16, 2)


@pytest.mark.gpu
def test_cuda_matches_cpu(gen):
    masks = blobs(gen, 5, 40, 50)
    torch.testing.assert_close(mask_to_polar_polygons(masks.cuda()).cpu(), mask_to_polar_polygons(masks))


def test_bad_input():
    with pytest.raises(TypeError, match="masks"):
        mask_to_polar_polygons(torch.zeros(1, 4, 4))
    with pytest.raises(ValueError, match="num_vertices"):
        mask_to_polar_polygons(torch.zeros(1, 4, 4, dtype=torch.bool), num_vertices=2)
