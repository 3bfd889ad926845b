"""SegLLM: multi-round conversations from instance annotations (relations and references), the
mask encoding, reference-aware decoding and memory in training, round-by-round inference with
per-round metrics, loading tiny LLaVA/SAM/CLIP from disk, segfast.train."""

import json
import random

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("segment_anything")

from segfast.data.multiround import MultiRoundConversations, build_rounds  # noqa: E402
from segfast.models.segllm.memory import mask_boxes  # noqa: E402
from tests.models.seg_family import (  # noqa: E402
    assert_frozen_and_trained,
    batch_of,
    build,
    saved_weights,
    train_tiny,
    trainable_gradients,
)


def _inst(id, category, box, parent=None, interactions=()):
    mask = np.zeros((40, 60), bool)
    mask[box[1] : box[3], box[0] : box[2]] = True
    return {
        "id": id,
        "category": category,
        "box": box,
        "mask": mask,
        "parent": parent,
        "interactions": list(interactions),
    }


SCENE = [
    _inst(1, "dog", (0, 10, 10, 30)),
    _inst(2, "cat", (30, 10, 40, 30)),
    _inst(3, "cat", (45, 10, 55, 30)),  # two cats: neither is unique by name
    _inst(4, "tail", (5, 25, 10, 30), parent=1),
    _inst(5, "person", (15, 0, 25, 12), interactions=[("holding", 1)]),
]


def test_rounds_refer_to_earlier_targets_through_each_relation():
    seen = set()
    for seed in range(60):
        rounds = build_rounds(SCENE, random.Random(seed), num_rounds=4)
        first = SCENE[rounds[0]["target"]]
        assert first["category"] in ("dog", "person") and rounds[0]["question"].startswith("<image> ")
        assert rounds[0]["ref"] is None and rounds[0]["answer"] == "It is [SEG]."
        for k, r in enumerate(rounds[1:], 1):
            t = SCENE[r["target"]]
            assert t["id"] not in {SCENE[x["target"]]["id"] for x in rounds[:k]}  # a new target each round
            if r["ref"] is None:
                assert r["answer"] == "It is [SEG]." and r["question"] == f"Please segment the {t['category']}."
                continue
            assert 0 <= r["ref"] < k and r["answer"] == "Relative to [REF], it is [SEG]."
            ref = SCENE[rounds[r["ref"]]["target"]]
            seen.add(r["relation"])
            if r["relation"] == "hierarchical":
                assert t["parent"] == ref["id"] and r["question"] == f"Segment the tail of the {ref['category']}."
            elif r["relation"] == "interactional":
                assert (
                    r["question"] == "Segment the person that is holding the dog." and t["id"] == 5 and ref["id"] == 1
                )
            else:
                where = r["question"].split(t["category"] + " ")[1].split(" the " + ref["category"])[0]
                tb, rb = t["box"], ref["box"]
                assert {
                    "to the left of": tb[2] <= rb[0],
                    "to the right of": tb[0] >= rb[2],
                    "above": tb[3] <= rb[1],
                    "below": tb[1] >= rb[3],
                }[where]
                # unambiguous: "the cat to the right of the dog" would match both cats
                assert not (t["category"] == "cat" and where == "to the right of" and ref["category"] == "dog")
    assert seen == {"positional", "hierarchical", "interactional"}
    only = build_rounds(SCENE, random.Random(0), num_rounds=3, relations=("interactional",))
    assert all(r["relation"] in (None, "interactional") for r in only)
    with pytest.raises(ValueError, match="relations"):
        build_rounds(SCENE, random.Random(0), relations=("spatial",))


def test_coco_instances_layout_with_parts_and_interactions(tmp_path):
    (tmp_path / "img").mkdir()
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(tmp_path / "img" / "a.jpg")
    anns = []
    for inst in SCENE:
        x0, y0, x1, y1 = inst["box"]
        ann = {
            "id": inst["id"],
            "image_id": 1,
            "category_id": {"dog": 1, "cat": 2, "tail": 3, "person": 4}[inst["category"]],
            "bbox": [x0, y0, x1 - x0, y1 - y0],
            "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]],
            "iscrowd": 0,
        }
        if inst["parent"]:
            ann["parent_id"] = inst["parent"]
        ann["interactions"] = [{"verb": v, "object_id": o} for v, o in inst["interactions"]]
        anns.append(ann)
    anns.append({"id": 9, "image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5], "segmentation": {}, "iscrowd": 1})
    (tmp_path / "inst.json").write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "a.jpg", "height": 40, "width": 60}],
                "annotations": anns,
                "categories": [{"id": i, "name": n} for i, n in enumerate(["dog", "cat", "tail", "person"], 1)],
            }
        )
    )
    ds = MultiRoundConversations("coco", str(tmp_path), "inst.json", "img", num_rounds=3, image_size=64)
    for i in range(5):
        ds.seed = i
        sample = ds[0]
        assert len(sample["conversation"]) == len(sample["masks"]) == len(sample["refs"]) >= 2
        for r, (turn, ref) in enumerate(zip(sample["conversation"], sample["refs"])):
            assert (ref >= 0) == ("[REF]" in turn["answer"]) and int(ref) < r
        assert sample["masks"].flatten(1).any(1).all()  # every round's target is a real, visible mask
    with pytest.raises(FileNotFoundError, match="annotations"):
        MultiRoundConversations("coco", str(tmp_path), "missing.json", "img")


def test_mask_encoding_sees_only_the_masked_crop():
    model = build("segllm")
    masks = torch.zeros(3, 64, 64, dtype=torch.bool)
    masks[0, 5:20, 10:30] = True
    masks[1, 40:41, 0:64] = True
    from torchvision.ops import masks_to_boxes

    torch.testing.assert_close(mask_boxes(masks[:2]), masks_to_boxes(masks[:2]) + torch.tensor([0.0, 0, 1, 1]))
    assert mask_boxes(masks)[2].tolist() == [0, 0, 64, 64]  # empty: the whole frame
    image = torch.randn(3, 64, 64)
    other = image.clone()
    other[:, 30:, :] = 5.0  # changes pixels outside mask 0 only
    a, b = model.memory(image, masks[:1]), model.memory(other, masks[:1])
    assert a.shape == (1, 2, model.lm.get_input_embeddings().embedding_dim)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(model.memory(image, masks[1:2]), model.memory(other, masks[1:2]))


def test_training_step_from_saved_llava_sam_and_clip(tmp_path):
    weights = saved_weights(tmp_path)
    model = build(
        "segllm", path=weights["path"], sam_checkpoint=weights["sam_checkpoint"], clip_path=weights["clip_path"]
    )
    batch = batch_of(MultiRoundConversations(length=4))
    _, results = model.run(batch)
    for (targets, refs, which), masks, ref_ids in zip(results, batch["masks"], batch["refs"]):
        assert len(targets) == len(masks) and which == [r for r, x in enumerate(ref_ids.tolist()) if x >= 0]
        assert len(refs) == len(which)
    losses = model(batch)
    assert set(losses) == {"text", "bce", "dice"} and all(torch.isfinite(v) for v in losses.values())
    grads = trainable_gradients(model, losses)
    assert_frozen_and_trained(
        model,
        grads,
        trained=(
            "lora_B",
            "text_fc",
            "mask_decoder",
            "memory.mask_mlp",
            "memory.box_proj",
            "pad_query",
            "multi_modal_projector",
        ),
        frozen=("memory.clip", "vision_tower", "image_encoder"),
    )
    # teacher forcing: later rounds read the earlier targets through the memory
    model.zero_grad()
    with torch.no_grad():
        moved = [torch.roll(m, 9, dims=-1) for m in batch["masks"]]
        assert model(batch)["text"] != model.forward({**batch, "masks": moved})["text"]


def test_round_by_round_inference_and_per_round_metrics(tmp_path):
    model = build("segllm", max_rounds=3).eval()
    batch = batch_of(MultiRoundConversations(length=4, num_rounds=3))
    calls = []
    embed = model.decoder.embed
    model.decoder.embed = lambda images: calls.append(len(images)) or embed(images)
    replies = model.converse(batch)
    assert calls == [1, 1]  # SAM's image encoder once per conversation, not once per round
    model.decoder.embed = embed
    assert [len(r) for r in replies] == [len(c) for c in batch["conversation"]]
    assert all(r["mask"].shape == (64, 64) for rs in replies for r in rs)
    meters = {}
    model.evaluate(batch, meters)
    result = meters["rounds"].compute()
    assert result["round0/samples"] == 2 and result["samples"] == sum(len(c) for c in batch["conversation"])
    with pytest.raises(ValueError, match="max_rounds"):
        build("segllm", max_rounds=1).evaluate(batch, {})
    # generated answers with no [SEG] and with several: the memory follows what was generated
    none = model.converse(batch, generate=True, max_new_tokens=4, bad_words_ids=[[model.seg_id]])
    assert all("[SEG]" not in r["text"] and not r["mask"].any() for rs in none for r in rs)
    several = model.converse(batch, generate=True, max_new_tokens=2, sequence_bias={(model.seg_id,): 1e4})
    assert all(r["text"].split() == ["[SEG]"] * 2 for rs in several for r in rs)
    records = train_tiny(tmp_path, {"name": "segllm"}, {"name": "multiround", "options": {"length": 8}})
    assert any("eval/rounds/round1/cIoU" in r for r in records)
