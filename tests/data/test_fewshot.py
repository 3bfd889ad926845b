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


def _hsnet_lists(root, truth):
    """HSNet's layout: trn/fold<i> and val/fold<i> hold the pairs of fold i's own classes."""
    for sub in ("trn", "val"):
        (root / "splits" / "pascal" / sub).mkdir(parents=True)
        for fold in range(4):
            fold_classes = range(5 * fold + 1, 5 * fold + 6)
            lines = [f"{n}__{c}" for n, (c, _) in sorted(truth.items()) if c in fold_classes]
            if sub == "trn" and fold == 0:
                lines = lines[:4]  # training images of fold 0's classes: never read when fold 0 is tested
            (root / "splits" / "pascal" / sub / f"fold{fold}.txt").write_text("".join(f"{x}\n" for x in lines))


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


def test_episodes_carry_v_point_polygons(tmp_path, gen):
    """data.options.num_vertices (LLaFS Fig. 5): 8 rays at 45°, every other ray of the 16."""
    pascal_tree(tmp_path, gen)
    sixteen = FewShotEpisodes(tmp_path, "pascal", size=40, episodes=2, min_object_area=4)[1]
    eight = FewShotEpisodes(tmp_path, "pascal", size=40, episodes=2, min_object_area=4, num_vertices=8)[1]
    assert eight["query_polygons"].shape == (2, 8, 2)
    assert torch.equal(eight["query_polygons"], sixteen["query_polygons"][:, ::2])
    assert torch.equal(eight["support_polygons"][0], sixteen["support_polygons"][0][:, ::2])
    empty = FewShotEpisodes(tmp_path, "pascal", size=40, episodes=2, min_object_area=10**6, num_vertices=8)[0]
    assert empty["query_polygons"].shape == (0, 8, 2)
    with pytest.raises(ValueError, match="num_vertices must be >= 3"):
        FewShotEpisodes(tmp_path, num_vertices=2)


def test_split_lists_train_on_the_other_folds(tmp_path, gen):
    """HSNet's trn/fold0 holds fold 0's own (novel) classes: training on fold 0 reads trn/fold1-3
    and testing reads val/fold0; without the lists VOC's val.txt keeps train and test apart."""
    truth = pascal_tree(tmp_path, gen)
    plain_train = FewShotEpisodes(tmp_path, "pascal", fold=0, split="train", size=32)
    plain_val = FewShotEpisodes(tmp_path, "pascal", fold=0, split="val", size=32)
    assert plain_train.source.pairs == [("img2", 7), ("img5", 7)] and len(plain_train) == 2
    assert {n for n, _ in plain_val.source.pairs}.isdisjoint({n for n, _ in plain_train.source.pairs})
    _hsnet_lists(tmp_path, truth)
    train = FewShotEpisodes(tmp_path, "pascal", fold=0, split="train", size=32)
    assert train.source.pairs == [("img2", 7), ("img5", 7)] and train.classes == [7]
    val = FewShotEpisodes(tmp_path, "pascal", fold=0, split="val", size=32)
    assert sorted(val.source.pairs) == sorted((n, c) for n, (c, _) in truth.items() if c in (1, 2))
    fold1 = FewShotEpisodes(tmp_path, "pascal", fold=1, split="train", size=32, shots=1)
    assert fold1.classes == [1, 2] and len(fold1.source.pairs) == 4  # fold 0's trn list: its four lines
    (tmp_path / "splits" / "pascal" / "trn" / "fold3.txt").unlink()
    with pytest.raises(FileNotFoundError, match="fold3.txt"):
        FewShotEpisodes(tmp_path, "pascal", fold=0, split="train")
    (tmp_path / "ImageSets" / "Segmentation" / "val.txt").unlink()
    import shutil

    shutil.rmtree(tmp_path / "splits")
    with pytest.raises(FileNotFoundError, match="val.txt"):
        FewShotEpisodes(tmp_path, "pascal", fold=0, split="train")


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


def test_training_augmentation_keeps_the_support_foreground_and_moves_tables(gen):
    """Supp B: random resize, noise padding, random crop (never cutting a support's foreground),
    horizontal flip; the masks and the table's polygons move with the image."""
    from segfast.data.fewshot import _box, augment

    size = 64
    img = torch.rand(3, size, size, generator=gen)
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[2:21, 40:63] = True  # near the top right corner: a careless crop would cut it
    ignore = torch.zeros_like(mask)
    table = {
        "attributes": ["a"],
        "regions": [
            {"polygon": torch.tensor([[40.0, 2.0], [63.0, 2.0], [63.0, 21.0], [40.0, 21.0]]), "attributes": ["a"]}
        ],
    }
    flips, scales = set(), set()
    for seed in range(24):
        g = torch.Generator().manual_seed(seed)
        out_img, out_mask, out_ignore, _, out_table = augment(g, img, mask, ignore, None, table, support=True)
        assert out_img.shape == (3, size, size) and out_mask.shape == (size, size)
        x0, y0, x1, y1 = _box(out_mask)
        scale = (x1 - x0) / 23
        scales.add(round(scale, 1))
        area = int(out_mask.sum())
        assert abs(area - 19 * 23 * scale**2) <= 2 * (19 + 23) * scale + 4  # all of it, resized
        poly = out_table["regions"][0]["polygon"]
        assert abs(poly[:, 0].min() - x0) <= 1.01 and abs(poly[:, 0].max() - x1) <= 1.01
        assert abs(poly[:, 1].min() - y0) <= 1.01 and abs(poly[:, 1].max() - y1) <= 1.01
        flips.add(bool(poly[0, 0] > poly[1, 0]))  # the first corner was the left one
        assert not (out_mask & out_ignore).any()
    assert flips == {True, False} and len(scales) > 3


def test_training_episodes_are_drawn_anew_every_epoch(tmp_path, gen):
    pascal_tree(tmp_path, gen)
    ds = FewShotEpisodes(tmp_path, "pascal", fold=0, split="train", size=32)
    first = ds[0]
    assert torch.equal(first["query_image"], ds[0]["query_image"])  # the same within an epoch
    ds.set_epoch(1)
    assert not torch.equal(first["query_image"], ds[0]["query_image"])  # augmentation drawn anew
    plain = FewShotEpisodes(tmp_path, "pascal", fold=0, split="train", size=32, augment=False)
    val = FewShotEpisodes(tmp_path, "pascal", fold=0, split="val", size=32, episodes=2, seeds=3)
    assert len(val) == 6 and [val[i]["episode_run"] for i in range(6)] == [0, 0, 1, 1, 2, 2]
    assert "original_mask" in val[0] and val[0]["original_mask"].shape == (40, 50)
    assert "original_mask" not in plain[0]
