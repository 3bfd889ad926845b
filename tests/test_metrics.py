import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from segfast.metrics import IOU_SCALE, IoUMeter, MIoUMeter, NcIoUMeter
from segfast.ops import pack_masks


def masks_from(rows):
    return torch.tensor(rows, dtype=torch.bool)


def test_giou_ciou_hand_computed():
    # sample 0: I=1, U=3 -> 1/3; sample 1: both empty -> 1; sample 2: I=2, U=2 -> 1
    pred = masks_from([[[1, 1, 0, 0]], [[0, 0, 0, 0]], [[0, 0, 1, 1]]])
    gt = masks_from([[[0, 1, 1, 0]], [[0, 0, 0, 0]], [[0, 0, 1, 1]]])
    meter = IoUMeter()
    meter.update(pred, gt)
    out = meter.compute()
    assert out["samples"] == 3
    assert out["gIoU"] == pytest.approx((1 / 3 + 1 + 1) / 3, abs=1e-9)
    assert out["cIoU"] == 3 / 5
    meter.update(pack_masks(pred), pack_masks(gt))  # packed input counts the same
    assert meter.compute()["cIoU"] == 6 / 10


@pytest.mark.parametrize("meter", [IoUMeter(), NcIoUMeter((8, 8))])
def test_meters_check_sizes_before_packing_or_resizing(meter):
    """4-wide and 5-wide masks pack into the same 64-bit word, and resizing makes any two sizes
    equal: the sizes are compared first (a 4x4 vs 4x5 pair once scored gIoU 0.8)."""
    pred, gt = torch.ones(1, 4, 4, dtype=torch.bool), torch.ones(1, 4, 5, dtype=torch.bool)
    with pytest.raises(ValueError, match="same mask size"):
        meter.update(pred, gt)
    with pytest.raises(ValueError, match="same mask size"):
        meter.update(pack_masks(pred), torch.ones(1, 5, 4, dtype=torch.bool))
    assert meter.state.sum() == 0


def test_giou_ciou_against_plain_loop(gen):
    meter = IoUMeter()
    inters, unions, ious = 0, 0, []
    for _ in range(5):
        pred = torch.rand(7, 13, 29, generator=gen) < torch.rand(7, 1, 1, generator=gen)
        gt = torch.rand(7, 13, 29, generator=gen) < torch.rand(7, 1, 1, generator=gen)
        gt[0] = False
        pred[0] = False
        meter.update(pred, gt)
        for p, g in zip(pred, gt):
            i, u = int((p & g).sum()), int((p | g).sum())
            inters, unions = inters + i, unions + u
            ious.append(1.0 if u == 0 else i / u)
    out = meter.compute()
    assert out["cIoU"] == inters / unions
    assert out["gIoU"] == pytest.approx(sum(ious) / len(ious), abs=1e-9)


def test_counts_do_not_overflow():
    # uint8 or float32 accumulators break here: 4097 x 4097 full masks, many times
    meter = IoUMeter()
    full = torch.ones(1, 4097, 4097, dtype=torch.bool)
    for _ in range(3):
        meter.update(full, full)
    assert int(meter.state[0, 0]) == 3 * 4097 * 4097
    assert meter.compute()["cIoU"] == 1.0


def test_per_round():
    meter = IoUMeter(num_rounds=2)
    a = masks_from([[[1, 1, 0, 0]]])
    b = masks_from([[[1, 0, 0, 0]]])
    meter.update(a, a, round=0)
    meter.update(a, b, round=1)
    out = meter.compute()
    assert out["round0/cIoU"] == 1.0 and out["round1/cIoU"] == 0.5 and out["cIoU"] == 3 / 4
    with pytest.raises(ValueError, match="round"):
        meter.update(a, a, round=2)


def test_nciou_resizes_before_counting():
    big = torch.zeros(1, 8, 8, dtype=torch.bool)
    big[0, :4] = True
    small = torch.zeros(1, 2, 2, dtype=torch.bool)
    small[0, 0] = True
    meter = NcIoUMeter(size=(4, 4))
    meter.update(big, big)
    meter.update(small, torch.zeros_like(small))
    out = meter.compute()
    # at 4x4: sample 0 I=U=8; sample 1 I=0, U=8
    assert out["ncIoU"] == 8 / 16 and "cIoU" not in out


def test_miou_matches_intersection_and_union_rule():
    pred = torch.tensor([[0, 1, 1, 2], [2, 2, 0, 1]])
    target = torch.tensor([[0, 1, 2, 2], [255, 2, 0, 0]])
    meter = MIoUMeter(num_classes=4)
    meter.update(pred, target)
    out = meter.compute()
    # pixel (1, 0) has target 255 and is dropped, prediction included
    # class 0: I=2, pred area 2, target area 3 -> U=3
    # class 1: I=1, pred area 3, target area 1 -> U=3
    # class 2: I=2, pred area 2, target area 3 -> U=3
    # class 3: absent -> NaN, left out of the mean
    iou = out["per_class_iou"]
    assert iou[:3] == [2 / 3, 1 / 3, 2 / 3] and iou[3] != iou[3]
    assert out["mIoU"] == pytest.approx((2 / 3 + 1 / 3 + 2 / 3) / 3)


def _worker(rank, world, init_file, shards, result_file):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        meter, miou = IoUMeter(num_rounds=2), MIoUMeter(num_classes=5)
        for k, (pred, gt, labels_p, labels_t) in enumerate(shards):
            if k % world == rank:
                meter.update(pred, gt, round=k % 2)
                miou.update(labels_p, labels_t)
        meter.sync()
        miou.sync()
        if rank == 0:
            torch.save((meter.compute(), miou.compute()), result_file)
    finally:
        dist.destroy_process_group()


def test_two_process_gloo_merge_equals_one_process(gen):
    shards = []
    for _ in range(6):
        pred = torch.rand(5, 11, 17, generator=gen) < 0.4
        gt = torch.rand(5, 11, 17, generator=gen) < 0.4
        labels_p = torch.randint(0, 6, (9, 9), generator=gen)
        labels_t = torch.randint(0, 5, (9, 9), generator=gen)
        labels_t[0] = 255
        shards.append((pred, gt, labels_p, labels_t))
    single, single_miou = IoUMeter(num_rounds=2), MIoUMeter(num_classes=5)
    for k, (pred, gt, lp, lt) in enumerate(shards):
        single.update(pred, gt, round=k % 2)
        single_miou.update(lp, lt)
    with tempfile.TemporaryDirectory() as tmp:
        result = os.path.join(tmp, "result.pt")
        mp.spawn(_worker, args=(2, os.path.join(tmp, "init"), shards, result), nprocs=2, join=True)
        merged, merged_miou = torch.load(result)
    assert merged == single.compute()  # exact: integer state, whatever the process count
    assert merged_miou["mIoU"] == single_miou.compute()["mIoU"]


def test_fixed_point_unit():
    assert IOU_SCALE == 2**32
