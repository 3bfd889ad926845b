import itertools

import pytest
import torch

from segfast.data.llafs_pseudo import Curriculum, PseudoPairs, closed_bezier, make_pair
from segfast.data.loader import make_loader
from segfast.ops import mask_to_polar_polygons


def test_curriculum_schedule_values():
    c = Curriculum()
    assert c.at(0.0) == {"a": 100.0, "b": 150.0, "c": 0.0, "d": 0.0, "hints": 15}
    assert c.at(0.25) == {"a": 87.5, "b": 137.5, "c": 12.5, "d": 25.0, "hints": 8}
    assert c.at(0.5)["hints"] == 0 and c.at(0.75)["hints"] == 0
    assert c.at(1.0) == {"a": 50.0, "b": 100.0, "c": 50.0, "d": 100.0, "hints": 0}
    assert c.at(3.0) == c.at(1.0)  # past N_p the curriculum holds its final values
    hints = [c.at(p / 100)["hints"] for p in range(51)]
    assert all(x >= y for x, y in zip(hints, hints[1:]))


@pytest.mark.parametrize("progress", [0.0, 0.4, 1.0])
def test_colour_constraints_hold(gen, progress):
    bounds = Curriculum().at(progress)
    for seed in torch.randint(0, 2**40, (12,), generator=gen).tolist():
        s = make_pair(seed, progress)
        col = s["colours"]
        sf = col["support_fg"]
        for sb in col["support_bg"]:
            assert bounds["a"] - 1e-9 <= (sb - sf).norm() <= bounds["b"] + 1e-9
        qf_dist = (col["query_fg"] - sf).norm()
        assert bounds["c"] - 1e-9 <= qf_dist <= bounds["d"] + 1e-9
        assert all((qb - sf).norm() > qf_dist for qb in col["query_bg"])
        for c in [sf, col["query_fg"], *col["support_bg"], *col["query_bg"]]:
            assert ((c >= 0) & (c <= 255)).all()
        assert 1 <= len(col["support_bg"]) <= 5 and 1 <= len(col["query_bg"]) <= 5
        assert int(s["hints"].sum()) == bounds["hints"]


def test_images_masks_and_polygons_agree(gen):
    seed = int(torch.randint(0, 2**40, (1,), generator=gen))
    s = make_pair(seed, 0.0, noise_std=0.0)
    img, mask = s["query_image"], s["query_mask"]
    assert img.shape == (3, 64, 64) and img.dtype == torch.float32 and 0 <= img.min() and img.max() <= 1
    assert 30 < int(mask.sum()) < 64 * 64 * 0.6
    fg = img[:, mask]  # noise-free: one colour inside the object
    assert (fg - fg[:, :1]).abs().max() < 1e-6
    torch.testing.assert_close(s["query_polygons"], mask_to_polar_polygons(mask[None]))
    torch.testing.assert_close(s["support_polygons"][0], mask_to_polar_polygons(s["support_masks"]))


def test_seeds_reproduce_and_differ():
    a, b, c = make_pair(5, 0.3), make_pair(5, 0.3), make_pair(6, 0.3)
    assert torch.equal(a["query_image"], b["query_image"]) and torch.equal(a["support_masks"], b["support_masks"])
    assert not torch.equal(a["query_image"], c["query_image"])


def test_closed_bezier_passes_between_control_points():
    ctrl = torch.tensor([[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [0.0, 10.0]], dtype=torch.float64)
    pts = closed_bezier(ctrl, samples=4)
    assert pts.shape == (16, 2)
    torch.testing.assert_close(pts[0], (ctrl[-1] + ctrl[0]) / 2)  # starts at a midpoint
    assert (pts >= 0).all() and (pts <= 10).all()  # inside the control polygon's hull


def _stream(ds, micro, rank, world, skip=0, workers=0, batches=4):
    loader = make_loader(ds, micro, rank, world, seed=0, epoch=0, start=skip * micro * world, num_workers=workers)
    return [b["query_image"] for b in itertools.islice(iter(loader), batches)]


def test_stream_resumes_exactly_and_shards_by_rank():
    ds = PseudoPairs(size=32, curriculum_samples=64)
    full = _stream(ds, 2, 0, 1, batches=5)
    resumed = _stream(ds, 2, 0, 1, skip=3, batches=2)
    assert all(torch.equal(x, y) for x, y in zip(full[3:], resumed))
    with_workers = _stream(ds, 2, 0, 1, workers=2, batches=5)
    assert all(torch.equal(x, y) for x, y in zip(full, with_workers))
    r0, r1 = _stream(ds, 2, 0, 2, batches=1)[0], _stream(ds, 2, 1, 2, batches=1)[0]
    assert not torch.equal(r0, r1) and torch.equal(r0, full[0])  # rank 0 of 2 takes stream batch 0


def test_eval_split_is_hardest_and_separate():
    train, ev = PseudoPairs(size=32, split="train"), PseudoPairs(size=32, split="eval")
    assert not torch.equal(train.sample(0)["query_image"], ev.sample(0)["query_image"])
    assert int(ev.sample(0)["hints"].sum()) == 0
    with pytest.raises(ValueError, match="curriculum_samples"):
        PseudoPairs(curriculum_samples=0)
