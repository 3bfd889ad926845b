"""LISA base: conversation encoding, LISA's losses, [SEG] handling (several per answer, none
generated, single ids), loading from saved tiny LLaVA/SAM, data layouts, segfast.train."""

import json
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

pytest.importorskip("segment_anything")

import segfast  # noqa: E402
from segfast.config import ConfigError  # noqa: E402
from segfast.data.coco_masks import segmentation_mask  # noqa: E402
from segfast.data.conversations import SegConversations  # noqa: E402
from segfast.frames import SAM_MEAN, frame_masks, sam_frame, valid_size  # noqa: E402
from segfast.models.lisa.conversation import IGNORE, IMAGE_SLOT, MEMORY_SLOT, encode, predicting  # noqa: E402
from segfast.models.tiny import word_tokenizer  # noqa: E402
from segfast.nn.losses import mask_bce_loss, mask_dice_loss  # noqa: E402
from segfast.text.lisa import vocabulary  # noqa: E402
from tests.models.seg_family import (  # noqa: E402
    assert_frozen_and_trained,
    batch_of,
    build,
    saved_weights,
    train_tiny,
    trainable_gradients,
    write_refer,
)


def _tokenizer():
    from segfast.models.llm import add_special_tokens

    tok = word_tokenizer(vocabulary())
    add_special_tokens(tok, ["<image>", "[SEG]"])
    return tok


def test_conversation_labels_answers_only_and_expands_image_and_memory_slots():
    tok = _tokenizer()
    image, seg = tok.convert_tokens_to_ids("<image>"), tok.convert_tokens_to_ids("[SEG]")
    rounds = [
        {"question": "<image> Please segment the red box.", "answer": "It is [SEG]."},
        {"question": "Please segment the blue box.", "answer": "Sure, [SEG]."},
    ]
    e = encode(tok, rounds, image_token_id=image, image_slots=5, memory_after={seg}, memory_slots=2)
    assert e.kinds.count(IMAGE_SLOT) == 5 and e.kinds.count(MEMORY_SLOT) == 4
    labelled = tok.convert_ids_to_tokens([t for t, lab in zip(e.ids, e.labels) if lab != IGNORE])
    assert labelled == ["It", "is", "[SEG]", ".", "</s>", "Sure", ",", "[SEG]", ".", "</s>"]
    for p in predicting(e.ids, seg):  # memory follows each [SEG]; LISA's embedding comes one before it
        assert e.ids[p + 1] == seg and e.kinds[p + 2] == e.kinds[p + 3] == MEMORY_SLOT
    prompt = encode(tok, [{**rounds[0], "answer": None}], image_token_id=image, image_slots=5)
    assert all(lab == IGNORE for lab in prompt.labels) and tok.convert_ids_to_tokens(prompt.ids[-2:]) == [
        "ASSISTANT",
        ":",
    ]
    assert tok.unk_token_id not in e.ids  # the tiny vocabulary covers the templates
    with pytest.raises(ValueError, match="exactly one <image>"):
        encode(tok, [{"question": "no image", "answer": "x"}], image_token_id=image, image_slots=5)
    with pytest.raises(ValueError, match="not the last round"):
        encode(
            tok,
            [{"question": "<image> a", "answer": None}, {"question": "b", "answer": "c"}],
            image_token_id=image,
            image_slots=5,
        )


def test_mask_losses_are_lisas_definitions():
    gen = torch.Generator().manual_seed(0)
    logits, target = torch.randn(3, 8, 9, generator=gen) * 3, torch.rand(3, 8, 9, generator=gen) > 0.6
    target[2] = False  # an empty target
    p, t = torch.sigmoid(logits).flatten(1), target.float().flatten(1)
    dice = 1 - (2 * (p / 1000 * t).sum(1) + 1e-6) / ((p / 1000).sum(1) + (t / 1000).sum(1) + 1e-6)
    torch.testing.assert_close(mask_dice_loss(logits, target), dice)
    torch.testing.assert_close(
        mask_bce_loss(logits, target),
        F.binary_cross_entropy_with_logits(logits, target.float(), reduction="none").mean((1, 2)),
    )
    perfect = torch.where(target, 30.0, -30.0)
    assert mask_dice_loss(perfect, target)[:2].max() < 1e-3 and mask_bce_loss(perfect, target).max() < 1e-6


def test_sam_frame_matches_segment_anything_preprocessing():
    from segment_anything.utils.transforms import ResizeLongestSide

    image = np.full((30, 50, 3), 77, np.uint8)
    frame, (h, w) = sam_frame(image, 64)
    assert (h, w) == valid_size(30, 50, 64) == ResizeLongestSide(64).get_preprocess_shape(30, 50, 64)
    assert frame.shape == (3, 64, 64) and frame[:, h:].abs().sum() == 0 and frame[:, :, w:].abs().sum() == 0
    torch.testing.assert_close(frame[0, :h, :w], torch.full((h, w), (77 - SAM_MEAN[0]) / 58.395))


def test_training_step_several_seg_tokens_and_gradients():
    model = build("lisa")
    batch = batch_of(SegConversations(refs_per_image=3, length=4))
    for conv, masks in zip(batch["conversation"], batch["masks"]):  # 3 rounds, one [SEG] and mask each
        assert len(conv) == 3 and len(masks) == 3
    _, logits = model.run(batch)
    assert [len(x) for x in logits] == [3, 3]
    # several [SEG] in one answer -> as many masks, in order
    two = {
        **batch,
        "conversation": [[{"question": "<image> Please segment the red box.", "answer": "Sure, [SEG], [SEG]."}]] * 2,
        "masks": [m[:2] for m in batch["masks"]],
    }
    assert [len(x) for x in model.run(two)[1]] == [2, 2]
    losses = model(two)
    assert set(losses) == {"text", "bce", "dice"} and all(torch.isfinite(v) for v in losses.values())
    grads = trainable_gradients(model, losses)
    assert_frozen_and_trained(
        model,
        grads,
        trained=("lora_B", "text_fc", "mask_decoder", "multi_modal_projector"),
        frozen=("vision_tower", "image_encoder", "prompt_encoder"),
    )
    with pytest.raises(ValueError, match="masks: sample 0 has 1 target masks but its answer has 2"):
        model({**two, "masks": [m[:1] for m in two["masks"]]})


def test_generation_warns_without_seg_and_returns_only_new_masks():
    model = build("lisa").eval()
    batch = batch_of(SegConversations(refs_per_image=2, length=4))
    with pytest.warns(UserWarning, match=r"no \[SEG\] token was generated"):
        out = model.generate(batch, max_new_tokens=4, bad_words_ids=[[model.seg_id]])
    h, w = (int(x) for x in batch["valid_size"][0])
    assert out[0]["masks"].shape == (0, h, w)  # the history's [SEG] are not reported again
    # biased to say only [SEG]: a mask per generated [SEG], no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = model.generate(batch, max_new_tokens=3, sequence_bias={(model.seg_id,): 1e4})
    assert out[0]["text"].split() == ["[SEG]"] * 3 and out[0]["masks"].shape == (3, h, w)


def test_loads_saved_tiny_llava_and_sam_and_checks_single_ids(tmp_path):
    weights = saved_weights(tmp_path)
    model = build("lisa", path=weights["path"], sam_checkpoint=weights["sam_checkpoint"])
    seg = model.tokenizer("[SEG]", add_special_tokens=False)["input_ids"]
    assert seg == [model.seg_id] and "[SEG]" in model.tokenizer.get_added_vocab()  # atomic, one id
    assert not any("lora" in n for n, _ in model.named_parameters() if "vision_tower" in n)
    sam_state = torch.load(weights["sam_checkpoint"], weights_only=True)
    torch.testing.assert_close(
        model.decoder.sam.mask_decoder.state_dict()["iou_token.weight"], sam_state["mask_decoder.iou_token.weight"]
    )
    losses = model(batch_of(SegConversations(length=4)))
    assert all(torch.isfinite(v) for v in losses.values())
    from segfast.models.tiny import tiny_llama

    tiny_llama(vocab_size=len(vocabulary()) + 4).save_pretrained(tmp_path / "llama")
    word_tokenizer(vocabulary()).save_pretrained(tmp_path / "llama")
    with pytest.raises(ConfigError, match="not a LLaVA-style model"):
        build("lisa", path=str(tmp_path / "llama"))


def test_reasonseg_and_refcoco_conversations(tmp_path):
    image = np.zeros((40, 60, 3), np.uint8)
    (tmp_path / "rs" / "train").mkdir(parents=True)
    Image.fromarray(image).save(tmp_path / "rs" / "train" / "a.jpg")
    (tmp_path / "rs" / "train" / "a.json").write_text(
        json.dumps(
            {
                "text": ["what holds the drink?"],
                "is_sentence": True,
                "shapes": [{"label": "target", "points": [[0, 0], [30, 0], [30, 20], [0, 20]]}],
            }
        )
    )
    write_refer(
        tmp_path / "rc",
        image,
        [
            {"split": "train", "ann_id": 7, "image_id": 1, "sentences": [{"sent": "left block"}]},
            {"split": "train", "ann_id": 8, "image_id": 1, "sentences": [{"sent": "right block"}]},
        ],
        [
            {"id": 7, "segmentation": [[0, 0, 30, 0, 30, 40, 0, 40]]},
            {"id": 8, "segmentation": [[30, 0, 60, 0, 60, 40, 30, 40]]},
        ],
    )
    rs = SegConversations("reasonseg", str(tmp_path / "rs"), image_size=64)[0]
    assert "what holds the drink?" in rs["conversation"][0]["question"] and rs["masks"].shape == (1, 64, 64)
    polygon = segmentation_mask([[0, 0, 30, 0, 30, 20, 0, 20]], 40, 60)
    assert polygon.sum() == 600 and torch.equal(rs["masks"], frame_masks(polygon[None], 64))
    rc = SegConversations("refcoco", str(tmp_path / "rc"), image_size=64, refs_per_image=3)[0]
    assert len(rc["conversation"]) == 2 and rc["conversation"][0]["question"].startswith("<image>")
    assert "<image>" not in rc["conversation"][1]["question"]
    for turn, mask in zip(rc["conversation"], rc["masks"]):  # each round's mask is its expression's
        inside, outside = (
            (mask[:43, :32], mask[:, 32:]) if "left block" in turn["question"] else (mask[:43, 32:], mask[:, :32])
        )
        assert inside.all() and not outside.any() and not mask[43:].any()
    # the engine asks for split "eval": it reads the files' eval_split
    assert len(SegConversations("reasonseg", str(tmp_path / "rs"), split="eval", eval_split="train")) == 1
    with pytest.raises(FileNotFoundError, match="val"):
        SegConversations("reasonseg", str(tmp_path / "rs"), split="eval")
    with pytest.raises(ValueError, match="format"):
        SegConversations("coco")


def test_lisa_trains_through_segfast_train_on_a_mixture(tmp_path):
    conv = {"name": "seg-conversations", "options": {"length": 8}}
    records = train_tiny(
        tmp_path,
        {"name": "lisa"},
        {
            "name": "mixture",
            "options": {
                "datasets": [conv, {**conv, "options": {"length": 8, "refs_per_image": 1}}],
                "rates": [3, 1],
                "length": 16,
            },
        },
        steps=3,
    )
    assert any("eval/iou/gIoU" in r for r in records)
    from segfast.train.evaluation import evaluate_checkpoint

    scores = evaluate_checkpoint(tmp_path / "checkpoints" / "step-000003", batches=2)
    assert scores["eval/iou/samples"] > 0 and 0 <= scores["eval/iou/cIoU"] <= 1 and np.isfinite(scores["eval/text"])
    with pytest.raises(ValueError, match="unknown dataset names"):
        segfast.train(
            {
                "model": {"name": "lisa"},
                "data": {"name": "mixture", "options": {"datasets": [{"name": "x"}]}},
                "run": {"output_dir": str(tmp_path / "bad"), "device": "cpu"},
            }
        )


@pytest.mark.parametrize("name", ["lisa", "lasagna", "segllm"])
def test_shipped_configs_load_with_list_overrides(name):
    from segfast import registry
    from segfast.config import build_options
    from segfast.train import load_config

    override = "data.options.datasets.0.options.root=/data/x" if name != "segllm" else "data.options.root=/data/x"
    cfg = load_config(f"configs/{name}.yaml", [override, "model.options.sam_checkpoint=/w/sam.pth"])
    build_options(registry.system(name).options, cfg.model.options)  # every key is known
    data = cfg.data.options["datasets"][0]["options"] if name != "segllm" else cfg.data.options
    assert data["root"] == "/data/x" and cfg.model.options["sam_checkpoint"] == "/w/sam.pth"
    with pytest.raises(ConfigError, match="not an index"):
        load_config(
            f"configs/{name}.yaml",
            ["data.options.datasets.9.x=1"] if name != "segllm" else ["model.lora.target_modules.9=1"],
        )
