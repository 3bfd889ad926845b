"""The [SEG] family's data on tiny fake layouts: LISA's semantic-segmentation conversations (label
maps and part annotations), LLaVA-Instruct VQA, gRefCOCO, the label maps of LaSagnA's benchmarks
(Cityscapes, PASCAL-Context-59/459, PASCAL-VOC-20), OpenImages masks, and a mixture whose every
draw of an item is a new use of it."""

import json

import numpy as np
import pytest
import torch

from segfast.data import DATASETS, MixtureDataset
from segfast.data.label_maps import IGNORE, read_label_maps
from segfast.text.lisa import ANSWERS, SHORT_QUESTIONS
from tests.data import layouts

pytest.importorskip("segment_anything")


def _asked(question: str) -> str:
    """The class name a LISA short question asks about."""
    for template in SHORT_QUESTIONS:
        head, tail = template.split("{name}")
        if question.startswith(head) and question.endswith(tail):
            return question[len(head) : len(question) - len(tail)]
    raise AssertionError(f"not one of LISA's short questions: {question!r}")


def _cocostuff(root):
    image = np.zeros((20, 30, 3), np.uint8)
    label = np.full((20, 30), 255, np.uint8)
    label[:5], label[5:10], label[10:15, :10], label[10:15, 20:], label[15:] = 0, 1, 3, 4, 95  # 95: "wall-brick"
    layouts.png(root / "images" / "train2017" / "a.jpg", image)
    layouts.png(root / "stuffthingmaps_trainval2017" / "train2017" / "a.png", label)
    names = {1: "person", 2: "bicycle", 4: "motorcycle", 5: "airplane", 96: "wall-brick"}
    (root / "labels.txt").write_text("0: unlabeled\n" + "".join(f"{k}: {v}\n" for k, v in names.items()))
    return root


def test_lisa_semantic_conversations_ask_up_to_three_present_classes(tmp_path):
    ds = DATASETS["sem-seg-conversations"](
        {"format": "cocostuff", "root": str(_cocostuff(tmp_path)), "image_size": 32, "clip_size": 16}, "train", 0
    )
    seen = set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        s = ds[0]
        asked = [_asked(c[0]["question"]) for c in s["conversations"]]
        assert len(asked) == 3 == len(set(asked)) == len(s["original_masks"])  # 3 of the 4 askable present classes
        assert set(asked) <= {"person", "bicycle", "motorcycle", "airplane"}  # never "wall-brick" ("-" names ignored)
        assert all(c[0]["answer"] in ANSWERS and len(c) == 1 for c in s["conversations"])
        for name, mask in zip(asked, s["original_masks"]):
            where = {"person": (slice(0, 5),), "bicycle": (slice(5, 10),), "motorcycle": (slice(10, 15), slice(0, 10))}
            assert mask[where.get(name, (slice(10, 15), slice(20, None)))].sum() == mask.sum() > 0
        seen.add(tuple(asked))
    assert len(seen) > 1 and len({frozenset(a) for a in seen}) > 1  # classes, order, templates redrawn every epoch


def test_lisa_part_conversations_name_object_parts_as_lisa(tmp_path):
    voc = layouts.pascal_part(tmp_path / "pascal_part")
    ds = DATASETS["sem-seg-conversations"]({"format": "pascal_part", "root": str(voc), "image_size": 32}, "train", 0)
    forms = set()
    for epoch in range(8):
        ds.set_epoch(epoch)
        s = ds[0]
        for (turn,), mask in zip(s["conversations"], s["original_masks"]):
            name = _asked(turn["question"])
            assert name in ("dog head", "the head of the dog", "dog tail", "the tail of the dog")
            assert int(mask.sum()) == (100 if "head" in name else 50)
            forms.add(name.startswith("the "))
    assert forms == {True, False}  # "obj part" and "the part of the obj" at even odds
    paco = layouts.paco_lvis(tmp_path / "paco", tmp_path / "coco")
    s = DATASETS["sem-seg-conversations"](
        {"format": "paco_lvis", "root": str(paco), "images": str(tmp_path / "coco"), "image_size": 32}, "train", 0
    )[0]
    assert [_asked(c[0]["question"]) for c in s["conversations"]] == ["mug"]
    from segfast.data.part_annotations import category_name

    assert category_name("car_(automobile):wheel", "paco_lvis") == ("car", "wheel")


def test_vqa_conversations_keep_the_whole_dialogue_with_no_mask(tmp_path):
    s = DATASETS["vqa-conversations"](layouts.llava_instruct(tmp_path), "train", 0)[0]
    assert s["conversations"] == [
        [
            {"question": "<image>\nWhat is shown?", "answer": "A grey box."},
            {"question": "Is it dark?", "answer": "Yes."},
        ]
    ]
    assert s["original_masks"].shape == (0, 20, 30) and s["masks"].shape[0] == 0


def test_grefcoco_targets_are_unions_and_no_target_is_empty(tmp_path):
    layouts.grefcoco(tmp_path)
    ds = DATASETS["seg-conversations"]({"format": "grefcoco", "root": str(tmp_path), "image_size": 32}, "eval", 0)
    assert len(ds) == 3  # every sentence of every expression
    both, cat = ds[0], ds[1]
    assert both["conversations"][0][0]["question"] == (
        "<image>\n What is both blocks in this image? Please output segmentation mask."
    )
    assert int(both["original_masks"].sum()) == 200 and both["generate"]
    assert not cat["original_masks"].any() and cat["original_masks"].shape == (1, 20, 30)


def test_label_maps_of_the_benchmark_layouts(tmp_path):
    # Cityscapes: labelIds -> the 19 trainIds, everything else ignored
    city = layouts.cityscapes(tmp_path / "city")
    maps = read_label_maps("cityscapes", city, "eval")
    assert len(maps.classes) == 19 and maps.classes[0] == "road" and maps.classes[18] == "bicycle"
    assert maps.load(maps.pairs[0][1])[0].tolist() == [0, 1, IGNORE, 18, maps.classes.index("car"), IGNORE]
    # PASCAL-Context 459 (uint16 tif, 65535 ignored, names from labels.txt) and 59, PASCAL-VOC 20
    layouts.pascal_context(tmp_path / "ctx")
    full = read_label_maps("pascal-context-459", tmp_path / "ctx", "eval")
    assert len(full.classes) == 459 and full.classes[0] == "name1"
    assert full.load(full.pairs[0][1])[0].tolist() == [0, 458, IGNORE, 3, 3, 3]
    ctx59 = read_label_maps("pascal-context-59", tmp_path / "ctx", "eval")
    assert len(ctx59.classes) == 59 and ctx59.load(ctx59.pairs[0][1])[0, :3].tolist() == [0, 58, IGNORE]
    voc = layouts.pascal_voc20(tmp_path / "voc") / "pascal_voc_d2"
    pas = read_label_maps("pascal-voc-20", tmp_path / "voc", "eval")
    assert len(pas.classes) == 20 and pas.classes[14] == "person"
    with pytest.raises(FileNotFoundError, match="label maps are missing"):
        (voc / "annotations_pascal20" / "validation" / "2007_1.png").unlink()
        read_label_maps("pascal-voc-20", tmp_path / "voc", "eval")


def test_openimages_classes_are_unions_of_their_masks(tmp_path):
    root = layouts.openimages(tmp_path / "oi")
    ds = DATASETS["semantic-queries"](
        {"format": "openimages", "root": str(root), "image_size": 16, "clip_size": 16, "random_class_list": False},
        "train",
        0,
    )
    assert ds.classes == ["cat", "sky"]
    s = ds[0]
    answer = s["conversations"][0][0]["answer"]
    targets = [p.split("<")[0] for p in answer.rstrip(".").split(", ")]
    cat = s["original_masks"][targets.index("cat")]
    assert cat[:, :6].all() and cat[4:, 6:].all() and not cat[:4, 6:].any()  # union, resized to the image
    with pytest.raises(ValueError, match="training source"):
        DATASETS["semantic-queries"]({"format": "openimages", "root": str(root)}, "eval", 0)


def test_a_mixture_draws_an_item_anew_every_time_it_uses_it():
    member = DATASETS["seg-conversations"]({"length": 1}, "train", 0)
    mix = MixtureDataset([member], [1], length=12, seed=0)
    questions = {json.dumps(mix[i]["conversations"]) for i in range(12)}  # twelve uses of the one image
    assert len(questions) > 1
    assert json.dumps(mix[3]["conversations"]) == json.dumps(mix[3]["conversations"])  # and each is reproducible
    assert member.draw is None
    assert torch.equal(mix[0]["image"], mix[5]["image"])


def test_lasagna_protocols_read_their_layouts_through_a_checkpoints_config(tmp_path):
    """cityscapes-val, pascal-*-val and grefcoco-val through LaSagnA's mixture config, on fake layouts:
    each builds its reader on the validation split with the sample's own class list."""
    from segfast.train.protocols import get

    city = layouts.cityscapes(tmp_path / "city", "ulm", "u", np.full((4, 6), 7, np.uint8))
    layouts.pascal_voc20(tmp_path / "voc", "v", 3)
    lasagna = {
        "name": "mixture",
        "options": {
            "datasets": [
                {"name": "semantic-queries", "options": {"format": "ade20k", "root": "/ade", "image_size": 32}},
                {"name": "seg-conversations", "options": {"format": "refcoco", "root": "/refer", "seg_token": "<SEG>"}},
            ]
        },
    }
    for name, root, classes in (("cityscapes-val", city, 19), ("pascal-voc-20-val", tmp_path / "voc", 20)):
        section = get(name).data_section(lasagna)
        section["options"]["root"] = str(root)
        s = DATASETS[section["name"]](section["options"], "eval", 0)[0]
        assert len(s["classes"]) == classes and s["label_space"] == get(name).data["format"]
        assert s["original_label"].shape == (4, 6) and get(name).metrics["mIoU"].endswith(f"{s['label_space']}/mIoU")
    section = get("grefcoco-val").data_section(lasagna)
    assert section["options"]["format"] == "grefcoco" and section["options"]["seg_token"] == "<SEG>"
