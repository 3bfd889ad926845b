import itertools

import pytest
import torch

from segfast.models.llafs.matching import linear_assignment, match_polygons, reorder_ground_truth
from segfast.models.llafs.refine import RefinementNetwork
from segfast.ops import ohem_cross_entropy, rasterize_polygons


def brute_force(cost):
    rows, cols = cost.shape
    best = None
    if rows <= cols:
        for perm in itertools.permutations(range(cols), rows):
            total = sum(cost[i, j] for i, j in enumerate(perm))
            best = total if best is None or total < best else best
    else:
        for perm in itertools.permutations(range(rows), cols):
            total = sum(cost[i, j] for j, i in enumerate(perm))
            best = total if best is None or total < best else best
    return best


def test_hungarian_is_optimal(gen):
    for rows, cols in [(1, 1), (3, 3), (4, 6), (6, 4), (5, 5)]:
        cost = torch.rand(rows, cols, generator=gen, dtype=torch.float64)
        pairs = linear_assignment(cost)
        assert len(pairs) == min(rows, cols)
        assert len({i for i, _ in pairs}) == len(pairs) == len({j for _, j in pairs})
        assert abs(sum(cost[i, j] for i, j in pairs) - brute_force(cost)) < 1e-12


def test_reorder_follows_the_predictions(gen):
    gt = torch.rand(3, 16, 2, generator=gen) * 100
    pred = gt[[2, 0, 1]] + torch.randn(3, 16, 2, generator=gen) * 0.1
    assert match_polygons(pred, gt) == [(0, 2), (1, 0), (2, 1)]
    assert torch.equal(reorder_ground_truth(pred, gt), gt[[2, 0, 1]])
    assert torch.equal(reorder_ground_truth(pred[:1], gt), gt[[2, 0, 1]])  # unmatched keep their order


def test_refinement_network_trains_through_the_polygon_mask(gen):
    torch.manual_seed(0)
    net = RefinementNetwork(in_channels=12, dim=32, num_queries=4, num_layers=3, heads=2)
    feats = torch.randn(2, 12, 8, 8, generator=gen)
    polys = torch.tensor([[[10.0, 10.0], [50.0, 12.0], [40.0, 50.0]], [[5.0, 30.0], [60.0, 30.0], [30.0, 60.0]]])
    poly_masks = rasterize_polygons(polys, 64, 64)
    out = net(feats, poly_masks, (64, 64))
    assert out["logits"].shape == (2, 2, 64, 64) and len(out["layer_logits"]) == 3
    target = poly_masks.long()
    loss = ohem_cross_entropy(out["logits"], target, thresh=0.7, min_kept=200)
    assert torch.isfinite(loss)
    loss.backward()
    cross = net.layers[0].cross.multihead_attn.in_proj_weight.grad
    assert cross is not None and cross.abs().sum() > 0
    assert net.pixel_decoder[0].weight.grad.abs().sum() > 0


def test_refinement_has_the_papers_layer_counts():
    """Supp A.3: 6 convolutions in the pixel decoder and 3 attention (decoder) layers."""
    net = RefinementNetwork(in_channels=16, dim=32, num_queries=4)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in net.modules()) == 6 and len(net.layers) == 3


def test_the_first_layer_attends_only_inside_the_polygon(gen):
    """M masks the first layer's cross-attention: memory outside the polygon does not change what
    the queries read (it would, were the mask inverted or ignored)."""
    torch.manual_seed(0)
    net = RefinementNetwork(in_channels=8, dim=32, num_queries=4, num_layers=1, heads=2).eval()
    feats = torch.randn(1, 8, 8, 16, generator=gen)
    polygon = torch.zeros(1, 64, 128, dtype=torch.bool)
    polygon[:, 8:56, 0:32] = True  # the left quarter; the memory is at 1/4 scale, 16 x 32
    outside = torch.ones(16, 32, dtype=torch.bool)
    outside[2:14, 0:8] = False
    noise = 5 * torch.randn(16 * 32, 1, 32, generator=gen)
    outs, perturb = [], [False]

    def pre(module, args, kwargs):
        if not perturb[0]:
            return None
        memory = args[1] + noise * outside.flatten()[:, None, None]
        return (args[0], memory, *args[2:]), kwargs

    hooks = [
        net.layers[0].cross.register_forward_pre_hook(pre, with_kwargs=True),
        net.layers[0].cross.register_forward_hook(lambda m, i, o: outs.append(o.detach().clone())),
    ]
    for flag, mask in ((False, polygon), (True, polygon), (False, ~polygon), (True, ~polygon)):
        perturb[0] = flag
        net(feats, mask, (64, 128))
    for h in hooks:
        h.remove()
    torch.testing.assert_close(outs[0], outs[1])  # only inside the polygon is read
    assert not torch.allclose(outs[2], outs[3])  # the inverted mask reads the outside


def test_few_shot_scores_at_the_labels_size_with_ignore_and_averages_seeds():
    from segfast.metrics import FoldIoU
    from segfast.models.llafs.scoring import score_fold

    logits = torch.full((2, 4, 4), -1.0)
    logits[:, :, :2] = 1.0  # the left half, predicted at the 4 x 4 episode size
    gt = torch.zeros(2, 8, 10, dtype=torch.bool)
    gt[:, :, :5] = True
    ignore = torch.zeros_like(gt)
    ignore[0, :, 5] = True  # 255 pixels at the label's size
    gt[1, :, 5] = True  # ... or a wrong column, counted in sample 1
    batch = {
        "original_mask": gt,
        "original_ignore": ignore,
        "query_mask": torch.zeros(2, 4, 4, dtype=torch.bool),  # never read when the original is there
        "class_ids": [1, 1],
        "episode_run": [0, 1],
    }
    meter = FoldIoU([1], runs=2)
    score_fold(meter, {"logits": logits, "masks": logits > 0}, batch, 4)
    out = meter.compute()
    assert out["runs"] == [1.0, 40 / 48] and out["mIoU"] == pytest.approx((1 + 40 / 48) / 2)
    pooled = FoldIoU([1])
    pooled.update(gt[:, :, :], gt[:, :, :], [1, 1])
    assert pooled.compute()["mIoU"] == 1.0 and "runs" not in pooled.compute()
