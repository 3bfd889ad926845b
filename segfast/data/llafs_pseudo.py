"""llafs-pseudo: LLaFS's synthetic support-query pairs with the curriculum (supplementary A.2).

A sample is made from its seed and the curriculum progress p in [0, 1] alone, so it is
reproducible and cheap (a few milliseconds at 64 x 64) to make on the fly in loader workers:

  * support foreground: a closed curve through 10 random control points set around a centre
    (piecewise quadratic Bézier: segment k runs between the midpoints of control points k-1, k
    and k, k+1 with control point k as its handle, which closes smoothly), rasterized.
  * background: split into 1-5 random sub-regions (Voronoi cells of random seeds), each its own
    colour; every region is filled with Gaussian noise (std `noise_std`) around its RGB mean.
  * colours (RGB means in [0, 255], Supp A.2.2), with m_sf the support foreground mean:
    ||m_sb - m_sf|| in [a, b] for every support background region, ||m_qf - m_sf|| in [c, d],
    and for every query background region ||m_qb - m_qf|| in [a, b] and ||m_qb - m_sf|| >
    ||m_qf - m_sf|| (the query foreground is the region most like the support's).
  * query: the support's control points plus standard Gaussian noise, rotated by a uniform angle,
    scaled by s in [0.5, 1.5] and moved to a random position where it fits the image.
  * random_query (Table 5's ablation): the query's contour and foreground colour are drawn on
    their own, not adjusted from the support's, and the query background is not kept farther.
  * hints: the pretraining instruction gives M of the query polygon's V vertices (a random
    subset) and hides the rest behind [mask]; the answer is the hidden V - M. V = num_vertices
    (the paper's 16; Fig. 5 ablates it, and model.options.num_vertices must match).

Curriculum (Supp A.2.3), at step n of N_p (progress p = n / N_p):
    a_n = a0 - n a0 / N_p,  b_n = a_n + b0 - a0            (Eq. 2: a 100 -> 0, b 150 -> 50)
    c_n = n c_Np / N_p,     d_n = c_n + d_Np - c_Np        (Eq. 3: c 0 -> 50, d 50 -> 100)
    M = 15 - floor(n / (N_p / 30)) in the first half, then 0
with (a0, b0, c_Np, d_Np) = (100, 150, 50, 100). All are arguments of `Curriculum`. M starts at
max_hints = V - 1 (the paper's 15 for 16 vertices) and falls by one every N_p / (2 (V - 1))
steps, so it reaches 0 at N_p / 2 for any V; llafs-pseudo sets max_hints = num_vertices - 1
unless data.options.curriculum gives it.
"""

import math
from dataclasses import dataclass

import torch
from torch.utils.data import IterableDataset, get_worker_info

from segfast.ops import mask_to_polar_polygons, rasterize_polygons
from segfast.registry import dataset

CONTROL_POINTS = 10
CURVE_SAMPLES = 12  # points per Bézier segment in the rasterized outline


@dataclass(frozen=True)
class Curriculum:
    a0: float = 100.0
    b0: float = 150.0
    c_end: float = 50.0  # c at N_p
    d_end: float = 100.0  # d at N_p
    max_hints: int = 15  # V - 1 for V-point polygons (the paper's 16)
    image: bool = True  # Table 6f: False holds the colours at their final bounds (no image curriculum)
    polygon: bool = True  # Table 6f: False gives no hints from the start (no polygon curriculum)

    def at(self, progress: float) -> dict:
        """The constraint bounds a, b, c, d and the hint count M at progress p = n / N_p."""
        p = min(max(float(progress), 0.0), 1.0)
        colour = p if self.image else 1.0
        a, c = self.a0 * (1 - colour), self.c_end * colour
        steps = math.floor((p if self.polygon else 1.0) * 2 * self.max_hints + 1e-9)  # one hint less every N_p / 30
        return {
            "a": a,
            "b": a + self.b0 - self.a0,
            "c": c,
            "d": c + self.d_end - self.c_end,
            "hints": max(0, self.max_hints - steps),
        }


def closed_bezier(control: torch.Tensor, samples: int = CURVE_SAMPLES) -> torch.Tensor:
    """(K, 2) control points -> (K * samples, 2) points of the closed piecewise quadratic curve."""
    prev_mid = (torch.roll(control, 1, 0) + control) / 2
    next_mid = (control + torch.roll(control, -1, 0)) / 2
    t = torch.linspace(0, 1, samples + 1, dtype=control.dtype)[:-1, None, None]
    pts = (1 - t) ** 2 * prev_mid + 2 * (1 - t) * t * control + t**2 * next_mid  # (samples, K, 2)
    return pts.transpose(0, 1).reshape(-1, 2)


def _shape(g, size: int) -> torch.Tensor:
    """10 control points around the origin, star-shaped so the object is one piece."""
    angle = torch.sort(torch.rand(CONTROL_POINTS, generator=g, dtype=torch.float64) * 2 * math.pi).values
    radius = (0.45 + 0.55 * torch.rand(CONTROL_POINTS, generator=g, dtype=torch.float64)) * size * 0.22
    return torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], 1)


def _place(g, shape: torch.Tensor, size: int) -> torch.Tensor:
    """Moves a shape (around the origin) to a random position where its box fits the image."""
    lo, hi = shape.min(0).values, shape.max(0).values
    room = (size - (hi - lo)).clamp(min=0)
    return shape - lo + torch.rand(2, generator=g, dtype=torch.float64) * room


def _at_distance(g, centre: torch.Tensor, low: float, high: float, tries: int = 64) -> torch.Tensor | None:
    """A colour at distance in [low, high] from `centre`, inside the RGB cube [0, 255]^3 (with
    tries=1: None when the one draw left the cube)."""
    for _ in range(tries):
        direction = torch.randn(3, generator=g, dtype=torch.float64)
        direction = direction / direction.norm().clamp(min=1e-12)
        r = low + (high - low) * float(torch.rand(1, generator=g, dtype=torch.float64))
        colour = centre + r * direction
        if ((colour >= 0) & (colour <= 255)).all():
            return colour
    if tries == 1:
        return None
    # far from every face: step towards the cube's far corner, which is >= 127.5 * sqrt(3) away
    corner = torch.where(centre < 127.5, torch.full_like(centre, 255.0), torch.zeros_like(centre))
    direction = (corner - centre) / (corner - centre).norm()
    return centre + (low + high) / 2 * direction


def _query_background(g, qf, sf, low: float, high: float, tries: int = 256, relative=True) -> torch.Tensor | None:
    """A colour in the RGB cube with ||m - qf|| in [low, high] and (relative) ||m - sf|| >
    ||qf - sf||, or None when `tries` draws found none."""
    limit = float((qf - sf).norm()) if relative else -1.0
    for _ in range(tries):
        colour = _at_distance(g, qf, low, high, tries=1)
        if colour is not None and (colour - sf).norm() > limit:
            return colour
    return None


def _background_regions(g, size: int) -> torch.Tensor:
    """(size, size) int64 region index of a Voronoi split into 1-5 cells."""
    k = int(torch.randint(1, 6, (1,), generator=g))
    seeds = torch.rand(k, 2, generator=g, dtype=torch.float64) * size
    yy, xx = torch.meshgrid(
        torch.arange(size, dtype=torch.float64) + 0.5, torch.arange(size, dtype=torch.float64) + 0.5, indexing="ij"
    )
    dist = (xx[None] - seeds[:, 0, None, None]) ** 2 + (yy[None] - seeds[:, 1, None, None]) ** 2
    return dist.argmin(0)


def _paint(g, mask, regions, fg_mean, bg_means, noise_std) -> torch.Tensor:
    means = torch.stack(bg_means)[regions]  # (H, W, 3)
    means[mask] = fg_mean
    img = means + noise_std * torch.randn(means.shape, generator=g, dtype=torch.float64)
    return (img.clamp(0, 255) / 255).permute(2, 0, 1).float()


def make_pair(
    seed: int,
    progress: float,
    size: int = 64,
    curriculum: Curriculum | None = None,
    noise_std: float = 12.0,
    num_vertices: int = 16,
    random_query: bool = False,
) -> dict:
    """One pseudo support-query pair (see the module doc). Images are (3, size, size) float32 in
    [0, 1]; masks (size, size) bool; polygons (1, V, 2) float64 polar polygons (x, y); "hints"
    (V,) bool marks the query vertices the pretraining instruction reveals; "colours" holds the
    RGB means for inspection and tests. curriculum: by default the paper's, with max_hints =
    num_vertices - 1."""
    curriculum = Curriculum(max_hints=num_vertices - 1) if curriculum is None else curriculum
    if curriculum.max_hints >= num_vertices:
        raise ValueError(
            f"curriculum.max_hints ({curriculum.max_hints}) must be below num_vertices ({num_vertices}): "
            "at least one vertex is left to predict"
        )
    g = torch.Generator().manual_seed(int(seed))
    bounds = curriculum.at(progress)
    shape = _shape(g, size)
    support_ctrl = _place(g, shape, size)
    support_mask = rasterize_polygons(closed_bezier(support_ctrl)[None], size, size)[0]
    theta = float(torch.rand(1, generator=g, dtype=torch.float64)) * 2 * math.pi
    scale = 0.5 + float(torch.rand(1, generator=g, dtype=torch.float64))
    rot = torch.tensor([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]], dtype=torch.float64)
    noisy = shape + torch.randn(shape.shape, generator=g, dtype=torch.float64) * size / 384  # N(0, 1) px at 384
    if random_query:  # Table 5's ablation: the query's contour is not adjusted from the support's
        noisy = _shape(g, size)
    query_ctrl = _place(g, noisy @ rot.T * scale, size)
    query_mask = rasterize_polygons(closed_bezier(query_ctrl)[None], size, size)[0]

    support_regions, query_regions = _background_regions(g, size), _background_regions(g, size)
    for _ in range(100):  # a support/query foreground pair that leaves room for every query background
        sf = torch.rand(3, generator=g, dtype=torch.float64) * 255
        qf = torch.rand(3, generator=g, dtype=torch.float64) * 255 if random_query else None
        qf = _at_distance(g, sf, bounds["c"], bounds["d"]) if qf is None else qf
        qb = [
            _query_background(g, qf, sf, bounds["a"], bounds["b"], relative=not random_query)
            for _ in range(int(query_regions.max()) + 1)
        ]
        if all(c is not None for c in qb):
            break
    else:
        raise ValueError(f"no colours satisfy the curriculum's constraints {bounds} (seed {seed})")
    sb = [_at_distance(g, sf, bounds["a"], bounds["b"]) for _ in range(int(support_regions.max()) + 1)]

    masks = torch.stack([support_mask, query_mask])
    polygons = mask_to_polar_polygons(masks, num_vertices)
    hints = torch.zeros(num_vertices, dtype=torch.bool)
    hints[torch.randperm(num_vertices, generator=g)[: bounds["hints"]]] = True
    return {
        "support_images": _paint(g, support_mask, support_regions, sf, sb, noise_std)[None],
        "support_masks": support_mask[None],
        "support_polygons": [polygons[0:1]],
        "query_image": _paint(g, query_mask, query_regions, qf, qb, noise_std),
        "query_mask": query_mask,
        "query_polygons": polygons[1:2],
        "hints": hints,
        "colours": {"support_fg": sf, "support_bg": sb, "query_fg": qf, "query_bg": qb},
    }


@dataset("llafs-pseudo")
class PseudoPairs(IterableDataset):
    """An endless stream of pseudo pairs for the engine. The sample at stream position n has
    seed (seed, n) and curriculum progress n / curriculum_samples; each (rank, worker) makes the
    micro-batches it will deliver, so the stream order, and a resumed run (on any number of
    processes), are exact. The eval
    split uses other seeds and the difficulty at `eval_progress` (default: the final one).
    num_vertices: the polygons' vertex count (model.options.num_vertices must match)."""

    def __init__(
        self,
        size: int = 64,
        curriculum_samples: int = 4096,
        noise_std: float = 12.0,
        seed: int = 0,
        split: str = "train",
        curriculum: dict | None = None,
        eval_progress: float = 1.0,
        random_query: bool = False,
        num_vertices: int = 16,
    ):
        if curriculum_samples < 1:
            raise ValueError(f"curriculum_samples must be >= 1, got {curriculum_samples}")
        self.size, self.curriculum_samples, self.noise_std = size, curriculum_samples, noise_std
        self.curriculum = Curriculum(**{"max_hints": num_vertices - 1, **(curriculum or {})})
        self.num_vertices = num_vertices
        self.seed, self.split, self.eval_progress, self.random_query = seed, split, eval_progress, random_query
        self.start, self.micro_batch, self.rank, self.world = 0, 1, 0, 1

    def start_at(self, start: int, micro_batch: int, rank: int, world: int) -> None:
        """Called by the loader before iterating: the run has read stream positions < start;
        deliver this rank's micro-batches from there on."""
        self.start, self.micro_batch, self.rank, self.world = start, micro_batch, rank, world

    def sample(self, n: int) -> dict:
        base = self.seed * 1_000_003 + (0 if self.split == "train" else 7_919 * 1_000_003)
        progress = n / self.curriculum_samples if self.split == "train" else self.eval_progress
        pair = make_pair(
            base + n, progress, self.size, self.curriculum, self.noise_std, self.num_vertices, self.random_query
        )
        del pair["colours"]  # inspection only; not collated
        return pair

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        batch = worker  # DataLoader takes batches from workers round robin
        while True:
            first = self.start + (batch * self.world + self.rank) * self.micro_batch
            for n in range(first, first + self.micro_batch):
                yield self.sample(n)
            batch += workers
