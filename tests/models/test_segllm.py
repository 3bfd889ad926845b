"""SegLLM: question slots filled with the named mask's encoding, the token after [SEG] trained,
eq. 1's targets (the reference mask is masks ++ given [refs[r]]) and weights, the trainable set,
round-by-round inference on the model's own masks or the ground truth, per-round and REC metrics,
single-round referring data, loading tiny LLaVA/SAM/CLIP from disk, segfast.train and evaluate."""

import numpy as np
import pytest
import torch

pytest.importorskip("segment_anything")

from segfast.data.multiround import MultiRoundConversations  # noqa: E402
from segfast.metrics import BoxAccuracyMeter, box_iou, mask_box  # noqa: E402
from segfast.models.lisa.conversation import IGNORE, MEMORY_SLOT  # noqa: E402
from segfast.models.llava import base_model, projector, vision_tower  # noqa: E402
from segfast.models.segllm.memory import box_coords, llava_cls, mask_boxes  # noqa: E402
from segfast.nn.losses import framed_mask_losses  # noqa: E402
from segfast.text.segllm import ENCODE, SYSTEM  # noqa: E402
from tests.models.seg_family import (  # noqa: E402
    assert_frozen_and_trained,
    batch_of,
    build,
    saved_weights,
    train_tiny,
    trainable_gradients,
    write_refer,
)


def _batch(n=2, **options):
    return batch_of(MultiRoundConversations(length=8, max_rounds=3, **options), n)


def _two_rounds(given: bool = False) -> dict:
    """A batch of one image with two square targets; round 2 refers to round 1 (or to a given mask)."""
    sample = MultiRoundConversations(length=2)[0]
    masks = torch.zeros(2, 64, 64, dtype=torch.bool)
    masks[0, 4:20, 4:20], masks[1, 30:50, 30:60] = True, True
    other = torch.zeros(1, 64, 64, dtype=torch.bool)
    other[0, 40:60, 0:20] = True
    ref = 2 if given else 0
    sample.update(
        conversation=[
            {"question": "<image> Segment the red box.", "answer": "It is [SEG].", "encode": []},
            {
                "question": f"{ENCODE} Segment the blue box right of it.",
                "answer": "Relative to [REF], it is [SEG].",
                "encode": [ref],
            },
        ],
        masks=masks,
        given=other if given else masks[:0],
        refs=torch.tensor([-1, ref]),
    )
    return batch_of([sample], 1)


def test_question_slots_carry_the_named_masks_encoding():
    model = build("segllm", encoding_dropout=0.0)  # two passes compared: no random dropping
    batch = _two_rounds(given=True)
    image = batch["image"][0]
    encoded = [model.encode(c) for c in batch["conversation"]]
    feats = model.encode_images(batch)[0]
    pool = model.encode_masks(image, model.pool_masks(batch, 0))
    memory = [model.sample_memory(batch["conversation"][0], pool, 2)]
    embeds, _, _, ids = model.embed(encoded, feats, memory)
    mask_at = (ids[0] == model.slot_ids[0]).nonzero()[:, 0]
    box_at = (ids[0] == model.slot_ids[1]).nonzero()[:, 0]
    assert len(mask_at) == len(box_at) == 1 and box_at[0] == mask_at[0] + 1
    # the given mask's (index 2 = given[0]) encoding added to the slot token's embedding (authors' code)
    tokens = model.lm.get_input_embeddings().weight
    torch.testing.assert_close(embeds[0, mask_at[0]], tokens[model.slot_ids[0]] + pool[2, 0])
    torch.testing.assert_close(embeds[0, box_at[0]], tokens[model.slot_ids[1]] + pool[2, 1])
    replaced = build("segllm", encoding_dropout=0.0, slot_embedding="replace").embed(encoded, feats, memory)[0]
    torch.testing.assert_close(replaced[0, mask_at[0]], pool[2, 0])
    after = (torch.tensor(encoded[0].kinds) == MEMORY_SLOT).nonzero()[:, 0]
    torch.testing.assert_close(embeds[0, after[:2]], pool[0])  # after round 1's [SEG]: its own target
    # the given mask reaches the text loss only through the slot
    moved = {**batch, "given": [torch.roll(batch["given"][0], 20, dims=-1)]}
    with torch.no_grad():
        assert model(batch)["text"] != model(moved)["text"]
        no_slot = _two_rounds(given=True)
        no_slot["conversation"][0][1] = {
            **no_slot["conversation"][0][1],
            "question": "Segment the blue box.",
            "encode": [],
        }
        no_slot_moved = {**no_slot, "given": moved["given"]}
        assert model(no_slot)["text"] == model(no_slot_moved)["text"]
    with pytest.raises(ValueError, match="slots"):
        model.encode([{"question": f"<image> {ENCODE} x", "answer": "It is [SEG].", "encode": []}])
    off = build("segllm", mask_encoding=False, encoding_dropout=0.0)  # Table 8's ablations zero a part
    codes = off.encode_masks(image, batch["masks"][0])
    assert not codes[:, 0].any() and codes[:, 1].abs().sum() > 0


def test_mask_crop_is_padded_square_not_stretched():
    # authors' code: the box crop is pasted top-left into a black max(h, w) square before CLIP
    from segfast.frames import CLIP_MEAN, CLIP_STD, SAM_MEAN, SAM_STD

    encoder = build("segllm").memory
    size = encoder.size
    colour = torch.tensor([200.0, 40.0, 90.0])
    image = ((colour - torch.tensor(SAM_MEAN)) / torch.tensor(SAM_STD))[:, None, None].expand(3, 64, 64)
    masks = torch.zeros(2, 64, 64, dtype=torch.bool)
    masks[0, 8:12, 4:20] = True  # 4 rows x 16 columns: the top quarter of its square
    masks[1, 10:26, 30:34] = True  # 16 rows x 4 columns: the left quarter
    rgb = encoder.crops(image, masks) * torch.tensor(CLIP_STD)[:, None, None] + torch.tensor(CLIP_MEAN)[:, None, None]
    q, inside = size // 4, (colour / 255)[:, None, None]
    # the object fills its quarter (resampling blends one crop pixel at each edge), black beyond
    torch.testing.assert_close(rgb[0, :, 1 : q - 1, 1:-1], inside.expand(3, q - 2, size - 2))
    torch.testing.assert_close(rgb[1, :, 1:-1, 1 : q - 1], inside.expand(3, size - 2, q - 2))
    assert rgb[0, :, q + 1 :].abs().max() < 1e-6 and rgb[1, :, :, q + 1 :].abs().max() < 1e-6


def test_box_embedding_is_a_linear_layer_on_the_row_first_inclusive_box():
    # authors' code: mask_enc_head = nn.Linear(4, hidden) on [row0, col0, row1, col1] / 1024 (max inclusive)
    model = build("segllm", encoding_dropout=0.0)
    encoder = model.memory
    masks = torch.zeros(1, 64, 64, dtype=torch.bool)
    masks[0, 8:12, 4:20] = True  # rows 8..11, columns 4..19
    assert box_coords(mask_boxes(masks), 64).tolist() == [[8 / 64, 4 / 64, 11 / 64, 19 / 64]]
    assert encoder.box_proj.in_features == 4
    with torch.no_grad():
        box = model.encode_masks(torch.zeros(3, 64, 64), masks)[0, 1]
        torch.testing.assert_close(box, encoder.box_proj(torch.tensor([8.0, 4.0, 11.0, 19.0]) / 64))
    assert build("segllm", box_embedding="fourier").memory.box_proj.in_features == 4 * 2 * 8
    with pytest.raises(ValueError, match="box_embedding"):
        build("segllm", box_embedding="sine")


def test_mask_embedding_is_llavas_projector_on_the_cls_of_its_selected_layer():
    # authors' code: encode_images(crops, features='cls'): hidden_states[-2][:, :1] through mm_projector
    model = build("segllm", encoding_dropout=0.0)
    assert model.memory.clip is None and not hasattr(model.memory, "mask_mlp")
    assert base_model(model.lm).config.vision_feature_layer == -2
    masks = torch.zeros(2, 64, 64, dtype=torch.bool)
    masks[0, 8:30, 4:20], masks[1, 40:60, 10:50] = True, True
    image = torch.randn(3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        embedding = model.encode_masks(image, masks)[:, 0]
        crops = model.memory.crops(image, masks)
        tower = vision_tower(model.lm)
        cls = tower(crops, output_hidden_states=True).hidden_states[-2][:, 0]
        torch.testing.assert_close(embedding, projector(model.lm)(cls))
        assert not torch.allclose(embedding, projector(model.lm)(tower(crops).pooler_output))
    assert build("segllm", mask_clip="separate").memory.clip is not None
    with pytest.raises(ValueError, match="mask_clip"):
        build("segllm", mask_clip="clip")


def test_encodings_dropped_in_training_and_halved_in_evaluation():
    # authors' code: each mask/box embedding zeroed with probability 0.5 in training, times 0.5 otherwise
    model = build("segllm")
    masks = torch.zeros(16, 64, 64, dtype=torch.bool)
    for i in range(16):
        masks[i, 2 * i : 2 * i + 8, i : i + 20] = True
    image = torch.zeros(3, 64, 64)
    with torch.no_grad():
        full = model.memory(image, masks, embed=lambda crops: llava_cls(model.lm, crops))
        dropped = model.train().encode_masks(image, masks)
        kept = dropped.abs().sum(-1) > 0
        assert 0.2 < kept.float().mean() < 0.8 and (kept[:, 0] != kept[:, 1]).any()  # mask and box apart
        torch.testing.assert_close(dropped[kept], full[kept])
        torch.testing.assert_close(model.eval().encode_masks(image, masks), 0.5 * full)
        off = build("segllm", encoding_dropout=0.0).train()
        torch.testing.assert_close(off.encode_masks(image, masks), full)
    with pytest.raises(ValueError, match="encoding_dropout"):
        build("segllm", encoding_dropout=1.0)


def test_conversation_has_vicuna_v1_system_prompt():
    # authors' code: preprocess_plain_gen formats with conv_templates["vicuna_v1"] ("a curious user")
    model = build("segllm")
    assert SYSTEM.startswith("A chat between a curious user and") and model.options.system == SYSTEM
    enc = model.encode([{"question": "<image> Segment the red box.", "answer": "It is [SEG].", "encode": []}])
    head = model.tokenizer(SYSTEM + "USER:", add_special_tokens=False)["input_ids"]
    start = int(model.tokenizer.bos_token_id is not None)
    assert enc.ids[start : start + len(head)] == head


def test_the_token_after_seg_is_trained():
    model = build("segllm")
    rounds = [{"question": "<image> Segment the red box.", "answer": "It is [SEG].", "encode": []}]
    enc = model.encode(rounds)
    seg = enc.ids.index(model.seg_id)
    dot = model.tokenizer.convert_tokens_to_ids(".")
    assert enc.kinds[seg + 1] == MEMORY_SLOT and enc.labels[seg + 1] == dot  # [SEG]'s position predicts "."
    assert enc.labels[seg + 2] == IGNORE and enc.labels[seg + 3] == dot  # and the last slot's, with the memory
    untrained = build("segllm", train_after_seg=False).encode(rounds)
    assert untrained.labels[seg + 1] == IGNORE
    assert (
        model.count_targets({"conversation": [rounds]})
        == build("segllm", train_after_seg=False).count_targets({"conversation": [rounds]}) + 1
    )


def test_eq1_targets_weights_and_averaging():
    model = build("segllm").eval()  # passes compared: the encodings scaled, not randomly dropped
    assert (model.options.lambda_bce, model.options.lambda_dice) == (1.0, 1.0)
    for given in (False, True):
        batch = _two_rounds(given)
        with torch.no_grad():
            losses = model(batch)
            _, results = model.run(batch)
        targets, refs, which, _ = results[0]
        assert which == [1] and len(refs) == 1
        pool = model.pool_masks(batch, 0)
        bce_t, dice_t = framed_mask_losses([targets], [batch["masks"][0]], batch["valid_size"])
        bce_r, dice_r = framed_mask_losses([refs], [pool[[int(batch["refs"][0][1])]]], batch["valid_size"])
        torch.testing.assert_close(losses["bce"], (bce_t.sum() + bce_r.sum()) / 2)  # eq. 1 per round, mean of rounds
        torch.testing.assert_close(losses["dice"], (dice_t.sum() + dice_r.sum()) / 2)
        wrong = framed_mask_losses([refs], [batch["masks"][0][[1]]], batch["valid_size"])[0]  # masks[r], not refs[r]
        assert not torch.isclose(losses["bce"], (bce_t.sum() + wrong.sum()) / 2)
    without = build("segllm", reference_loss=False).eval()
    with torch.no_grad():
        plain = without(_two_rounds())
        _, results = without.run(_two_rounds())
    bce_t, _ = framed_mask_losses([results[0][0]], [_two_rounds()["masks"][0]], _two_rounds()["valid_size"])
    torch.testing.assert_close(plain["bce"], bce_t.mean())
    lisa = build("segllm", lambda_bce=2.0, lambda_dice=0.5).eval()  # LISA's weights as an option
    with torch.no_grad():
        weighted = lisa(_two_rounds())
    with torch.no_grad():
        base = build("segllm").eval()(_two_rounds())
    torch.testing.assert_close(weighted["bce"], 2 * base["bce"])


def test_seg_to_prompt_mlp_is_linear_gelu_linear():
    # authors' code: segmentator_predictor = build_vision_predictor (mlp2x_gelu), LISA's has a ReLU
    fc = build("segllm").text_fc
    x = torch.randn(5, fc[0].in_features, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(fc(x), fc[2](torch.nn.functional.gelu(fc[0](x))))
    assert isinstance(build("segllm", seg_activation="relu").text_fc[1], torch.nn.ReLU)
    with pytest.raises(ValueError, match="seg_activation"):
        build("segllm", seg_activation="tanh")


def test_training_mask_loss_takes_loss_rounds_random_rounds():
    # authors' code: hipie.yaml max_rounds 2, segment_mask keeps 2 random masks per conversation in training
    assert build("segllm").options.loss_rounds == 2
    model = build("segllm", encoding_dropout=0.0, loss_rounds=1).train()
    batch = _two_rounds()
    with torch.no_grad():
        ((targets, refs, _, queries),) = model.run(batch)[1]
        bce, _ = framed_mask_losses([targets], [batch["masks"][0]], batch["valid_size"])
        ref_bce, _ = framed_mask_losses([refs], [batch["masks"][0][:1]], batch["valid_size"])
        per_round = [bce[0], bce[1] + ref_bce[0]]  # eq. 1 of round 1, of round 2 (with its reference)
        seen = {round(float(model(batch)["bce"]), 5) for _ in range(12)}
        assert seen == {round(float(v), 5) for v in per_round}  # one round at a time, each drawn
        all_rounds = build("segllm", encoding_dropout=0.0, loss_rounds=0).train()(batch)
        everything = all_rounds["bce"]
        torch.testing.assert_close(everything, sum(per_round) / 2)
        # hipie.yaml sparse_embed_L2_loss_weight 1e-3: the mean square of the kept rounds' decoder prompts
        torch.testing.assert_close(all_rounds["query_l2"], 1e-3 * queries.pow(2).mean())
        one = {round(float(model(batch)["query_l2"]), 9) for _ in range(12)}
        assert one == {round(float(1e-3 * q.pow(2).mean()), 9) for q in queries}
        assert "query_l2" not in build("segllm", query_l2=0.0)(batch)
        torch.testing.assert_close(model.eval()(batch)["bce"], everything)  # evaluation: every round
    with pytest.raises(ValueError, match="loss_rounds"):
        build("segllm", loss_rounds=-1)


def test_training_defaults_and_trainable_set(tmp_path):
    from segfast.train import load_config

    cfg = load_config(base={"model": {"name": "segllm"}})
    assert (cfg.optim.lr, cfg.run.global_batch_size, cfg.model.lora.enabled) == (2e-5, 16, False)
    shipped = load_config("configs/segllm.yaml")
    assert (shipped.optim.lr, shipped.run.global_batch_size, shipped.model.lora.enabled) == (2e-5, 16, False)
    assert shipped.model.options["train_mask_decoder"] is False
    weights = saved_weights(tmp_path)
    model = build(
        "segllm", path=weights["path"], sam_checkpoint=weights["sam_checkpoint"], clip_path=weights["clip_path"]
    )
    batch = _batch()
    losses = model(batch)
    assert set(losses) == {"text", "bce", "dice", "query_l2"} and all(torch.isfinite(v) for v in losses.values())
    grads = trainable_gradients(model, losses)
    assert_frozen_and_trained(
        model,
        grads,
        trained=("lora_B", "text_fc", "memory.box_proj", "pad_query", "multi_modal_projector"),
        frozen=("vision_tower", "image_encoder", "mask_decoder"),  # §5.1: the decoder frozen
    )
    separate = build("segllm", mask_clip="separate", clip_path=weights["clip_path"])
    grads = trainable_gradients(separate, separate(batch))
    assert_frozen_and_trained(separate, grads, trained=("memory.mask_mlp",), frozen=("memory.clip",))
    trained = build("segllm", train_mask_decoder=True)
    assert any(p.requires_grad for p in trained.decoder.sam.mask_decoder.parameters())
    # full fine-tuning (the paper's): every language-model weight trains
    full = build("segllm")
    full_lm = [p.requires_grad for n, p in full.lm.named_parameters() if "vision_tower" not in n]
    assert all(full_lm) or any("lora" in n for n, _ in full.lm.named_parameters())


def test_memory_own_masks_or_ground_truth_and_per_round_metrics():
    model = build("segllm", max_rounds=3).eval()
    batch = _batch()
    moved = [torch.roll(m, 9, dims=-1) for m in batch["masks"]]
    own = model.converse(batch)
    own_moved = model.converse({**batch, "masks": moved})
    for a, b in zip(own, own_moved):  # the model's own masks: the ground truth never enters
        assert all(torch.equal(x["mask"], y["mask"]) for x, y in zip(a, b))
    teacher = [r[0] > 0 for r in model.run(batch)[1]]
    teacher_moved = [r[0] > 0 for r in model.run({**batch, "masks": moved})[1]]
    assert any(not torch.equal(a[1:], b[1:]) for a, b in zip(teacher, teacher_moved) if len(a) > 1)
    for mode in ("own", "ground_truth"):
        meters = {"iou": __import__("segfast.metrics", fromlist=["IoUMeter"]).IoUMeter()}
        model.evaluate({**batch, "memory": [mode] * 2}, meters)
        result = meters["rounds"].compute()
        assert result["round0/samples"] == 2 and result["samples"] == sum(len(c) for c in batch["conversation"])
        assert meters["rec"].compute()["samples"] == result["samples"]
        preds = own if mode == "own" else [[{"mask": m} for m in t] for t in teacher]
        expect = __import__("segfast.metrics", fromlist=["IoUMeter"]).IoUMeter(num_rounds=3)
        for b, replies in enumerate(preds):
            h, w = batch["valid_size"][b].tolist()
            for r, reply in enumerate(replies):
                expect.update(reply["mask"][None, :h, :w], batch["masks"][b][r][None, :h, :w], round=r)
        assert torch.equal(meters["rounds"].state, expect.state)
    with pytest.raises(ValueError, match="max_rounds"):
        build("segllm", max_rounds=1).evaluate(batch, {})


def test_box_accuracy_from_masks():
    a = torch.zeros(3, 10, 10, dtype=torch.bool)
    a[0, 0:4, 0:4], a[1, 5:10, 5:10] = True, True
    assert mask_box(a).tolist() == [[0, 0, 4, 4], [5, 5, 10, 10], [0, 0, 0, 0]]
    b = a.clone()
    b[0, 0:4, 4:6] = True  # IoU 16/24 > 0.5
    b[1] = False
    b[1, 0:2, 0:2] = True  # no overlap
    torch.testing.assert_close(box_iou(mask_box(a), mask_box(b)), torch.tensor([16 / 24, 0.0, 0.0]))
    meter = BoxAccuracyMeter(num_rounds=2)
    meter.update(b[:2], a[:2], round=1)
    assert meter.compute()["Acc@0.5"] == 0.5 and meter.compute()["round1/samples"] == 2
    assert mask_boxes(a[:2]).tolist() == mask_box(a[:2]).tolist()


def test_interactive_rounds_with_generation_and_given_masks():
    model = build("segllm").eval()
    batch = _two_rounds(given=True)
    several = model.converse(batch, generate=True, max_new_tokens=2, sequence_bias={(model.seg_id,): 1e4})
    assert all(r["text"].split() == ["[SEG]"] * 2 for rs in several for r in rs)
    none = model.converse(batch, generate=True, max_new_tokens=3, bad_words_ids=[[model.seg_id]])
    assert all("[SEG]" not in r["text"] and not r["mask"].any() for rs in none for r in rs)
    later = _two_rounds()
    later["conversation"][0][0] = {**later["conversation"][0][0], "question": f"<image> {ENCODE} x", "encode": [1]}
    with pytest.raises(ValueError, match="not an earlier one"):
        model.converse(later)


def test_single_round_referring_data_and_evaluate_protocols(tmp_path):
    """segfast evaluate of SegLLM on LISA's single-round referring data (refs absent) and on its
    own protocols (refcoco through the multiround reader, REC)."""
    from segfast.data.conversations import SegConversations
    from segfast.train.evaluation import evaluate_checkpoint

    image = np.zeros((40, 60, 3), np.uint8)
    write_refer(
        tmp_path / "rc",
        image,
        [{"split": "val", "ann_id": 7, "image_id": 1, "sentences": [{"sent": "left"}, {"sent": "dark one"}]}],
        [{"id": 7, "image_id": 1, "bbox": [0, 0, 30, 40], "segmentation": [[0, 0, 30, 0, 30, 40, 0, 40]]}],
    )
    model = build("segllm").eval()
    batch = batch_of(SegConversations("refcoco", str(tmp_path / "rc"), split="eval"), 2)
    assert "refs" not in batch and set(model(batch)) == {"text", "bce", "dice", "query_l2"}
    meters = {"iou": __import__("segfast.metrics", fromlist=["IoUMeter"]).IoUMeter()}
    model.evaluate(batch, meters)
    assert meters["iou"].compute()["samples"] == 2
    records = train_tiny(
        tmp_path / "run",
        {"name": "segllm", "lora": {"enabled": True, "r": 4, "alpha": 8}, "options": {"max_rounds": 4}},
        {"name": "multiround", "options": {"length": 8, "max_rounds": 4}},
    )
    assert any("eval/rounds/round1/cIoU" in r and "eval/rec/Acc@0.5" in r for r in records)
    step = tmp_path / "run" / "checkpoints" / "step-000002"
    root = [f"data.options.root={tmp_path / 'rc'}"]
    for benchmark, key in (("refcoco-val", "eval/iou/cIoU"), ("rec-refcoco-val", "eval/rec/Acc@0.5")):
        result = evaluate_checkpoint(step, root, benchmark=benchmark)
        assert result["eval/samples"] == 2 and np.isfinite(result[key]), benchmark


def test_the_loss_falls_on_a_tiny_task():
    model = build("segllm", train_mask_decoder=True)  # a random tiny SAM: its decoder must learn too
    batch = _two_rounds()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=3e-3)
    first = None
    for _ in range(25):
        opt.zero_grad()
        losses = model(batch)
        total = sum(losses.values())
        first = first if first is not None else {k: float(v.detach()) for k, v in losses.items()}
        total.backward()
        opt.step()
    with torch.no_grad():
        last = {k: float(v) for k, v in model(batch).items()}
    assert last["text"] < 0.5 * first["text"] and last["bce"] + last["dice"] < 0.9 * (first["bce"] + first["dice"])
