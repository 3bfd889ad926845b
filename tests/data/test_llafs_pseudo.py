import itertools

import pytest
import torch

from segfast.data.llafs_pseudo import Curriculum, PseudoPairs, closed_bezier, make_pair
from segfast.data.loader import make_loader
from segfast.ops import mask_to_polar_polygons


def test_curriculum_schedule_follows_equations_2_and_3():
    """Supp A.2.3: a 100 -> 0 with b = a + 50, c 0 -> 50 with d = c + 50; M = 15 at the start, one
    less every N_p / 30 steps, 0 from N_p / 2 on."""
    c = Curriculum()
    assert c.at(0.0) == {"a": 100.0, "b": 150.0, "c": 0.0, "d": 50.0, "hints": 15}
    assert c.at(0.25) == {"a": 75.0, "b": 125.0, "c": 12.5, "d": 62.5, "hints": 8}
    assert c.at(1.0) == {"a": 0.0, "b": 50.0, "c": 50.0, "d": 100.0, "hints": 0}
    assert c.at(3.0) == c.at(1.0)  # past N_p the curriculum holds its final values
    hints = [c.at(n / 3000)["hints"] for n in range(3001)]  # N_p = 3000 steps: one hint less every 100
    assert hints[:100] == [15] * 100 and hints[100] == 14 and hints[1499] == 1 and set(hints[1500:]) == {0}
    assert Curriculum(a0=125, b0=175, c_end=25, d_end=75).at(0.5) == {
        "a": 62.5,
        "b": 112.5,
        "c": 12.5,
        "d": 62.5,
        "hints": 0,
    }  # Table 7's third setting


def test_the_hint_schedule_starts_at_v_minus_1():
    """Supp A.2.3 for V-point polygons (Fig. 5's ablation): M starts at V - 1 (the paper's 15 for
    16), falls by one every N_p / (2 (V - 1)) steps and is 0 from N_p / 2 on."""
    eight = PseudoPairs(size=32, curriculum_samples=1400, num_vertices=8)  # one hint less every 100
    hints = [eight.curriculum.at(n / 1400)["hints"] for n in range(1401)]
    assert hints[:100] == [7] * 100 and hints[100] == 6 and hints[699] == 1 and set(hints[700:]) == {0}
    first, half = eight.sample(0), eight.sample(700)
    assert first["hints"].shape == (8,) and int(first["hints"].sum()) == 7 and int(half["hints"].sum()) == 0
    assert first["query_polygons"].shape == (1, 8, 2) and first["support_polygons"][0].shape == (1, 8, 2)
    assert PseudoPairs().curriculum == Curriculum() and Curriculum().max_hints == 15  # the paper's 16 points
    assert int(make_pair(0, 0.0, num_vertices=8)["hints"].sum()) == 7
    assert PseudoPairs(num_vertices=8, curriculum={"max_hints": 3}).curriculum.max_hints == 3
    with pytest.raises(ValueError, match=r"max_hints \(15\) must be below num_vertices \(8\)"):
        make_pair(0, 0.0, curriculum=Curriculum(), num_vertices=8)


@pytest.mark.parametrize("progress", [0.0, 0.4, 0.8, 1.0])
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
        for qb in col["query_bg"]:  # the query's own foreground/background contrast follows [a, b] too
            assert bounds["a"] - 1e-9 <= (qb - col["query_fg"]).norm() <= bounds["b"] + 1e-9
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


def test_ablation_switches_of_the_curriculum_and_the_query(gen):
    """Table 6f holds the image or the polygon curriculum; Table 5 draws the query at random."""
    image_off, polygon_off = Curriculum(image=False), Curriculum(polygon=False)
    assert image_off.at(0.0) == {**Curriculum().at(1.0), "hints": 15}
    assert polygon_off.at(0.0) == {**Curriculum().at(0.0), "hints": 0}
    far = 0
    for seed in torch.randint(0, 2**40, (8,), generator=gen).tolist():
        col = make_pair(seed, 0.0, random_query=True)["colours"]
        far += float((col["query_fg"] - col["support_fg"]).norm()) > 50  # c, d = 0, 50 no longer hold
    assert far >= 2
    ds = PseudoPairs(size=32, random_query=True, curriculum={"polygon": False})
    assert int(ds.sample(0)["hints"].sum()) == 0
