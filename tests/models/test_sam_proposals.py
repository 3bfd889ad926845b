"""ProposalGenerator against segment-anything's SamAutomaticMaskGenerator on a tiny SAM."""

import numpy as np
import pytest
import torch

pytest.importorskip("segment_anything")
from segment_anything import SamAutomaticMaskGenerator  # noqa: E402

from segfast.models.sam import ProposalGenerator, load_sam, save_sam, tiny_sam  # noqa: E402
from tests.models.sam_fixtures import blob_image, local_sam  # noqa: E402

IMAGES = [blob_image(seed, 120 + 7 * seed, 200 - 11 * seed) for seed in range(3)]
SETTINGS = [
    dict(points_per_side=16),
    dict(points_per_side=8, crop_n_layers=1),
    dict(points_per_side=12, min_mask_region_area=30, points_per_batch=50),
    dict(points_per_side=8, pred_iou_thresh=0.0, stability_score_thresh=0.0),
]


@pytest.fixture(scope="module")
def sam():
    return local_sam()


def assert_same_records(sam, images, output_mode="coco_rle", **settings) -> list:
    """ProposalGenerator's records equal SamAutomaticMaskGenerator's, field for field, in order."""
    ours = ProposalGenerator(sam, output_mode=output_mode, **settings)
    theirs = SamAutomaticMaskGenerator(sam, output_mode=output_mode, **settings)
    records = []
    for image, proposals in zip(images, ours.generate_batch(images)):
        expected = theirs.generate(image)
        got = proposals.records(output_mode)
        assert len(got) == len(expected) > 0
        for a, b in zip(got, expected):  # same masks, same order, every field equal
            assert a.keys() == b.keys()
            for key in a:
                if output_mode == "binary_mask" and key == "segmentation":
                    assert np.array_equal(a[key], b[key])
                elif a[key] != a[key]:  # NaN: the stability score of an empty mask (0 / 0 in both)
                    assert b[key] != b[key], key
                else:
                    assert a[key] == b[key], key
        records.append(got)
    return records


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()))
@pytest.mark.parametrize("output_mode", ["coco_rle", "binary_mask"])
def test_same_records_as_segment_anything(sam, settings, output_mode):
    assert_same_records(sam, IMAGES, output_mode, **settings)
    assert ProposalGenerator(sam, **settings).generate(IMAGES[0]) is not None


def test_empty_masks_of_crops_as_segment_anything():
    """Without the stability filter empty masks survive; segment-anything boxes one at its crop's
    corner, so is_box_near_crop_edge drops it from a crop more than 20 px from the image's origin
    and keeps it (boxed at that corner) from one nearer."""
    sam = local_sam(levels=(0.5, 0.5, 0.6, 100.0))  # the third multimask output is always empty
    settings = dict(points_per_side=8, crop_n_layers=1, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    images = [IMAGES[0], blob_image(7, 40, 50)]  # 40x50: the second crop column starts at x = 17
    records = assert_same_records(sam, images, **settings)
    empties = [[r for r in recs if r["area"] == 0] for recs in records]
    assert all(empties)
    assert all(r["crop_box"][:2] == [0, 0] for r in empties[0])  # dropped from offset crops
    assert any(r["bbox"][0] > 0 for r in empties[1])  # kept from a crop that does not start at 0


def test_filters_do_work(sam):
    """The fixture exercises every filter: each setting removes some masks."""
    counts = {}
    for name, settings in {
        "none": dict(pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0),
        "iou": dict(stability_score_thresh=0.0, box_nms_thresh=1.0),
        "stability": dict(pred_iou_thresh=0.0, stability_score_thresh=0.97, box_nms_thresh=1.0),
        "nms": dict(pred_iou_thresh=0.0, stability_score_thresh=0.0),
    }.items():
        counts[name] = len(ProposalGenerator(sam, points_per_side=8, **settings).generate_batch(IMAGES[:1])[0])
    assert counts["iou"] < counts["none"] and counts["stability"] < counts["none"] and counts["nms"] < counts["none"]


def test_batched_encoder_gives_the_same_masks(sam):
    one = ProposalGenerator(sam, points_per_side=12).generate_batch(IMAGES)
    three = ProposalGenerator(sam, points_per_side=12, image_batch=3).generate_batch(IMAGES)
    for a, b in zip(one, three):
        assert torch.equal(a.packed, b.packed) and torch.equal(a.boxes, b.boxes)
        torch.testing.assert_close(a.iou_preds, b.iou_preds, rtol=1e-5, atol=1e-5)


def test_top_k_and_rle(sam):
    proposals = ProposalGenerator(sam, points_per_side=8).generate_batch(IMAGES[:1])[0]
    top = proposals.top_k_by_area(5)
    assert len(top) == 5 and torch.equal(top.area, proposals.area.sort(descending=True).values[:5])
    assert top.area.tolist() == [int(m.sum()) for m in top.masks()]
    assert len(proposals.top_k_by_area(10_000)) == len(proposals)


def test_random_tiny_sam_and_loading(tmp_path):
    """The plain random tiny SAM through the real loading path: same records (often few)."""
    path = save_sam(tiny_sam(seed=3), tmp_path / "sam_tiny.pth")
    sam = load_sam("tiny", path)
    settings = dict(points_per_side=8, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    ours = ProposalGenerator(sam, output_mode="coco_rle", **settings).generate(IMAGES[1])
    assert ours == SamAutomaticMaskGenerator(sam, output_mode="coco_rle", **settings).generate(IMAGES[1])
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        load_sam("vit_b", tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="model_type"):
        load_sam("vit_x", path)


def test_bad_arguments(sam):
    with pytest.raises(ValueError, match="points_per_side"):
        ProposalGenerator(sam, points_per_side=None)
    with pytest.raises(ValueError, match="output_mode"):
        ProposalGenerator(sam, output_mode="png")
    with pytest.raises(ValueError, match="points_per_batch"):
        ProposalGenerator(sam, points_per_batch=0)
    with pytest.raises(ValueError, match=r"images\[0\]"):
        ProposalGenerator(sam).generate_batch([np.zeros((4, 4), np.uint8)])
