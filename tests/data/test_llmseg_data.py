"""LLM-Seg's data on tiny fake layouts: the geometry (longest side + padding, proposals at SAM's
resolution, IoU/IoP targets from the original target), every reader (ReasonSeg, refCOCO, the
released LLM-Seg40K, ADE20K / COCO-Stuff as the semantic source), the per-epoch draws and the
training recipe of the shipped config."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segfast.data import DATASETS
from segfast.data.referring import ReferringSegmentation
from segfast.frames import sam_frame
from segfast.ops import unpack_masks
from tests.data import layouts
from tests.data.llmseg_layouts import box, proposals_json, rle, write_llmseg40k

pytest.importorskip("pycocotools")


def _square(y0, x0, y1, x1):
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def _reasonseg(root: Path, size=(40, 60), split="train") -> Path:
    (root / split).mkdir(parents=True)
    Image.fromarray(np.full((*size, 3), 70, np.uint8)).save(root / split / "a.jpg")
    (root / split / "a.json").write_text(
        json.dumps(
            {
                "text": ["what holds the drink?", "which thing can carry water?", "where to pour tea?", "a fourth"],
                "is_sentence": True,
                "shapes": [
                    {"label": "target", "points": _square(10, 10, 20, 30)},
                    {"label": "ignore", "points": _square(0, 0, 5, 5)},
                ],
            }
        )
    )
    return root


def test_frame_is_the_longest_side_resized_and_padded_not_stretched(tmp_path):
    root = _reasonseg(tmp_path / "rs")
    proposals_json(tmp_path / "p" / "train" / "a.json", np.stack([box(40, 60, 10, 10, 20, 30)]))
    s = ReferringSegmentation("reasonseg", str(root), "train", str(tmp_path / "p"), image_size=30)[0]
    image = np.asarray(Image.open(root / "train" / "a.jpg").convert("RGB"))
    frame, valid = sam_frame(image, 30)
    assert s["valid_size"].tolist() == [20, 30] == list(valid)
    torch.testing.assert_close(s["image"], frame)
    assert (s["image"][:, 20:] == 0).all() and (s["image"][:, :20] != 0).all()  # padded below, not stretched


def test_targets_are_counted_at_the_proposals_resolution_from_the_original_target(tmp_path):
    """SAM ran on the image scaled by 1/2: the 40x60 target is resized there (nearest, centres
    aligned) and every proposal's IoU and IoP counted at 20x30; the proposals are padded square."""
    root = _reasonseg(tmp_path / "rs")
    half = np.stack([box(20, 30, 5, 5, 10, 15), box(20, 30, 5, 5, 10, 10), box(20, 30, 0, 0, 20, 30)])
    proposals_json(tmp_path / "p" / "train" / "a.json", half)
    s = ReferringSegmentation("reasonseg", str(root), "train", str(tmp_path / "p"), image_size=30)[0]
    assert s["proposal_size"].tolist() == [20, 30] and s["proposals"].shape == (3, 30, 8)
    order = [int(m.sum()) for m in half]  # the file is largest first: full, 50-px target, 25-px half
    assert sorted(order, reverse=True) == [600, 50, 25]
    dense = unpack_masks(s["proposals"], 30)
    assert not dense[:, 20:].any() and dense[:, :20].sum().item() == 675
    rows = len(s["conversations"])
    assert s["gt_iou"].shape == (rows, 3)
    for r in range(rows):  # every question of one ReasonSeg image has the same target
        assert s["gt_iou"][r].tolist() == pytest.approx([50 / 600, 1.0, 0.5])
        assert s["gt_iop"][r].tolist() == pytest.approx([50 / 600, 1.0, 1.0])
    with pytest.raises(ValueError, match="not the size"):
        proposals_json(tmp_path / "p" / "train" / "a.json", np.stack([box(30, 30, 0, 0, 5, 5)]))
        ReferringSegmentation("reasonseg", str(root), "train", str(tmp_path / "p"))[0]


def test_the_largest_max_proposals_are_kept_largest_first(tmp_path):
    """A file written smallest first: max_proposals=2 keeps the two largest by area, largest first
    (the authors' SAM_Mask_Reader sorts by area and keeps the first 50)."""
    root = _reasonseg(tmp_path / "rs")
    masks = [box(20, 30, 0, 0, 2, 2), box(20, 30, 0, 0, 20, 30), box(20, 30, 0, 0, 3, 3), box(20, 30, 0, 0, 10, 10)]
    anns = [{"segmentation": rle(m), "area": int(m.sum())} for m in masks]
    path = tmp_path / "p" / "train" / "a.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"height": 20, "width": 30, "annotations": anns}))
    s = ReferringSegmentation("reasonseg", str(root), "train", str(tmp_path / "p"), image_size=30, max_proposals=2)[0]
    assert unpack_masks(s["proposals"], 30).sum((1, 2)).tolist() == [600, 100]
    assert s["gt_iou"].shape[-1] == 2


def test_reasonseg_training_draws_up_to_three_questions_anew_each_epoch(tmp_path):
    root = _reasonseg(tmp_path / "rs")
    proposals_json(tmp_path / "p" / "train" / "a.json", np.stack([box(40, 60, 10, 10, 20, 30)]))
    ds = ReferringSegmentation("reasonseg", str(root), "train", str(tmp_path / "p"), length=1)
    draws = []
    for epoch in range(4):
        ds.set_epoch(epoch)
        s = ds[0]
        assert len(s["conversations"]) == 3 and all(len(c) == 1 for c in s["conversations"])
        questions = [c[0]["question"] for c in s["conversations"]]
        assert all(q.startswith("<image>\n") and ("Please" in q) for q in questions)  # LISA's long templates
        assert all(c[0]["answer"].count("[SEG]") == 1 for c in s["conversations"])
        draws.append(questions)
    ds.set_epoch(2)
    assert [c[0]["question"] for c in ds[0]["conversations"]] == draws[2]
    assert len({tuple(d) for d in draws}) > 1
    assert "original_masks" not in s
    # evaluation: text[0] with LISA's fixed round, the target and ignored pixels at the original size
    ev = ReferringSegmentation("reasonseg", str(root), "eval", str(tmp_path / "p"), eval_split="train")
    s = ev[0]
    assert s["conversations"] == [
        [{"question": "<image>\n what holds the drink? Please output segmentation mask.", "answer": "[SEG]."}]
    ]
    # LISA's get_mask_from_json draws each shape with its outline: 11 x 21 and 6 x 6 pixels
    assert s["original_masks"].shape == (1, 40, 60) and int(s["original_masks"].sum()) == 231
    assert int(s["original_ignore"].sum()) == 36


def test_refcoco_pools_the_sentences_of_an_image(tmp_path):
    from tests.models.seg_family import write_refer

    image = np.zeros((40, 60, 3), np.uint8)
    write_refer(
        tmp_path / "rc",
        image,
        [
            {"split": "train", "ann_id": 7, "image_id": 1, "sentences": [{"sent": "Left Block"}, {"sent": "red"}]},
            {"split": "train", "ann_id": 8, "image_id": 1, "sentences": [{"sent": "right one"}]},
        ],
        [
            {"id": 7, "segmentation": [sum(_square(10, 10, 20, 30), [])]},
            {"id": 8, "segmentation": [sum(_square(10, 40, 20, 50), [])]},
        ],
    )
    proposals_json(
        tmp_path / "p" / "images" / "train2014" / "c.json",
        np.stack([box(40, 60, 10, 10, 20, 30), box(40, 60, 10, 40, 20, 50)]),
    )
    ds = ReferringSegmentation("refcoco", str(tmp_path / "rc"), "train", str(tmp_path / "p"), questions_per_image=5)
    assert len(ds) == 1  # one image
    s = ds[0]
    names = {"left block": 0, "red": 0, "right one": 1}
    asked = [next(n for n in names if n in c[0]["question"]) for c in s["conversations"]]
    assert sorted(asked) == sorted(names)  # 3 sentences, fewer than 5: all of them, lower-cased
    for row, name in enumerate(asked):
        assert s["gt_iou"][row].argmax().item() == names[name] and s["gt_iou"][row].max() == 1.0


def test_llmseg40k_reads_the_released_format_and_both_image_roots(tmp_path):
    root = tmp_path / "lisa_dataset"
    cup, table = box(30, 40, 0, 0, 10, 10), box(30, 40, 10, 10, 30, 40)
    write_llmseg40k(
        root,
        "train",
        {
            "000000000009.jpg": (
                "coco",
                (30, 40),
                [("What holds coffee?", "cup", cup), ("Where to eat?", "table", table)],
            ),
            "ego_1.jpg": ("ego_objects", (30, 40), [("What shows the time?", "clock", cup)]),
        },
    )
    proposals_json(tmp_path / "p" / "coco" / "train2017" / "000000000009.json", np.stack([table, cup]))
    proposals_json(tmp_path / "p" / "ego_objects" / "images" / "ego_1.json", np.stack([cup]))
    ds = ReferringSegmentation("llmseg40k", str(root), "train", str(tmp_path / "p"))
    assert len(ds) == 3  # every question is a sample (the authors' LLMSegDataset)
    questions = [ds[i]["conversations"][0][0]["question"] for i in range(3)]
    assert [q.split("<image>\n")[1].split(" Please")[0] for q in questions] == [
        "What holds coffee?",
        "Where to eat?",
        "What shows the time?",
    ]
    assert ds[0]["gt_iou"].tolist() == [[0.0, 1.0]] and ds[1]["gt_iou"].tolist() == [[1.0, 0.0]]
    assert ds[2]["gt_iou"].tolist() == [[1.0]]
    # split "val" reads validation.json; image_roots moves a folder
    write_llmseg40k(tmp_path / "other", "validation", {"e.jpg": ("ego_objects", (30, 40), [("q?", "cup", cup)])})
    (tmp_path / "moved").mkdir()
    (tmp_path / "other" / "ego_objects" / "images" / "e.jpg").rename(tmp_path / "moved" / "e.jpg")
    proposals_json(tmp_path / "p2" / "e.json", np.stack([cup]))
    moved = {"ego_objects": str(tmp_path / "moved")}
    ev = ReferringSegmentation("llmseg40k", str(tmp_path / "other"), "eval", str(tmp_path / "p2"), image_roots=moved)
    assert len(ev) == 1 and ev[0]["original_masks"].shape == (1, 30, 40)
    with pytest.raises(FileNotFoundError, match="LLMSeg-40K"):
        ReferringSegmentation("llmseg40k", str(root), "eval", str(tmp_path / "p"))
    data = json.loads((root / "LLMSeg-40K" / "train.json").read_text())
    data["ego_1.jpg"]["from_dataset"] = "lvis"
    (root / "LLMSeg-40K" / "train.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="image_roots"):
        ReferringSegmentation("llmseg40k", str(root), "train", str(tmp_path / "p"))


def _ade(root: Path, label: np.ndarray) -> Path:
    for sub in ("training", "validation"):
        (root / "images" / sub).mkdir(parents=True)
        (root / "annotations" / sub).mkdir(parents=True)
        Image.fromarray(np.full((*label.shape, 3), 50, np.uint8)).save(root / "images" / sub / "a.jpg")
        Image.fromarray(label.astype(np.uint8)).save(root / "annotations" / sub / "a.png")
    names = ["wall", "sky", "floor", "tree", "ceiling"]
    (root / "objectInfo150.csv").write_text(
        "Idx,Ratio,Train,Val,Name\n" + "".join(f"{i + 1},0.1,1,1,{n}\n" for i, n in enumerate(names))
    )
    return root


def test_semantic_source_asks_up_to_three_present_classes_with_their_pixels(tmp_path):
    label = np.zeros((20, 30), np.int64)  # ADE20K: 0 is "other" (ignored), k is class k-1
    label[:10, :15], label[:10, 15:], label[10:, :15], label[10:, 15:25] = 1, 2, 3, 4
    root = _ade(tmp_path / "ade", label)
    props = np.stack([label == k for k in (1, 2, 3, 4)] + [label > 0])
    proposals_json(tmp_path / "p" / "images" / "training" / "a.json", props)
    ds = DATASETS["referring"](
        {"format": "ade20k", "root": str(root), "proposals": str(tmp_path / "p"), "image_size": 32}, "train", 0
    )
    s = ds[0]
    assert len(s["conversations"]) == 3
    classes = ["wall", "sky", "floor", "tree"]
    for row, conv in enumerate(s["conversations"]):
        question = conv[0]["question"]
        (name,) = [c for c in classes if f" {c} " in question]
        best = s["gt_iou"][row].argmax().item()
        picked = unpack_masks(s["proposals"][best : best + 1], 30)[0, :20]
        assert torch.equal(picked, torch.from_numpy(label == classes.index(name) + 1))
        assert s["gt_iou"][row].max() == 1.0
    # COCO-Stuff names holding "-" are never asked (LISA's loader sets them to 255)
    coco = tmp_path / "coco"
    for sub in ("images/train2017", "stuffthingmaps_trainval2017/train2017"):
        (coco / sub).mkdir(parents=True)
    Image.fromarray(np.full((20, 30, 3), 50, np.uint8)).save(coco / "images" / "train2017" / "b.jpg")
    stuff = np.full((20, 30), 255, np.uint8)
    stuff[:, :10], stuff[:, 10:] = 0, 1  # value v is label id v + 1
    Image.fromarray(stuff).save(coco / "stuffthingmaps_trainval2017" / "train2017" / "b.png")
    (coco / "labels.txt").write_text("0: unlabeled\n1: person\n2: wall-other\n")
    proposals_json(tmp_path / "pc" / "images" / "train2017" / "b.json", np.stack([stuff == 0, stuff == 1]))
    options = {"format": "cocostuff", "root": str(coco), "proposals": str(tmp_path / "pc")}
    ds = DATASETS["referring"](options, "train", 0)
    for epoch in range(3):
        ds.set_epoch(epoch)
        s = ds[0]
        assert [" person " in c[0]["question"] for c in s["conversations"]] == [True]


def test_mapillary_is_a_semantic_source(tmp_path):
    """The authors' sem_seg group holds Mapillary Vistas (training.py --sem_seg_data)."""
    root = layouts.mapillary(tmp_path / "m", "training")
    label = np.array([[0, 1, 2, 2, 1, 0]] * 4)
    proposals_json(tmp_path / "p" / "training" / "images" / "m.json", np.stack([label == k for k in (0, 1, 2)]))
    ds = DATASETS["referring"]({"format": "mapillary", "root": str(root), "proposals": str(tmp_path / "p")}, "train", 0)
    s = ds[0]
    classes = ["bird", "ground animal", "curb"]
    assert len(s["conversations"]) == 3
    for row, conv in enumerate(s["conversations"]):
        (k,) = [k for k, c in enumerate(classes) if f" {c} " in conv[0]["question"]]
        assert s["gt_iou"][row].tolist() == [float(j == k) for j in range(3)]


def test_missing_inputs_are_named(tmp_path):
    root = _reasonseg(tmp_path / "rs")
    with pytest.raises(ValueError, match="proposals"):
        ReferringSegmentation("reasonseg", str(root), "train", "")
    with pytest.raises(FileNotFoundError, match="segfast proposals"):
        ReferringSegmentation("reasonseg", str(root), "train", str(tmp_path / "nothing"))[0]
    with pytest.raises(FileNotFoundError, match="root"):
        ReferringSegmentation("reasonseg", str(tmp_path / "nope"), "train", str(tmp_path))
    with pytest.raises(ValueError, match="questions_per_image"):
        ReferringSegmentation(questions_per_image=0)


def test_shipped_config_is_the_papers_recipe():
    from segfast.models import MODELS
    from segfast.train import load_config

    cfg = load_config(Path(__file__).parents[2] / "configs" / "llmseg.yaml")
    assert cfg.model.name in MODELS and cfg.model.options["image_size"] == 896
    assert cfg.model.options["selection"] == "iop_threshold"
    assert (cfg.model.lora.r, cfg.model.lora.alpha, cfg.model.lora.target_modules) == (8, 16, ["q_proj", "v_proj"])
    members, rates = cfg.data.options["datasets"], cfg.data.options["rates"]
    group = {"ade20k": "sem", "cocostuff": "sem", "mapillary": "sem", "refcoco": "refer", "reasonseg": "reason"}
    share, names, rate = {}, {}, {}
    for m, r in zip(members, rates):
        assert m["name"] == "referring" and m["options"]["image_size"] == 896
        assert m["options"]["max_proposals"] == 50 and m["options"]["questions_per_image"] == 3
        g = group[m["options"]["format"]]
        share[g] = share.get(g, 0) + r
        names.setdefault(g, set()).add(m["options"].get("dataset", m["options"]["format"]))
        rate.setdefault(g, set()).add(r)
    assert share == {"sem": 9, "refer": 3, "reason": 1}  # LISA's sem_seg || refer_seg || reason_seg at 9:3:1
    # the authors' training.py defaults, less pascal_part and paco_lvis (no reader here); uniform within a group
    assert names == {
        "sem": {"ade20k", "cocostuff", "mapillary"},
        "refer": {"refclef", "refcoco", "refcoco+", "refcocog"},
        "reason": {"reasonseg"},
    }
    assert all(len(r) == 1 for r in rate.values())
    o, run = cfg.optim, cfg.run
    assert (o.lr, o.warmup_steps, o.schedule, o.weight_decay, tuple(o.betas), o.clip_grad) == (
        1e-4,
        100,
        "linear",
        0.0,
        (0.9, 0.95),
        1.0,
    )
    assert (run.total_steps, run.global_batch_size) == (5000, 20)
    from segfast.train.schedule import lr_factor

    assert lr_factor(99, 5000, o) == 1.0 and lr_factor(2550, 5000, o) == pytest.approx(0.5, abs=1e-3)


def test_target_resize_is_skimages_order_0_ties_included():
    """Index maps of skimage.transform.resize(order=0, anti_aliasing=False) recorded with
    scikit-image 0.25: 700 -> 651 rows has ties (232.5 * 700 / 651 = 250) that it rounds to 249
    in float64; 1100 -> 1024 columns skips source column 7."""
    from segfast.data.referring import resize_nearest

    rows = torch.arange(700)[:, None].expand(700, 3)
    got = resize_nearest(rows, (651, 3))[:, 0]
    assert got[[46, 139, 232, 325, 418, 511, 604]].tolist() == [50, 150, 249, 350, 450, 550, 650]
    cols = resize_nearest(torch.arange(1100)[None].expand(2, 1100), (2, 1024))[0]
    assert cols[:12].tolist() == [0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12]
    assert cols[-5:].tolist() == list(range(1095, 1100))
    assert int(cols.sum()) == 562688


def test_proposals_of_a_long_image_scaled_to_1024_are_its_own(tmp_path):
    """100 x 3000 scaled to 1024 wide: int(34.13) = 34 rows; the truncation is not a mismatch."""
    root = _reasonseg(tmp_path / "rs", size=(100, 3000))
    proposals_json(tmp_path / "p" / "train" / "a.json", np.stack([box(34, 1024, 0, 0, 10, 10)]))
    s = ReferringSegmentation("reasonseg", str(root), "train", str(tmp_path / "p"), image_size=32)[0]
    assert s["proposal_size"].tolist() == [34, 1024] and s["proposals"].shape == (1, 1024, 128)
