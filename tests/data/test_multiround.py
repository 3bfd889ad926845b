"""SegLLM's MRSeg data: the 9 positional cells, the conversation builders' rules (lengths, 1/3
self-queries, 1/2 captions, references with slots), disjoint train / val templates, conversations
drawn anew every epoch, and the readers (refer, PACO, Visual Genome, the released conversations)
on tiny fake layouts."""

import json
import random
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from segfast.data.mrseg import parse_conversation
from segfast.data.multiround import (
    MultiRoundConversations,
    hierarchical,
    interactional,
    positional,
    same_class_pairs,
)
from segfast.text.segllm import BY_INDEX, ENCODE, RELATIONS, TRAIN, VAL, parse_references, position
from tests.data.layouts import coco_box, mrseg, paco, panoptic_parts, visual_genome
from tests.models.seg_family import write_refer


def _inst(id, category, box, parent=None, instance=None, captions=None):
    return {
        "id": id,
        "category": category,
        "captions": captions or [category],
        "box": box,
        "segmentation": [[box[0], box[1], box[2], box[1], box[2], box[3], box[0], box[3]]],
        "parent": parent,
        "interactions": [],
        "instance": id if instance is None else instance,
    }


def test_nine_positions_from_centres_and_edges():
    ref = (10, 10, 20, 20)
    cells = {
        (5, 5): "to the top left of",
        (15, 5): "above",
        (25, 5): "to the top right of",
        (5, 15): "to the left of",
        (15, 15): "overlapping with",
        (25, 15): "to the right of",
        (5, 25): "to the bottom left of",
        (15, 25): "below",
        (25, 25): "to the bottom right of",
    }
    for (cx, cy), name in cells.items():
        assert position((cx - 1, cy - 1, cx + 1, cy + 1), ref) == name, (cx, cy)
    assert position((12, 12, 18, 18), ref, same_instance=True) == "the same as"
    assert len(set(cells.values())) == 9 and set(RELATIONS) == set(cells.values()) | {"the same as"}


def test_train_and_validation_templates_are_apart():
    for kind in TRAIN:
        assert TRAIN[kind] and VAL[kind] and not set(TRAIN[kind]) & set(VAL[kind]), kind
    assert len(TRAIN["hard"]) == 10 and len(VAL["hard"]) == 5  # §A.5.2


def test_positional_rounds_follow_the_paper():
    instances = [_inst(i, f"thing{i}", (3 * i, 2 * i, 3 * i + 4, 2 * i + 5)) for i in range(24)]
    lengths, kinds, names = Counter(), Counter(), Counter()
    for seed in range(400):
        rounds = positional(instances, random.Random(seed), TRAIN)
        lengths[len(rounds)] += 1
        assert rounds[0]["ref"] is None and len({r["target"] for r in rounds}) == len(rounds)
        for j, r in enumerate(rounds[1:], 1):
            if r["ref"] is None:
                kinds["self"] += 1
                assert ENCODE not in r["question"] and r["answer"] == "It is [SEG]."
                continue
            kinds["ref"] += 1
            assert 0 <= r["ref"] < j and r["encode"] == [r["ref"]] and r["question"].startswith(ENCODE + " ")
            assert r["answer"] == "Relative to [REF], it is [SEG]."
            t, ref = instances[r["target"]], instances[rounds[r["ref"]]["target"]]
            assert position(t["box"], ref["box"]) in r["question"]
            by_index = [p.format(i=r["ref"] + 1) for p in BY_INDEX]
            which = next((p for p in by_index if p in r["question"]), None)
            names[which.split()[0] if which else "caption"] += 1
            if which is None:
                assert f"the {ref['category']}" in r["question"]
    assert min(lengths) == 2 and max(lengths) == 18  # §A.5.2: 2 to 18 annotations
    assert abs(kinds["self"] / (kinds["self"] + kinds["ref"]) - 1 / 3) < 0.03  # self-queries with probability 1/3
    total = sum(names.values())
    assert abs(names["caption"] / total - 0.5) < 0.03 and abs(names["instance"] / total - 0.25) < 0.03


def test_hierarchical_interactional_and_hard_rounds():
    scene = [_inst(1, "dog", (0, 0, 20, 20)), _inst(2, "cat", (30, 0, 50, 20))]
    scene += [_inst(10 + k, f"part{k}", (k, 0, k + 2, 2), parent=1) for k in range(6)]
    scene += [_inst(20, "ear", (30, 0, 33, 3), parent=2)]
    counts = Counter()
    for seed in range(100):
        rounds = hierarchical(scene, random.Random(seed), TRAIN)
        objects = [r for r in rounds if r["ref"] is None]
        assert 1 <= len(objects) <= 2
        for r in rounds:
            if r["ref"] is not None:  # a part refers to the round of its object
                assert scene[r["target"]]["parent"] == scene[rounds[r["ref"]]["target"]]["id"]
                assert r["encode"] == [r["ref"]] and scene[r["target"]]["category"] in r["question"]
        counts[sum(1 for r in rounds if r["ref"] is not None and scene[rounds[r["ref"]]["target"]]["id"] == 1)] += 1
    assert set(counts) <= set(range(0, 5)) and max(counts) == 4  # 1-4 parts per object
    rounds = interactional(
        0, "holding", 1, [_inst(1, "man", (0, 0, 5, 5)), _inst(2, "cup", (5, 5, 9, 9))], random.Random(0), TRAIN
    )
    assert [r["target"] for r in rounds] == [0, 1] and "holding" in rounds[1]["question"] and rounds[1]["ref"] == 0
    pairs = same_class_pairs(
        [_inst(1, "cat", (0, 0, 5, 5)), _inst(2, "cat", (9, 0, 15, 5)), _inst(3, "dog", (0, 9, 5, 15))]
    )
    assert pairs == [(0, 1), (1, 0)]


def test_interactive_references():
    assert parse_references("Segment the hair of instance 1.[REF:1]") == {
        "question": f"{ENCODE} Segment the hair of instance 1.",
        "encode": [0],
    }
    with pytest.raises(ValueError, match="from 1"):
        parse_references("x [REF:0]")


def _refer(tmp_path):
    anns = [coco_box(7, 1, (0, 0, 20, 40)), coco_box(8, 1, (30, 0, 50, 40)), coco_box(9, 2, (50, 30, 60, 40))]
    refs = [
        {"split": "train", "ann_id": 7, "image_id": 1, "sentences": [{"sent": "left man "}, {"sent": "Guy in red"}]},
        {"split": "train", "ann_id": 8, "image_id": 1, "sentences": [{"sent": "right man"}]},
        {"split": "train", "ann_id": 9, "image_id": 1, "sentences": [{"sent": "the ball"}]},
        {"split": "val", "ann_id": 7, "image_id": 1, "sentences": [{"sent": "man on the left"}, {"sent": "tall man"}]},
        {"split": "val", "ann_id": 8, "image_id": 1, "sentences": [{"sent": "other man"}]},
    ]
    write_refer(
        tmp_path, np.zeros((40, 60, 3), np.uint8), refs, anns, [{"id": 1, "name": "man"}, {"id": 2, "name": "ball"}]
    )
    return str(tmp_path)


def test_refcoco_conversations_benchmark_and_hard_subset(tmp_path):
    root = _refer(tmp_path)
    ds = MultiRoundConversations("refcoco", root)
    seen = set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        s = ds[0]
        assert 2 <= len(s["conversation"]) == len(s["masks"]) == len(s["refs"]) <= 4
        assert s["conversation"][0]["question"].startswith("<image> ")
        for turn in s["conversation"]:
            assert not any(v.format(name="x") in turn["question"] for v in VAL["direct"])
        seen.add(json.dumps(s["conversation"]))
        ds.set_epoch(epoch)
        assert json.dumps(ds[0]["conversation"]) == json.dumps(s["conversation"])  # the same within an epoch
    assert len(seen) > 2  # re-drawn every epoch
    bench = MultiRoundConversations("refcoco", root, split="eval")
    assert len(bench) == 3 and all(len(bench[i]["conversation"]) == 1 for i in range(3))  # every val sentence
    questions = [bench[i]["conversation"][0]["question"] for i in range(3)]
    assert any("man on the left" in q for q in questions) and bench[0]["memory"] == "own"
    assert all(any(v.split("{")[0] in q for v in VAL["direct"]) for q in questions)  # validation templates
    lisa = MultiRoundConversations("refcoco", root, split="eval", question_set="lisa")
    assert "What is man on the left in this image?" in " ".join(
        lisa[i]["conversation"][0]["question"] for i in range(3)
    )
    hard = MultiRoundConversations("refcoco_hard", root)
    assert len(hard) == 2  # the two men, each given once
    s = hard[0]
    assert s["conversation"][0]["question"].startswith(f"<image> {ENCODE} ") and s["conversation"][0]["encode"] == [1]
    assert s["refs"].tolist() == [1] and s["given"].shape == (1, 64, 64)
    assert not (s["given"][0] & s["masks"][0]).any()  # the given man is the other one


def test_paco_hierarchy_from_obj_ann_id(tmp_path):
    paco(tmp_path)
    ds = MultiRoundConversations("paco", str(tmp_path), annotations="paco.json", images=".")
    s = ds[0]
    assert "mug" in s["conversation"][0]["question"] and s["refs"][0] == -1
    assert all(r == 0 for r in s["refs"][1:].tolist()) and 2 <= len(s["conversation"]) <= 3
    parts = [t["question"] for t in s["conversation"][1:]]
    assert all(("handle" in q or "rim" in q) and q.startswith(ENCODE) for q in parts)


def test_visual_genome_relationships(tmp_path):
    masks = visual_genome(tmp_path)
    ds = MultiRoundConversations("vg", str(tmp_path), masks=str(masks))
    assert len(ds) == 1
    s = ds[0]
    assert "man" in s["conversation"][0]["question"] and "holding" in s["conversation"][1]["question"]
    assert s["refs"].tolist() == [-1, 0] and s["conversation"][1]["encode"] == [0]
    with pytest.raises(ValueError, match="masks"):
        MultiRoundConversations("vg", str(tmp_path))
    assert len(MultiRoundConversations("vg", str(tmp_path), box_masks=True)) == 1


def test_released_conversations_in_their_own_format(tmp_path):
    root = tmp_path / "segllm"
    entries = mrseg(root)
    parsed = parse_conversation(entries[0])
    assert parsed["rounds"][1]["question"] == f"{ENCODE} Segment the person next to instance 1."
    assert parsed["rounds"][1]["answer"] == "Sure, [REF] [SEG]." and parsed["rounds"][0]["answer"] == "[SEG]."
    ds = MultiRoundConversations(
        "mrseg",
        str(root),
        split="eval",
        eval_conversations="all_data_mix_val/mr_refcoco_val.json",
        eval_memory="ground_truth",
    )
    s = ds[0]
    assert [t["encode"] for t in s["conversation"]] == [[], [0]] and s["refs"].tolist() == [-1, 0]
    assert s["conversation"][0]["question"] == "<image> Segment a person." and s["memory"] == "ground_truth"
    assert s["masks"].shape == (2, 64, 64) and s["given"].shape == (0, 64, 64)
    hard = ds[1]
    assert hard["conversation"][0]["encode"] == [1] and hard["refs"].tolist() == [1] and hard["given"].shape[0] == 1
    assert hard["conversation"][0]["question"] == f"<image> {ENCODE} Please segment the other person"
    frame = torch.zeros(64, 64, dtype=torch.bool)
    frame[:11, 32:43] = True  # mask 3 at x 30-40 in the 60-wide image, scaled by 64/60
    assert (hard["given"][0] ^ frame).sum() < 30
    with pytest.raises(FileNotFoundError, match="conversations"):
        MultiRoundConversations("mrseg", str(root), split="eval", eval_conversations="nope.json")
    # the authors train with --limit_rounds 6: max_rounds keeps the first rounds of a released one
    cut = MultiRoundConversations(
        "mrseg", str(root), split="eval", eval_conversations="all_data_mix_val/mr_refcoco_val.json", max_rounds=1
    )[0]
    assert len(cut["conversation"]) == 1 and cut["masks"].shape[0] == 1 and cut["refs"].tolist() == [-1]


def test_segllm_protocols_fix_their_reader_options():
    from segfast.train.protocols import get

    data = {
        "name": "mixture",
        "options": {
            "datasets": [
                {"name": "multiround", "options": {"format": "mrseg", "root": "/r", "conversations": "t.json"}},
                {"name": "multiround", "options": {"format": "refcoco", "root": "/refer"}},
            ]
        },
    }
    mr = get("mr-refcoco-val").data_section(data)
    assert (
        mr["options"]["eval_conversations"] == "all_data_mix_val/mr_refcoco_val.json" and mr["options"]["root"] == "/r"
    )
    assert mr["options"]["eval_memory"] == "own" and get("mr-paco-val").data["eval_memory"] == "ground_truth"
    rec = get("rec-refcocog-test").data_section(data)["options"]
    assert (rec["root"], rec["split_by"], rec["eval_split"]) == ("/refer", "umd", "test")
    assert get("lisa-questions-refcoco-val").data["question_set"] == "lisa"
    table1 = {r.metric: r.value for r in get("mr-refcoco+-val").reported if r.row.startswith("SegLLM")}
    assert table1["cIoU round 2"] == 78.0 and table1["cIoU round 8"] == 59.0
    assert get("mr-refcoco+-val").metrics["cIoU round 2"] == "eval/rounds/round1/cIoU"
    # the shipped config trains on 6 rounds (--limit_rounds 6); the MR benchmarks score every round
    from segfast.train import load_config

    shipped = load_config("configs/segllm.yaml").data.options["datasets"]
    assert [d["options"]["max_rounds"] for d in shipped] == [6, 6]
    trained = {**data, "options": {"datasets": shipped}}
    assert get("mr-refcoco-val").data_section(trained)["options"]["max_rounds"] == 0
    assert get("mr-paco-val").data_section(trained)["options"]["max_rounds"] == 0
    assert {r.value for r in get("rec-refcoco-testB").reported} == {86.2}


def test_coco_lvis_semantic_and_reasonseg_conversations(tmp_path):
    (tmp_path / "img").mkdir()
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(tmp_path / "img" / "a.jpg")

    ann = coco_box
    anns = [
        ann(1, 1, (0, 10, 10, 30)),
        ann(2, 2, (30, 10, 40, 30)),
        ann(3, 2, (45, 10, 55, 30)),
        ann(4, 3, (5, 25, 10, 30), parent_id=1),
        ann(5, 4, (15, 0, 25, 12), interactions=[{"verb": "holding", "object_id": 1}]),
        {**ann(9, 1, (0, 0, 5, 5)), "iscrowd": 1},
    ]
    (tmp_path / "inst.json").write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "a.jpg", "height": 40, "width": 60}],
                "annotations": anns,
                "categories": [{"id": i, "name": n} for i, n in enumerate(["dog", "cat", "tail", "person"], 1)],
            }
        )
    )
    ds = MultiRoundConversations("coco", str(tmp_path), "inst.json", "img", image_size=64)
    kinds = set()
    for epoch in range(12):
        ds.set_epoch(epoch)
        s = ds[0]
        assert len(s["conversation"]) == len(s["masks"]) == len(s["refs"]) >= 1
        for r, (turn, ref) in enumerate(zip(s["conversation"], s["refs"].tolist())):
            assert (
                (ref >= 0) == ("[REF]" in turn["answer"]) and ref < r and turn["encode"] == ([ref] if ref >= 0 else [])
            )
        text = " ".join(t["question"] for t in s["conversation"])
        kinds |= {k for k, w in (("hier", "tail"), ("inter", "holding")) if w in text}
        assert s["masks"].flatten(1).any(1).all()
    assert kinds == {"hier", "inter"}
    lvis = MultiRoundConversations("lvis", str(tmp_path), "inst.json", "img")
    captions = " ".join(t["question"] for e in range(6) for t in (lvis.set_epoch(e), lvis[0])[1]["conversation"])
    assert "cat on the left" in captions or "cat on the right" in captions  # two cats: named by side
    # single-round semantic conversations (ADE20K layout) and ReasonSeg
    ade = tmp_path / "ade"
    (ade / "images" / "training").mkdir(parents=True)
    (ade / "annotations" / "training").mkdir(parents=True)
    (ade / "objectInfo150.csv").write_text("Idx,Ratio,Train,Val,Name\n1,0.1,1,1,wall;x\n2,0.1,1,1,floor\n")
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(ade / "images" / "training" / "a.jpg")
    label = np.zeros((40, 60), np.uint8)
    label[:20], label[20:] = 1, 2
    Image.fromarray(label).save(ade / "annotations" / "training" / "a.png")
    sem = MultiRoundConversations("ade20k", str(ade))
    s = sem[0]
    assert len(s["conversation"]) == 1 and s["refs"].tolist() == [-1]
    name = "wall" if "wall" in s["conversation"][0]["question"] else "floor"
    assert s["masks"][0, :20].all() == (name == "wall")
    rs = tmp_path / "rs" / "train"
    rs.mkdir(parents=True)
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(rs / "q.jpg")
    (rs / "q.json").write_text(
        json.dumps(
            {
                "text": ["What keeps the rain off?"],
                "is_sentence": True,
                "shapes": [{"label": "t", "points": [[0, 0], [30, 0], [30, 20], [0, 20]]}],
            }
        )
    )
    r = MultiRoundConversations("reasonseg", str(tmp_path / "rs"))[0]
    assert r["conversation"][0]["question"] == "<image> What keeps the rain off?" and r["masks"][0, :10, :10].all()
    assert len(MultiRoundConversations(length=4, max_rounds=2)[0]["conversation"]) <= 2


def test_pascal_panoptic_parts_objects_and_their_parts(tmp_path):
    """The release's uid TIFFs and dataset spec: sids and pids count from 1 in the spec's order,
    grouped raw pids make one part, an object's unlabelled-part pixels stay in its mask."""
    from segfast.data.panoptic_parts import object_instances, read_spec

    uid = panoptic_parts(tmp_path)
    classes, parts = read_spec(tmp_path / "ppp_datasetspec.yaml")
    insts = object_instances(tmp_path / "labels" / "training" / "a.tif", classes, parts)
    names = [(x["category"], x["parent"]) for x in insts]
    assert names == [("aeroplane", None), ("body", 0), ("engine", 0), ("person", None), ("head", 3)]
    assert np.array_equal(insts[0]["mask"], uid // 100_000 == 1) and insts[0]["box"] == (0, 0, 30, 20)
    assert np.array_equal(insts[2]["mask"], (uid == 1_001_02) | (uid == 1_001_03))
    assert insts[3]["mask"].sum() == 20 * 20 and insts[4]["mask"].sum() == 20 * 20 - 10 * 10
    ds = MultiRoundConversations("pascal_part", str(tmp_path), images="JPEGImages")
    assert len(ds) == 1  # b has no object with parts
    seen = set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        s = ds[0]
        whole = s["conversation"][0]["question"]
        assert ("aeroplane" in whole or "person" in whole) and s["refs"][0] == -1
        for r, (turn, ref) in enumerate(zip(s["conversation"], s["refs"].tolist())):
            if ref >= 0:  # a part: asked with its object's encoding, inside its object's mask
                assert turn["question"].startswith(ENCODE) and not (s["masks"][r] & ~s["masks"][ref]).any()
        seen.add((len(s["conversation"]), int((s["refs"] >= 0).sum())))
    assert {n - k for n, k in seen} <= {1, 2} and len(seen) > 1  # 1-2 objects with parts, re-drawn per epoch
    with pytest.raises(ValueError, match="images"):
        MultiRoundConversations("pascal_part", str(tmp_path))
