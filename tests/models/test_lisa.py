"""LISA base: LLaVA v1 sequences (system prompt, image start/end tokens, labels on answers), one
conversation per sampled sentence, LISA's losses at the original resolution, the [SEG] state that
predicts [SEG], LISA's trainable set, generation, loading from saved tiny LLaVA/SAM, data
layouts, LISA's configuration and a train-through run whose loss falls."""

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
from segfast.data.conversations import SegConversations  # noqa: E402
from segfast.frames import SAM_MEAN, SAM_STD, clip_input, frame_masks, sam_frame, valid_size  # noqa: E402
from segfast.models.lisa.conversation import IGNORE, IMAGE_SLOT, MEMORY_SLOT, encode, predicting  # noqa: E402
from segfast.models.tiny import word_tokenizer  # noqa: E402
from segfast.nn.losses import mask_bce_loss, mask_dice_loss  # noqa: E402
from segfast.text.lisa import ANSWERS, EXPLAIN, LONG_QUESTIONS, SHORT_QUESTIONS, SYSTEM, vocabulary  # noqa: E402
from tests.models.seg_family import (  # noqa: E402
    assert_frozen_and_trained,
    batch_of,
    build,
    learning_curve,
    saved_weights,
    train_tiny,
    trainable_gradients,
    write_refer,
)

TRIANGLE = [[0, 0], [9, 0], [9, 9]]
# LISA's trainable set (train_ds.py): LoRA on q/v, embed_tokens, lm_head, text_hidden_fcs, the mask decoder
TRAINED = ("lora_A", "lora_B", "embed_tokens", "lm_head", "text_fc", "mask_decoder")


def _tokenizer():
    from segfast.models.llm import add_special_tokens

    tok = word_tokenizer(vocabulary())
    add_special_tokens(tok, ["<image>", "[SEG]"])
    return tok


def test_conversation_labels_answers_only_and_expands_image_and_memory_slots():
    tok = _tokenizer()
    image, seg = tok.convert_tokens_to_ids("<image>"), tok.convert_tokens_to_ids("[SEG]")
    rounds = [
        {"question": "<image>\nPlease segment the red box.", "answer": "It is [SEG]."},
        {"question": "Please segment the blue box.", "answer": "Sure, [SEG]."},
    ]
    e = encode(tok, rounds, image_token_id=image, image_slots=5, memory_after={seg}, memory_slots=2, system=SYSTEM)
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
    assert tok.unk_token_id not in e.ids  # the tiny vocabulary covers the templates and the system prompt
    with pytest.raises(ValueError, match="exactly one <image>"):
        encode(tok, [{"question": "no image", "answer": "x"}], image_token_id=image, image_slots=5)
    with pytest.raises(ValueError, match="not the last round"):
        encode(
            tok,
            [{"question": "<image> a", "answer": None}, {"question": "b", "answer": "c"}],
            image_token_id=image,
            image_slots=5,
        )


def _text_of(model, encoded) -> str:
    """The encoded sequence as text, image slots shown as one <image>."""
    first = encoded.kinds.index(IMAGE_SLOT)
    ids = encoded.ids[:first] + [model.image_token_id] + encoded.ids[first + model.image_slots :]
    return model.tokenizer.decode(ids, skip_special_tokens=False)


def test_llava_v1_system_prompt_and_image_start_end_tokens():
    """LISA's sequence: `<s>{system} USER: <im_start><image><im_end>\\n{question} ASSISTANT: {answer}</s>`."""
    turn = [{"question": "<image>\nPlease segment the red box in this image.", "answer": "It is [SEG]."}]
    model = build("lisa", image_start_end="on")
    e = model.encode(turn)
    text = _text_of(model, e)
    assert text.startswith("<s> A chat between a curious human and an artificial intelligence assistant")
    assert "questions . USER : <im_start> <image> <im_end> Please segment" in text  # the word tokenizer's spacing
    start, end = (model.tokenizer.convert_tokens_to_ids(t) for t in ("<im_start>", "<im_end>"))
    first = e.kinds.index(IMAGE_SLOT)
    assert e.ids[first - 1] == start and e.ids[first + model.image_slots] == end  # around the image features
    labelled = [t for t, lab in zip(e.ids, e.labels) if lab != IGNORE]
    assert model.tokenizer.decode(labelled) == "It is [SEG] . </s>"  # only the answer is learnt
    plain = build("lisa", image_start_end="off", system="")
    assert _text_of(plain, plain.encode(turn)).startswith("<s> USER : <image> Please segment")
    with pytest.raises(ConfigError, match="image_start_end"):
        build("lisa", image_start_end="yes")


def test_image_start_end_follow_the_checkpoint(tmp_path):
    weights = saved_weights(tmp_path)
    assert not build("lisa", path=weights["path"], sam_checkpoint=weights["sam_checkpoint"]).image_start_end
    config = json.loads((tmp_path / "llava" / "config.json").read_text())
    (tmp_path / "llava" / "config.json").write_text(json.dumps({**config, "mm_use_im_start_end": True}))
    model = build("lisa", path=weights["path"], sam_checkpoint=weights["sam_checkpoint"])
    assert model.image_start_end and model.tokenizer("<im_start>", add_special_tokens=False)["input_ids"] == [
        model.tokenizer.convert_tokens_to_ids("<im_start>")
    ]


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


def test_mask_losses_are_taken_at_the_original_resolution():
    """LISA resizes each mask back (crop to the unpadded frame, bilinear to the label's size) before
    BCE/DICE: the loss equals that computation, and differs from the loss in SAM's frame."""
    model = build("lisa", sam_image_size=32)
    batch = batch_of(SegConversations(length=4, image_size=32))  # 48 x 64 scenes in a 32 frame
    _, logits = model.run(batch)
    bce, dice = [], []
    for b, (pred, gt) in enumerate(zip(logits, batch["original_masks"])):
        h, w = batch["valid_size"][b].tolist()
        at = F.interpolate(pred[:, None, :h, :w], size=gt.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        bce.append(F.binary_cross_entropy_with_logits(at, gt.float(), reduction="none").mean((1, 2)))
        dice.append(mask_dice_loss(at, gt))
    model.run = lambda b: (type("Out", (), {"loss": torch.tensor(0.0)})(), logits)
    losses = model(batch)
    assert batch["original_masks"][0].shape[-2:] == (48, 64)
    torch.testing.assert_close(losses["bce"], 2.0 * torch.cat(bce).mean())
    torch.testing.assert_close(losses["dice"], 0.5 * torch.cat(dice).mean())
    model.options.loss_resolution = "frame"
    assert abs(float(model(batch)["bce"]) - float(losses["bce"])) > 1e-4  # the frame weighs pixels differently


def test_one_conversation_per_sentence_with_the_image_and_lisas_trainable_set():
    model = build("lisa")
    batch = batch_of(SegConversations(sentences_per_image=3, length=4))
    for group, masks, original in zip(batch["conversations"], batch["masks"], batch["original_masks"]):
        assert len(group) == 3 and all(len(c) == 1 and c[0]["question"].startswith("<image>\n") for c in group)
        assert len(masks) == len(original) == 3 and original.shape[-2:] == (48, 64)
    seen = []
    embed = model.embed
    model.embed = lambda encoded, feats, *a, **k: (seen.append((encoded, feats)), embed(encoded, feats, *a, **k))[1]
    _, logits = model.run(batch)
    encoded, feats = seen[0]
    assert len(encoded) == 6 and all(e.kinds.count(IMAGE_SLOT) == model.image_slots for e in encoded)
    torch.testing.assert_close(feats[0], feats[2])  # sample 0's image in each of its three sequences
    assert [len(x) for x in logits] == [3, 3]
    grads = trainable_gradients(model, model(batch))
    assert_frozen_and_trained(
        model,
        grads,
        trained=("lora_B", "text_fc", "mask_decoder", "embed_tokens", "lm_head"),
        frozen=("vision_tower", "multi_modal_projector", "image_encoder", "prompt_encoder", "iou_prediction_head"),
    )
    extra = [n for n in grads if not any(part in n for part in TRAINED)]
    assert not extra, extra  # exactly LISA's set
    assert not any("q_proj.lora" in n and "vision_tower" in n for n in grads)
    with pytest.raises(ValueError, match="masks: sample 0 has 2 target masks but its answers have 3"):
        model({**batch, "original_masks": [m[:2] for m in batch["original_masks"]]})


def test_the_decoder_prompt_is_the_state_that_predicts_seg():
    """The query of each [SEG] is text_fc of the last layer's state one position before it (the
    state whose next-token prediction is [SEG]), per conversation and in answer order."""
    model = build("lisa")
    batch = batch_of(SegConversations(sentences_per_image=2, length=2))
    batch["conversations"][0][1] = [{"question": "<image>\nPlease segment the red box.", "answer": "[SEG] and [SEG]."}]
    captured, hidden = [], {}
    decode = model.decode
    model.decode = lambda emb, q: (captured.append(q), decode(emb, q))[1]
    forward = model.lm.forward
    model.lm.forward = lambda *a, **k: hidden.setdefault("out", forward(*a, **k))
    encoded = [model.encode(c) for group in batch["conversations"] for c in group]
    model.run(batch)
    states = hidden["out"].hidden_states[-1]
    for b, rows in ((0, (0, 1)), (1, (2, 3))):
        expected = []
        for row in rows:
            seg_at = [i for i, t in enumerate(encoded[row].ids) if t == model.seg_id]
            expected += [model.text_fc(states[row, p - 1].float()) for p in seg_at]
        torch.testing.assert_close(captured[b][:, 0], torch.stack(expected))
    assert len(captured[0]) == 3 and len(captured[1]) == 2


def test_generation_warns_without_seg_and_returns_only_new_masks():
    model = build("lisa").eval()
    batch = batch_of(SegConversations(sentences_per_image=2, length=4))
    with pytest.warns(UserWarning, match=r"no \[SEG\] token was generated"):
        out = model.generate(batch, max_new_tokens=4, bad_words_ids=[[model.seg_id]])
    h, w = (int(x) for x in batch["valid_size"][0])
    assert out[0]["masks"].shape == (0, h, w)
    # biased to say only [SEG]: a mask per generated [SEG], no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = model.generate(batch, max_new_tokens=3, sequence_bias={(model.seg_id,): 1e4})
    assert out[0]["text"].split() == ["[SEG]"] * 3 and out[0]["masks"].shape == (3, h, w)


def test_loads_saved_tiny_llava_and_sam_with_the_projector_frozen(tmp_path):
    weights = saved_weights(tmp_path)
    model = build("lisa", path=weights["path"], sam_checkpoint=weights["sam_checkpoint"])
    seg = model.tokenizer("[SEG]", add_special_tokens=False)["input_ids"]
    assert seg == [model.seg_id] and "[SEG]" in model.tokenizer.get_added_vocab()  # atomic, one id
    assert not any("lora" in n for n, _ in model.named_parameters() if "vision_tower" in n)
    assert not any(p.requires_grad for n, p in model.named_parameters() if "multi_modal_projector" in n)
    assert "multi_modal_projector" not in model.lm.peft_config["default"].modules_to_save  # nor saved as trained
    trained = build("lisa", path=weights["path"], sam_checkpoint=weights["sam_checkpoint"], train_projector=True)
    assert any(p.requires_grad for n, p in trained.named_parameters() if "multi_modal_projector" in n)
    assert "multi_modal_projector" in trained.lm.peft_config["default"].modules_to_save
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


def test_new_token_rows_are_drawn_as_lisas_transformers_drew_them(tmp_path):
    # LISA's transformers 4.31 resize_token_embeddings: the [SEG] rows of embed_tokens and lm_head
    # are N(0, initializer_range) (_init_weights), not the old rows' mean (later transformers' default)
    weights = saved_weights(tmp_path)
    model = build("lisa", path=weights["path"], sam_checkpoint=weights["sam_checkpoint"])
    base = model.lm.get_base_model()
    std = base.config.text_config.initializer_range
    for matrix in (base.get_input_embeddings().weight, base.get_output_embeddings().weight):
        row, old = matrix[model.seg_id].detach(), matrix[: model.seg_id].detach()
        assert 0.5 * std < float(row.std()) < 2 * std
        assert float((row - old.mean(0)).abs().max()) > 0.1 * std  # not the old rows' mean


def _reasonseg(root, explanation: bool = True):
    (root / "train").mkdir(parents=True)
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(root / "train" / "a.jpg")
    (root / "train" / "a.json").write_text(
        json.dumps(
            {
                "text": ["what holds the drink?", "where would you sit?", "the thing to drink from", "a fourth"],
                "is_sentence": True,
                "shapes": [{"label": "target", "points": [[0, 0], [30, 0], [30, 20], [0, 20]]}],
            }
        )
    )
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(root / "train" / "b.jpg")
    (root / "train" / "b.json").write_text(
        json.dumps({"text": ["Cup"], "is_sentence": False, "shapes": [{"label": "x", "points": TRIANGLE}]})
    )
    (root / "explanatory").mkdir()
    item = {"image": "a.jpg", "query": "what holds the drink?", "outputs": "The cup holds it."}
    items = [item] if explanation else []
    (root / "explanatory" / "train.json").write_text(json.dumps(items))
    return root


def test_reasonseg_sentences_switch_templates_on_is_sentence(tmp_path):
    root = _reasonseg(tmp_path / "rs", explanation=False)
    ds = SegConversations("reasonseg", str(root), image_size=64)
    a, b = ds[0], ds[1]
    assert len(a["conversations"]) == 3 and len(b["conversations"]) == 1  # <= 3 sentences, each its own conversation
    longs = {t.split("\n", 1)[1].replace("{sentence}", "") for t in LONG_QUESTIONS}
    for (turn,) in a["conversations"]:
        sentence = turn["question"].split("\n", 1)[1]
        assert any(sentence.endswith(t) for t in longs) and turn["answer"] in ANSWERS
    shorts = [t.format(name="cup") for t in SHORT_QUESTIONS]
    assert b["conversations"][0][0]["question"] in shorts  # is_sentence false: LISA's short template, lower-cased
    polygon = torch.zeros(40, 60, dtype=torch.bool)
    polygon[:21, :31] = True  # get_mask_from_json's OpenCV drawing includes the outline
    assert torch.equal(a["original_masks"][0], polygon)
    assert torch.equal(a["masks"][0], frame_masks(polygon[None], 64)[0])
    with pytest.raises(FileNotFoundError, match="explanatory=-1"):
        (root / "explanatory" / "train.json").unlink()
        SegConversations("reasonseg", str(root))
    assert len(SegConversations("reasonseg", str(root), explanatory=-1)) == 2


def test_reasonseg_explanatory_answers(tmp_path):
    """LISA's 10%: an image with an explanation is answered by the explanation alone (no mask) with
    probability `explanatory`, else plainly or with "{ANSWER} {explanation}" at even odds."""
    root = _reasonseg(tmp_path / "rs")
    only = SegConversations("reasonseg", str(root), image_size=32, clip_size=16, explanatory=1.0)
    for epoch in range(3):
        only.set_epoch(epoch)
        s = only[0]
        assert len(s["original_masks"]) == 0 and len(s["conversations"]) == 3
        for (turn,) in s["conversations"]:
            assert turn["answer"] == "The cup holds it." and "[SEG]" not in turn["answer"]
            assert turn["question"].startswith("<image>\n") and "segmentation" not in turn["question"]
    never = SegConversations("reasonseg", str(root), image_size=32, clip_size=16, explanatory=0.0)
    kinds = set()
    for epoch in range(12):
        never.set_epoch(epoch)
        s = never[0]
        assert len(s["original_masks"]) == 3  # never text-only
        turn = s["conversations"][0][0]
        explained = turn["answer"].endswith(" The cup holds it.")
        kinds.add(explained)
        if explained:
            assert any(turn["question"].endswith(e) for e in EXPLAIN) and turn["answer"].split(" The cup")[0] in ANSWERS
    assert kinds == {True, False}
    assert all(never[1]["conversations"][0][0]["answer"] in ANSWERS for _ in range(2))  # no explanation for b.jpg


def test_refcoco_samples_sentences_across_referents(tmp_path):
    image = np.zeros((40, 60, 3), np.uint8)
    refs = [
        {"split": "train", "ann_id": 7, "image_id": 1, "sentences": [{"sent": "left block"}]},
        {"split": "train", "ann_id": 8, "image_id": 1, "sentences": [{"sent": "Right Block"}]},
    ]
    anns = [
        {"id": 7, "segmentation": [[0, 0, 30, 0, 30, 40, 0, 40]]},
        {"id": 8, "segmentation": [[30, 0, 60, 0, 60, 40, 30, 40]]},
    ]
    write_refer(tmp_path / "rc", image, refs, anns)
    rc = SegConversations("refcoco", str(tmp_path / "rc"), image_size=64)[0]
    assert len(rc["conversations"]) == 2 and all(c[0]["question"].startswith("<image>\n") for c in rc["conversations"])
    for (turn,), mask in zip(rc["conversations"], rc["original_masks"]):  # each conversation's mask is its expression's
        left = "left block" in turn["question"]
        inside, outside = (mask[:, :30], mask[:, 30:]) if left else (mask[:, 30:], mask[:, :30])
        assert inside.all() and not outside.any()
    assert any("right block" in c[0]["question"] for c in rc["conversations"])  # lower-cased as LISA asks it
    # refCLEF: the same layout, its ImageCLEF images under images/saiapr_tc-12 (LISA's refer_seg_dataset)
    write_refer(tmp_path / "clef", image, refs, anns, dataset="refclef", images="saiapr_tc-12")
    clef = SegConversations("refcoco", str(tmp_path / "clef"), image_size=64, dataset="refclef")[0]
    assert clef["original_masks"].shape == (2, 40, 60)
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
                "datasets": [conv, {"name": "sem-seg-conversations", "options": {"length": 8}}],
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


@pytest.mark.slow
def test_lisa_loss_falls_on_a_tiny_learnable_task(tmp_path):
    """Two generated scenes, their boxes asked by name: 24 steps bring the text loss and the mask
    BCE well down (the same data every epoch, sentences redrawn)."""
    curve = learning_curve(
        tmp_path, "lisa", {"name": "seg-conversations", "options": {"length": 2, "sentences_per_image": 2}}, 24
    )
    (first, last), (text0, text1), (bce0, bce1) = curve["loss"], curve["text"], curve["bce"]
    assert last < 0.6 * first and text1 < 0.5 * text0 and bce1 < 0.8 * bce0, curve


def test_shipped_lisa_config_is_lisas_recipe():
    from segfast import registry
    from segfast.config import build_options
    from segfast.train import load_config

    cfg = load_config("configs/lisa.yaml", ["data.options.datasets.0.options.root=/data/x"])
    options = build_options(registry.system("lisa").options, cfg.model.options)
    assert (options.lambda_text, options.lambda_bce, options.lambda_dice) == (1.0, 2.0, 0.5)
    assert not options.train_projector and options.loss_resolution == "original" and options.system == SYSTEM
    lora = cfg.model.lora
    assert (lora.r, lora.alpha, lora.dropout, list(lora.target_modules)) == (8, 16, 0.05, ["q_proj", "v_proj"])
    o, r = cfg.optim, cfg.run
    assert (o.lr, tuple(o.betas), o.weight_decay, o.warmup_steps, o.schedule, o.clip_grad) == (
        3e-4,
        (0.9, 0.95),
        0.0,
        100,
        "linear",
        1.0,
    )
    # 10 epochs x 500 steps of 2 x 10 x 8 samples; an epoch is 80,000 samples
    assert (r.total_steps, r.global_batch_size, cfg.data.options["length"]) == (5000, 160, 80000)
    assert cfg.data.options["length"] // r.global_batch_size == 500
    members, rates = cfg.data.options["datasets"], cfg.data.options["rates"]
    groups = {}
    for member, rate in zip(members, rates):
        o = member["options"]
        group = {"sem-seg-conversations": "sem_seg", "vqa-conversations": "vqa"}.get(member["name"]) or (
            "reason_seg" if o["format"] == "reasonseg" else "refer_seg"
        )
        groups.setdefault(group, []).append((o.get("format"), o.get("dataset"), rate))
    assert {g: round(sum(x[2] for x in v), 6) for g, v in groups.items()} == {
        "sem_seg": 9,
        "refer_seg": 3,
        "vqa": 3,
        "reason_seg": 1,
    }
    assert all(len({x[2] for x in v}) == 1 for v in groups.values())  # uniform within a group, as LISA draws
    assert {x[0] for x in groups["sem_seg"]} == {"ade20k", "cocostuff", "pascal_part", "paco_lvis", "mapillary"}
    assert {x[1] for x in groups["refer_seg"]} == {"refclef", "refcoco", "refcoco+", "refcocog"}
    assert members[-1]["options"]["explanatory"] == 0.1
    assert data_root(cfg) == "/data/x"
    with pytest.raises(ConfigError, match="not an index"):
        load_config("configs/lisa.yaml", ["data.options.datasets.99.x=1"])


def data_root(cfg) -> str:
    return cfg.data.options["datasets"][0]["options"]["root"]


def test_shipped_segllm_config_loads_with_list_overrides():
    from segfast import registry
    from segfast.config import build_options
    from segfast.train import load_config

    cfg = load_config("configs/segllm.yaml", ["data.options.root=/data/x", "model.options.sam_checkpoint=/w/sam.pth"])
    build_options(registry.system("segllm").options, cfg.model.options)  # every key is known
    assert cfg.data.options["root"] == "/data/x" and cfg.model.options["sam_checkpoint"] == "/w/sam.pth"
    with pytest.raises(ConfigError, match="not an index"):
        load_config("configs/segllm.yaml", ["model.lora.target_modules.9=1"])


def test_sam_frame_matches_segment_anything_preprocessing():
    from segment_anything.utils.transforms import ResizeLongestSide

    image = np.full((30, 50, 3), 77, np.uint8)
    frame, (h, w) = sam_frame(image, 64)
    assert (h, w) == valid_size(30, 50, 64) == ResizeLongestSide(64).get_preprocess_shape(30, 50, 64)
    assert frame.shape == (3, 64, 64) and frame[:, h:].abs().sum() == 0 and frame[:, :, w:].abs().sum() == 0
    torch.testing.assert_close(frame[0, :h, :w], torch.full((h, w), (77 - SAM_MEAN[0]) / 58.395))


@pytest.mark.parametrize("hw", [(300, 500), (37, 91), (20, 30)])
def test_sam_frame_resizes_as_resize_longest_side_on_a_gradient(hw):
    # the authors' SAM input is ResizeLongestSide.apply_image (PIL, uint8): a float resize differs
    # by about 0.3 grey level on average; the uint8 one by a rare rounding step
    from segment_anything.utils.transforms import ResizeLongestSide

    h, w = hw
    yy, xx = np.mgrid[0:h, 0:w]
    image = np.stack([xx * 255 // w, yy * 255 // h, (xx * 7 + yy * 3) % 256], -1).astype(np.uint8)
    expect = torch.from_numpy(ResizeLongestSide(64).apply_image(image)).permute(2, 0, 1).float()
    frame, (fh, fw) = sam_frame(image, 64)
    got = frame[:, :fh, :fw] * torch.tensor(SAM_STD)[:, None, None] + torch.tensor(SAM_MEAN)[:, None, None]
    assert got.shape == expect.shape
    assert (got - expect).abs().max() < 1.01 and (got - expect).abs().mean() < 0.01


@pytest.mark.parametrize("hw", [(30, 50), (50, 30), (17, 64), (40, 40), (9, 11)])
def test_clip_input_is_what_clip_image_processor_makes(hw):
    # LISA, LaSagnA, SegLLM and LLM-Seg call CLIPImageProcessor (shorter side resized, centre crop):
    # a squash of the whole image to a square differs by whole columns on a gradient
    from transformers import CLIPImageProcessor

    h, w = hw
    yy, xx = np.mgrid[0:h, 0:w]
    image = np.stack([xx * 255 // w, yy * 255 // h, (xx * 7 + yy * 3) % 256], -1).astype(np.uint8)
    processor = CLIPImageProcessor(size={"shortest_edge": 24}, crop_size={"height": 24, "width": 24})
    expect = torch.from_numpy(processor(image, return_tensors="np")["pixel_values"][0])
    got = clip_input(image, 24)
    assert got.shape == expect.shape == (3, 24, 24)
    # PIL's and torch's bicubic differ by about a grey level (1/255 / CLIP_STD ~ 0.015) at most
    assert (got - expect)[:2].abs().max() < 0.05 and (got - expect).abs().mean() < 0.02


def test_vqa_conversations_train_the_text_only(tmp_path):
    from tests.data.layouts import llava_instruct

    vqa = segfast.data.DATASETS["vqa-conversations"](llava_instruct(tmp_path), "train", 0)
    model = build("lisa")
    batch = batch_of([vqa[0], vqa[0]])
    losses = model(batch)
    assert float(losses["bce"]) == float(losses["dice"]) == 0.0 and float(losses["text"]) > 0
    encoded = model.encode(batch["conversations"][0][0])
    labelled = [t for t in encoded.labels if t != IGNORE]  # both answers and their </s>, nothing else
    assert model.tokenizer.decode(labelled).split() == ["A", "<unk>", "box", ".", "</s>", "<unk>", ".", "</s>"]
    assert model.count_targets(batch) == 2 * len(labelled)


def test_grefcoco_is_scored_on_the_generated_answer_and_no_target_on_emptiness():
    """A sample that says generate is scored on the union of its generated masks; a no-target
    expression answered without a mask scores IoU 1 (gRefCOCO's rule), with one 0."""
    from segfast.metrics import IoUMeter

    model = build("lisa")
    batch = batch_of(SegConversations(length=2, split="eval"))
    batch["generate"] = [True, True]
    batch["original_masks"][1] = torch.zeros_like(batch["original_masks"][1])  # sample 1: no target
    batch["original_masks"][0] = torch.zeros_like(batch["original_masks"][0])
    batch["original_masks"][0][0, :15] = True  # overlaps both masks: only their union scores 15 / 20
    s = model.decoder.image_size
    first = torch.full((2, s, s), -4.0)
    first[0, :10], first[1, 10:20] = 4.0, 4.0  # two [SEG] masks: their union is the prediction
    model.generate = lambda b, **k: [{"logits": first}, {"logits": torch.zeros(0, s, s)}]
    model.run = lambda b: pytest.fail("a generate sample must not be teacher-forced")
    meters = {"iou": IoUMeter()}
    model.evaluate(batch, meters)
    target = batch["original_masks"][0][0]
    union = torch.zeros_like(target)
    union[:20] = True
    expected = float((union & target).sum()) / float((union | target).sum())
    assert expected == pytest.approx(15 / 20)
    assert meters["iou"].compute()["gIoU"] == pytest.approx((expected + 1.0) / 2, abs=1e-6)
