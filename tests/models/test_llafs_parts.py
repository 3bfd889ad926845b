import itertools

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
