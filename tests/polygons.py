"""Random polygons of the kinds the rasterizer must handle, for tests and benchmarks."""

import math

import torch


def random_polygons(n: int, v: int, height: int, width: int, gen: torch.Generator, kind: str = "mixed") -> torch.Tensor:
    """(n, v, 2) float64 polygons. kind: star (concave, simple), convex, scribble
    (self-intersecting), degenerate (collinear / repeated vertices), offimage, grid (vertices on
    pixel centres and edges, where tie rules matter), or mixed (a bit of each)."""
    if kind == "mixed":
        kinds = ["star", "convex", "scribble", "degenerate", "offimage", "grid"]
        parts = [random_polygons(n // len(kinds) + 1, v, height, width, gen, k) for k in kinds]
        out = torch.cat(parts)[torch.randperm(len(kinds) * (n // len(kinds) + 1), generator=gen)]
        return out[:n].contiguous()
    size = torch.tensor([width, height], dtype=torch.float64)
    rand = lambda *s: torch.rand(*s, generator=gen, dtype=torch.float64)  # noqa: E731
    if kind in ("star", "convex", "offimage"):
        angle = torch.sort(rand(n, v) * 2 * math.pi, dim=1).values
        if kind == "convex":
            radius = (0.1 + 0.4 * rand(n, 1)) * size.min()
            radius = radius.expand(n, v)
        else:
            radius = (0.05 + 0.5 * rand(n, v)) * size.min()
        centre = rand(n, 1, 2) * size
        if kind == "offimage":
            centre = centre * 1.6 - 0.3 * size
            radius = radius * 2
        return centre + torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], -1)
    if kind == "scribble":
        return rand(n, v, 2) * size * 1.2 - 0.1 * size
    if kind == "degenerate":
        pts = rand(n, v, 2) * size
        a, b = rand(n, 1, 2) * size, rand(n, 1, 2) * size
        t = rand(n, v, 1)
        collinear = a + t * (b - a)
        repeated = pts.clone()
        repeated[:, 1::2] = repeated[:, 0:-1:2][:, : repeated[:, 1::2].shape[1]]
        pick = rand(n, 1, 1) < 0.5
        return torch.where(pick, collinear, repeated)
    if kind == "grid":
        return torch.floor(rand(n, v, 2) * size * 2) / 2
    raise ValueError(f"unknown kind {kind!r}")
