import json

import numpy as np
import pytest
import torch

from segfast.data import collate
from segfast.data.fewshot import FewShotEpisodes, connected_components, fold_classes
from segfast.metrics import FoldIoU
from tests.data.layouts import coco20i, pascal_tree


def test_fold_classes():
    assert fold_classes("pascal", 2) == [11, 12, 13, 14, 15]
    coco = fold_classes("coco", 1)
    assert len(coco) == 20 and coco[:3] == [2, 6, 10] and coco[-1] == 78
    assert sorted(sum((fold_classes("coco", f) for f in range(4)), [])) == list(range(1, 81))
    with pytest.raises(ValueError, match="fold"):
        fold_classes("pascal", 4)
    with pytest.raises(ValueError, match="dataset"):
        fold_classes("ade", 0)


def test_connected_components_8_connectivity(gen):
    m = torch.zeros(9, 9, dtype=torch.bool)
    m[0:2, 0:2] = True
    m[2, 2] = True  # touches the first block diagonally: same component
    m[5:9, 4:9] = True  # a separate, larger block
    parts = connected_components(m)
    assert len(parts) == 2 and int(parts[0].sum()) == 20 and int(parts[1].sum()) == 5
    assert torch.equal(parts[0] | parts[1], m) and not (parts[0] & parts[1]).any()
    rnd = torch.rand(20, 20, generator=gen) < 0.3
    assert torch.equal(torch.stack(connected_components(rnd)).sum(0).bool(), rnd)
    assert connected_components(torch.zeros(3, 3, dtype=torch.bool)) == []


def test_pascal_episodes(tmp_path, gen):
    pascal_tree(tmp_path, gen)
    (tmp_path / "attr.json").write_text(json.dumps({"bicycle": ["two wheels", "a frame"]}))
    ds = FewShotEpisodes(
        tmp_path,
        "pascal",
        fold=0,
        shots=2,
        split="val",
        size=40,
        episodes=6,
        min_object_area=4,
        attributes=str(tmp_path / "attr.json"),
    )
    assert ds.classes == [1, 2]
    for i in range(len(ds)):
        s = ds[i]
        assert s["support_images"].shape == (2, 3, 40, 40) and s["support_masks"].shape == (2, 40, 40)
        assert s["class_ids"] in (1, 2) and s["query_mask"].any() and s["query_ignore"].any()
        assert not (s["query_mask"] & s["query_ignore"]).any()
        assert all(m.any() for m in s["support_masks"])
        assert s["query_polygons"].shape == (2, 16, 2)  # the block and the small part, largest first
        assert s["attributes"] == (["two wheels", "a frame"] if s["class_names"] == "bicycle" else [])
    a, b = ds[3], ds[3]
    assert torch.equal(a["query_image"], b["query_image"])  # episodes are deterministic
    batch = collate([ds[0], ds[1]])
    assert batch["query_image"].shape == (2, 3, 40, 40) and len(batch["class_ids"]) == 2
    train = FewShotEpisodes(tmp_path, "pascal", fold=0, split="train", size=32, episodes=2)
    assert train.classes == [7]


def test_pascal_errors(tmp_path, gen):
    pascal_tree(tmp_path, gen)
    with pytest.raises(ValueError, match="shots"):
        FewShotEpisodes(tmp_path, shots=0)
    with pytest.raises(ValueError, match="needs shots"):
        FewShotEpisodes(tmp_path, shots=5, size=32)
    with pytest.raises(FileNotFoundError, match="root"):
        FewShotEpisodes(tmp_path / "missing")


def test_coco_episodes_match_pycocotools(tmp_path, gen):
    mask_utils = pytest.importorskip("pycocotools.mask")
    images, anns = coco20i(tmp_path, gen)
    ds = FewShotEpisodes(tmp_path, "coco", fold=0, shots=1, size=30, episodes=3, min_object_area=0)
    assert ds.classes == [17]
    src = ds.source
    for i in range(4):
        union, _, objects = src.masks(i, 17)
        ref = [
            torch.from_numpy(mask_utils.decode(mask_utils.frPyObjects(a["segmentation"], 30, 40)).any(2))
            for a in anns
            if a["image_id"] == i
        ]
        assert all(torch.equal(o, r) for o, r in zip(objects, ref))
    s = ds[0]
    assert s["class_names"] == "dog" and s["query_polygons"].shape[0] <= 2


def test_fold_iou():
    meter = FoldIoU([1, 2, 3])
    pred = torch.zeros(3, 4, 4, dtype=torch.bool)
    gt = torch.zeros(3, 4, 4, dtype=torch.bool)
    pred[0, :2] = True
    gt[0, :1] = True  # class 1: I 4, U 8
    pred[1, :1] = True
    gt[1, :1] = True  # class 2: I 4, U 4
    pred[2, :1] = True
    gt[2, 1:2] = True  # class 1 again: I 0, U 8
    ignore = torch.zeros_like(gt)
    ignore[2, 1] = True  # ... but its gt row is ignored: U 4
    meter.update(pred, gt, [1, 2, 1], ignore)
    out = meter.compute()
    assert out["per_class"][1] == pytest.approx(4 / 12) and out["per_class"][2] == 1.0
    assert np.isnan(out["per_class"][3]) and out["mIoU"] == pytest.approx((4 / 12 + 1) / 2)
    with pytest.raises(ValueError, match="class 9"):
        meter.update(pred[:1], gt[:1], [9])
