"""LaSagnA: the complex-query sequence format and its three strategies, chunking, parsing,
chunked semantic inference, ADE20K / COCO-Stuff layouts, a training step, segfast.train."""

import random

import pytest
import torch

pytest.importorskip("segment_anything")

from segfast.data.semantic import SemanticQueries  # noqa: E402
from segfast.models.lisa.conversation import round_text  # noqa: E402
from segfast.text.lasagna import answer, build, chunks, parse, question  # noqa: E402
from tests.data.layouts import ade20k, cocostuff  # noqa: E402
from tests.models.seg_family import assert_frozen_and_trained, batch_of, train_tiny, trainable_gradients  # noqa: E402  # noqa: E402
from tests.models.seg_family import build as build_model

CLASSES = ["wall", "floor", None, "sky", "tree", "car", "person"]  # index 2 unused (as COCO-Stuff ids)


def _names(q: str) -> list:
    head, tail = "<image> Can you segment the ", " in this image?"
    assert q.startswith(head) and q.endswith(tail)
    return q[len(head) : -len(tail)].split(", ")


def test_sequence_format_exactly_as_specified():
    prompt, reply = round_text(question(["cat", "dog", "sky"]), answer([("cat", True), ("dog", False), ("sky", True)]))
    assert prompt + reply == (
        "USER: <image> Can you segment the cat, dog, sky in this image? ASSISTANT: cat<SEG>, dog<NEG>, sky<SEG>"
    )
    q, a, targets = build([0], ["cat"], random.Random(0), random_class_list=False)
    assert (q, a, targets) == ("<image> Can you segment the cat in this image?", "cat<SEG>", [0])


@pytest.mark.parametrize("seed", range(5))
def test_three_strategies(seed):
    present = [6, 0, 4]
    q, a, targets = build(present, CLASSES, random.Random(seed), num_classes=5)  # all three on
    names = _names(q)
    assert (
        len(names) == 5
        and len(set(names)) == 5
        and None not in names
        and any(n in names for n in ("wall", "tree", "person"))
    )
    assert a == answer([(n, CLASSES.index(n) in present) for n in names])  # order follows the question, negatives kept
    assert targets == [CLASSES.index(n) for n in names if CLASSES.index(n) in present]
    q, a, targets = build(present, CLASSES, random.Random(seed), num_classes=5, sequence_augmentation=False)
    assert "<NEG>" not in a and a == answer([(n, True) for n in _names(q) if CLASSES.index(n) in present])
    q, a, _ = build(present, CLASSES, random.Random(seed), num_classes=5, order_consistency=False)
    items = parse(a, _names(q))
    flags = [p for _, p in items]
    assert flags == sorted(flags, reverse=True) and len(items) == 5  # present first, then absent
    q, a, targets = build(present, CLASSES, random.Random(seed), num_classes=5, random_class_list=False)
    assert sorted(_names(q)) == sorted(["wall", "tree", "person"]) and "<NEG>" not in a and len(targets) == 3
    with pytest.raises(ValueError, match="no class to ask about"):
        build([], CLASSES, random.Random(seed), random_class_list=False)


def test_chunks_and_parse():
    assert chunks(CLASSES, 2) == [[0, 1], [3, 4], [5, 6]] and chunks(CLASSES, 10) == [[0, 1, 3, 4, 5, 6]]
    with pytest.raises(ValueError, match="chunk_size"):
        chunks(CLASSES, 0)
    names = ["wall", "sky", "tree"]
    assert parse("wall<SEG>, sky<NEG>, tree<SEG></s>", names) == [("wall", True), ("sky", False), ("tree", True)]
    assert parse("wall <SEG> , sky <NEG>", names) == [("wall", True), ("sky", False)]  # word-tokenizer spacing
    # unknown names and run-on pieces keep one item per <SEG>, so items line up with the masks
    assert parse("moon<SEG>, wall<SEG> tree<SEG>, sky", names) == [(None, True), (None, True), (None, True)]


def test_chunked_segmentation_combines_masks_by_logit():
    model = build_model("lasagna")
    batch = batch_of(SemanticQueries(length=2), 1)
    s = model.decoder.image_size
    high, low = torch.full((s, s), -5.0), torch.full((s, s), -5.0)
    high[:10], low[:20] = 4.0, 2.0
    asked = []

    def fake_generate(b, return_logits, warn, images, **kw):
        assert return_logits and not warn and len(images) == 2
        names = _names(b["conversation"][0][0]["question"])
        asked.append(names)
        replies = {
            ("wall", "floor"): ("wall<SEG>, floor<NEG>", [high]),
            ("sky", "tree"): ("tree<SEG>, sky<NEG>", [low]),
            ("car", "person"): ("moon<SEG>, car<NEG>", [high + 100]),
        }
        text, logits = replies[tuple(names)]
        return [{"text": text, "logits": torch.stack(logits)}]

    model.generate = fake_generate
    label = model.segment(batch, CLASSES, chunk_size=2)[0]
    assert asked == [["wall", "floor"], ["sky", "tree"], ["car", "person"]]
    assert (label[:10] == 0).all() and (label[10:20] == 4).all() and (label[20:] == 255).all()


def test_ade20k_and_cocostuff_layouts(tmp_path):
    ade = tmp_path / "ade"
    ade20k(ade)
    ds = SemanticQueries("ade20k", str(ade), "train", image_size=32, random_class_list=False)
    assert ds.classes == ["wall", "building", "sky"]
    sample = ds[0]
    label = sample["label"]  # valid frame 21 x 32
    assert (label[:21, :10] == 255).all() and (label[:21, 11:21] == 0).all() and (label[:21, 22:] == 2).all()
    assert (label[21:] == 255).all()
    names = _names(sample["conversation"][0]["question"])
    assert sorted(names) == ["sky", "wall"]
    for name, mask in zip([n for n, p in parse(sample["conversation"][0]["answer"], names) if p], sample["masks"]):
        assert torch.equal(mask, label == ds.classes.index(name))

    coco = tmp_path / "coco"
    cocostuff(coco)
    ds = SemanticQueries("cocostuff", str(coco), "eval", image_size=32, random_class_list=False)
    assert ds.classes == ["person", "bicycle", None, "motorcycle"]
    assert sorted(_names(ds[0]["conversation"][0]["question"])) == ["bicycle", "person"]
    with pytest.raises(FileNotFoundError, match="objectInfo150"):
        SemanticQueries("ade20k", str(coco))


def test_training_step_and_segfast_train(tmp_path):
    model = build_model("lasagna")
    assert model.tokenizer("<SEG><NEG>", add_special_tokens=False)["input_ids"] == [
        model.seg_id,
        model.tokenizer.convert_tokens_to_ids("<NEG>"),
    ]
    batch = batch_of(SemanticQueries(length=4))
    losses = model(batch)
    assert all(torch.isfinite(v) for v in losses.values())
    grads = trainable_gradients(model, losses)
    assert_frozen_and_trained(
        model,
        grads,
        trained=("lora_B", "text_fc", "mask_decoder", "multi_modal_projector"),
        frozen=("vision_tower", "image_encoder"),
    )
    records = train_tiny(
        tmp_path,
        {"name": "lasagna", "options": {"max_new_tokens": 8}},
        {"name": "semantic-queries", "options": {"length": 8}},
    )
    assert any("eval/miou/mIoU" in r for r in records)
