"""LLM-Seg's model against its paper and the authors' code (model/LISA.py, model/loss.py,
model/transformer.py): LLaVA's own view of the image, the fusion module, the IoU head's shared
MLP, the KL direction, the [SEG] state, padding, mask pooling, the heads and selection."""

import math

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("segment_anything")

from segfast.config import ConfigError  # noqa: E402
from segfast.data import collate  # noqa: E402
from segfast.data.referring import ReferringSegmentation  # noqa: E402
from segfast.models.llmseg.fusion import Fusion  # noqa: E402
from segfast.models.llmseg.heads import iop_loss, iou_alignment_loss, select, similarity  # noqa: E402
from segfast.ops import pack_masks  # noqa: E402
from tests.models.seg_family import assert_frozen_and_trained, build, trainable_gradients  # noqa: E402


def _batch(n=2, split="train", **options):
    data = ReferringSegmentation(split=split, length=max(n, 4), **options)
    return collate([data[i] for i in range(n)])


@pytest.fixture(scope="module")
def tiny():
    model = build("llm-seg")
    model.eval()  # dropout off: equal passes
    return model


# ---- 1. the LLM's view of the image -------------------------------------------------------------
def test_llava_sees_the_image_through_its_own_tower_and_frozen_projector(tmp_path):
    from segfast.models.llava import projector, save_tiny_llava
    from segfast.text.lisa import vocabulary

    path = save_tiny_llava(tmp_path / "llava", vocabulary())
    model = build("llm-seg", path=str(path)).eval()
    from transformers import LlavaForConditionalGeneration

    reference = LlavaForConditionalGeneration.from_pretrained(path).eval()
    x = torch.randn(3, reference.config.vision_config.hidden_size)
    torch.testing.assert_close(projector(model.lm)(x), reference.model.multi_modal_projector(x))  # the saved one
    batch = _batch()
    # the LLM's image slots hold exactly what transformers' LLaVA makes of the CLIP input
    flat, owner = model.flat_conversations(batch)
    encoded = [model.encode(c) for c in flat]
    from segfast.models.llava import conversation_embeds, image_features

    feats = image_features(model.lm, batch["clip_image"])
    expected = torch.stack(reference.model.get_image_features(pixel_values=batch["clip_image"]).pooler_output)
    torch.testing.assert_close(feats, expected)
    embeds, *_ = conversation_embeds(model.lm, model.tokenizer.pad_token_id, encoded, feats[torch.tensor(owner)])
    assert embeds.shape[0] == len(flat)
    # [SEG] depends on the CLIP input and not on the DINOv2 frame (DINOv2 serves the proposals)
    _, seg, _ = model.seg_embeddings(batch, {})
    _, seg_dino, _ = model.seg_embeddings({**batch, "image": torch.randn_like(batch["image"])}, {})
    _, seg_clip, _ = model.seg_embeddings({**batch, "clip_image": torch.randn_like(batch["clip_image"])}, {})
    torch.testing.assert_close(seg_dino, seg)
    assert not torch.allclose(seg_clip, seg)
    grads = trainable_gradients(model.train(), model(batch))
    assert_frozen_and_trained(
        model,
        grads,
        trained=("lora_B", "fusion.", "iop_head.", "embedding_head.", "text_fc.", "project."),
        frozen=("vision_tower", "multi_modal_projector", "backbone."),
    )


def test_prompt_is_llava_v1_with_the_checkpoints_image_start_end(tmp_path):
    # the authors' training.py: conv_type llava_v1 (its system line) and use_mm_start_end on
    import json

    from segfast.models.lisa.conversation import IMAGE_SLOT
    from segfast.models.llava import save_tiny_llava
    from segfast.text.lisa import vocabulary

    def text(model, rounds):
        e = model.encode(rounds)
        first = e.kinds.index(IMAGE_SLOT)
        ids = e.ids[:first] + [model.image_token_id] + e.ids[first + model.image_slots :]
        return model.tokenizer.decode(ids, skip_special_tokens=False)

    turn = [{"question": "<image>\nPlease segment the red box in this image.", "answer": "It is [SEG]."}]
    path = save_tiny_llava(tmp_path / "llava", vocabulary())
    plain = build("llm-seg", path=str(path))
    assert not plain.image_start_end
    assert text(plain, turn).startswith("<s> A chat between a curious human and an artificial intelligence")
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "mm_use_im_start_end": True}))
    wrapped = build("llm-seg", path=str(path))
    assert "USER : <im_start> <image> <im_end> Please segment" in text(wrapped, turn)
    start = wrapped.tokenizer.convert_tokens_to_ids("<im_start>")
    assert wrapped.encode(turn).ids.count(start) == 1 and start != wrapped.tokenizer.unk_token_id


def _bicubic_matrix(n_in: int, n_out: int, scale: float) -> torch.Tensor:
    """(n_out, n_in) weights of PyTorch's bicubic resampling (Keys' kernel, a = -0.75, edges
    clamped, align_corners False) when output pixel j reads input (j + 0.5) / scale - 0.5."""
    a, m = -0.75, torch.zeros(n_out, n_in, dtype=torch.float64)
    for j in range(n_out):
        src = (j + 0.5) / scale - 0.5
        x0 = math.floor(src)
        t = src - x0
        w = [
            ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a,
            ((a + 2) * t - (a + 3)) * t * t + 1,
            ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1,
        ]
        for k, weight in enumerate(w + [1 - sum(w)]):
            m[j, min(max(x0 - 1 + k, 0), n_in - 1)] += weight
    return m


def test_dinov2_positions_are_resampled_as_torch_hubs():
    # the authors load DINOv2 from torch.hub: scale (n + 0.1) / side; transformers sizes to n
    from transformers import Dinov2Config, Dinov2Model

    from segfast.models.llmseg.dinov2 import use_hub_positions

    sizes = {"hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16}
    # a 5 x 5 grid of 14-px patches, read at 126 px: 9 x 9
    model = Dinov2Model(Dinov2Config(**sizes, image_size=70)).eval()
    torch.nn.init.normal_(model.embeddings.position_embeddings)
    side, n = 5, 9
    grid = model.embeddings.position_embeddings[0, 1:].detach().double().reshape(side, side, -1)

    def expected(scale):
        r = _bicubic_matrix(side, n, scale)
        return torch.einsum("ia,abc,jb->ijc", r, grid, r).reshape(n * n, -1).float()

    tokens = torch.zeros(1, n * n + 1, 8)
    plain = model.embeddings.interpolate_pos_encoding(tokens, 126, 126)[0, 1:].detach()
    torch.testing.assert_close(plain, expected(n / side), atol=1e-5, rtol=1e-5)  # the reference is PyTorch's
    use_hub_positions(model)
    hub = model.embeddings.interpolate_pos_encoding(tokens, 126, 126)[0].detach()
    torch.testing.assert_close(hub[1:], expected((n + 0.1) / side), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(hub[0], model.embeddings.position_embeddings[0, 0].detach())
    assert (hub[1:] - plain).abs().max() > 1e-3  # the two differ
    assert model(pixel_values=torch.randn(1, 3, 126, 126)).last_hidden_state.shape == (1, n * n + 1, 8)
    assert build("llm-seg").backbone.embeddings.interpolate_pos_encoding.__func__.__name__ == "hub_position_encoding"
    default = build("llm-seg", dinov2_positions="transformers").backbone.embeddings.interpolate_pos_encoding
    assert default.__func__.__name__ == "interpolate_pos_encoding"
    with pytest.raises(ConfigError, match="dinov2_positions"):
        build("llm-seg", dinov2_positions="timm")


def test_clip_size_must_match_the_vision_tower(tiny):
    with pytest.raises(ValueError, match="clip_size"):
        tiny(_batch(clip_size=48))


# ---- 2. the fusion module ----------------------------------------------------------------------
def _attention(layer, q, k, v, key_valid=None):
    """segment-anything's Attention, written out: projections, heads, softmax(QK^T/sqrt(c))V."""

    def heads(x):
        b, n, c = x.shape
        return x.reshape(b, n, layer.heads, c // layer.heads).transpose(1, 2)

    q, k, v = heads(layer.q_proj(q)), heads(layer.k_proj(k)), heads(layer.v_proj(v))
    logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if key_valid is not None:
        logits = logits.masked_fill(~key_valid[:, None, None, :], float("-inf"))
    out = torch.softmax(logits, -1) @ v
    return layer.out_proj(out.transpose(1, 2).flatten(2))


def test_fusion_is_the_authors_module():
    torch.manual_seed(0)
    fusion = Fusion()
    block = fusion.blocks[0]
    # widths of the authors' code: MLP 2048, attention at full width (downsample 1), 2 blocks
    assert len(fusion.blocks) == 2 and block.mlp.lin1.weight.shape == (2048, 256)
    assert block.self_attn.q_proj.weight.shape == (256, 256)
    assert block.cross_attn_image_to_token.k_proj.out_features == 256
    masks, seg = torch.randn(3, 7, 256), torch.randn(3, 256)
    valid = torch.ones(3, 7, dtype=torch.bool)
    m, s = masks, seg[:, None]
    for blk in fusion.blocks:  # masks are the queries, [SEG] the keys; every sub-layer residual
        m = blk.norm1(m + _attention(blk.self_attn, m, m, m))
        m = blk.norm2(m + _attention(blk.cross_attn_token_to_image, m, s, s))
        m = blk.norm3(m + blk.mlp.lin2(torch.relu(blk.mlp.lin1(m))))
        s = blk.norm4(s + _attention(blk.cross_attn_image_to_token, s, m, m))
    m = fusion.norm_final(m + _attention(fusion.final_attn, m, s, s))  # the final mask -> [SEG] attention
    torch.testing.assert_close(fusion(masks, seg, valid), m, atol=1e-5, rtol=1e-5)


# ---- 6. padding ----------------------------------------------------------------------------------
def test_padded_proposals_change_nothing(tiny):
    """A sample's scores, IoPs and losses are the same alone and beside an image with four times
    as many proposals (its rows then carry padded slots)."""
    one, two = _batch(1), _batch(2)
    keys = ("proposals", "gt_iou", "gt_iop")
    many = [torch.cat([two[key][1]] * 4, dim=-1 if key.startswith("gt_") else 0) for key in keys]
    both = {**two, **{key: [one[key][0], m] for key, m in zip(keys, many)}}
    both.update({key: torch.stack([one[key][0], two[key][1]]) for key in ("image", "clip_image")})
    both["conversations"] = [one["conversations"][0], two["conversations"][1]]
    alone, together = tiny.predict(one), tiny.predict(both)
    k, rows = len(one["proposals"][0]), len(one["conversations"][0])
    assert together["valid"].shape[1] == len(many[0]) > k and not together["valid"][:rows, k:].any()
    for key in ("scores", "iop"):
        torch.testing.assert_close(together[key][:rows, :k], alone[key], atol=2e-5, rtol=1e-4)
    assert not together["chosen"][:rows, k:].any()
    second = {**both, **{key: [both[key][1]] for key in ("proposals", "gt_iou", "gt_iop", "conversations")}}
    second.update({key: both[key][1:] for key in ("image", "clip_image")})
    for key in ("iou", "iop"):  # the mean over images of each image's loss
        torch.testing.assert_close(tiny(both)[key], (tiny(one)[key] + tiny(second)[key]) / 2, atol=1e-5, rtol=1e-4)


# ---- 7. mask pooling -----------------------------------------------------------------------------
def test_mask_pooling_is_the_authors_computation(tiny):
    """Features upsampled to 256x256 (bilinear), masks padded square and resized there
    (antialiased bilinear), Σ w f / (Σ w + 1e-8): model/LISA.py mask_pooling on the loaders' segs."""
    gen = torch.Generator().manual_seed(1)
    h, w = 48, 70  # proposals at SAM's resolution, not square
    dense = torch.rand(3, h, w, generator=gen) > 0.6
    dense[2] = False
    dense[2, 5:20, 30:60] = True
    square = F.pad(dense.float(), (0, 0, 0, w - h))
    batch = {**_batch(1), "proposals": [pack_masks(F.pad(dense, (0, 0, 0, w - h)))]}
    got, valid = tiny.proposal_embeddings(batch)
    feats = tiny.project(tiny.features(batch["image"]))
    up = F.interpolate(feats, size=(256, 256), mode="bilinear", align_corners=False)[0].flatten(1)
    weights = F.interpolate(square[None], size=(256, 256), mode="bilinear", align_corners=False, antialias=True)[0]
    weights = weights.flatten(1)
    expected = weights @ up.T / (weights.sum(-1, keepdim=True) + 1e-8)
    assert valid.all() and got.shape == (1, 3, 256)
    torch.testing.assert_close(got[0], expected, atol=1e-5, rtol=1e-4)


# ---- 3, 4, 5: the IoU head, its loss, the [SEG] state --------------------------------------------
def test_iou_head_compares_the_shared_mlp_of_fused_masks_with_the_unfused_seg(tiny):
    batch = _batch()
    assert [m.out_features for m in tiny.embedding_head if hasattr(m, "out_features")] == [2048, 256]
    _, seg, owner = tiny.seg_embeddings(batch, {})
    scores, _, valid = tiny.select_side(batch, seg, owner)
    masks, _ = tiny.proposal_embeddings(batch)
    fused = tiny.fusion(masks[owner], seg, valid)
    expected = F.cosine_similarity(tiny.embedding_head(fused), seg[:, None], dim=-1)
    torch.testing.assert_close(scores, expected)


def test_kl_is_gt_to_prediction_as_the_authors_loss():
    gen = torch.Generator().manual_seed(0)
    scores, gt = torch.rand(2, 5, generator=gen) * 2 - 1, torch.rand(2, 5, generator=gen)
    valid = torch.tensor([[True] * 5, [True, True, True, False, False]])
    got = iou_alignment_loss(scores, gt, valid, 0.05)
    for b in range(2):
        s, g = scores[b][valid[b]], gt[b][valid[b]]
        # model/loss.py softmax_align_loss: F.kl_div(sim_dis.log(), gt_dis, reduction="sum")
        expected = F.kl_div(torch.softmax(s / 0.05, 0).log(), torch.softmax(g / 0.05, 0), reduction="sum")
        torch.testing.assert_close(got[b], expected)
    literal = iou_alignment_loss(scores, gt, valid, 0.05, "pred||gt")
    p, q = torch.softmax(scores[0] / 0.05, 0), torch.softmax(gt[0] / 0.05, 0)
    torch.testing.assert_close(literal[0], (p * (p / q).log()).sum())
    assert iou_alignment_loss(gt, gt, valid).abs().max() < 1e-6  # aligned scores cost nothing


def test_seg_embedding_is_the_state_that_predicts_seg(tiny):
    batch = _batch(1)
    out, seg, _ = tiny.seg_embeddings(batch, {})
    flat, _ = tiny.flat_conversations(batch)
    hidden = out.hidden_states[-1]
    for n, conv in enumerate(flat):
        at = tiny.encode(conv).ids.index(tiny.seg_id)
        torch.testing.assert_close(seg[n], tiny.text_fc(hidden[n, at - 1]))
        assert not torch.allclose(seg[n], tiny.text_fc(hidden[n, at]))


def test_iop_loss_and_image_averaging():
    gen = torch.Generator().manual_seed(2)
    pred, gt = torch.rand(3, 4, generator=gen), torch.rand(3, 4, generator=gen)
    valid = torch.tensor([[True] * 4, [True, True, False, False], [True] * 4])
    got = iop_loss(pred, gt, valid)
    for n in range(3):
        g, p = gt[n][valid[n]], pred[n][valid[n]]
        torch.testing.assert_close(got[n], (torch.exp(g - 1) * (p - g) ** 2).mean())
    from segfast.models.llmseg.model import LLMSeg

    # two conversations of image 0 and one of image 1: (mean(a, b) + c) / 2, as the authors average
    per = torch.tensor([1.0, 3.0, 10.0])
    mean = LLMSeg._image_mean(per, torch.tensor([0, 0, 1]), torch.ones(3, dtype=torch.bool))
    torch.testing.assert_close(mean, torch.tensor(6.0))


def test_selection_strategies_on_hand_made_cases():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.3, 0.2, 0.8, 0.0]])
    iop = torch.tensor([[0.9, 0.2, 0.7, 0.1, 0.95, 0.6, 0.99]])
    valid = torch.tensor([[True] * 6 + [False]])
    as_list = lambda m: m[0].nonzero()[:, 0].tolist()  # noqa: E731
    assert as_list(select(scores, iop, valid, "top1_iou")) == [1]
    assert as_list(select(scores, iop, valid)) == [0, 2, 4, 5]  # default: IoP > 0.5; 6 is padding
    assert as_list(select(scores, iop, valid, "iop_threshold", 0.65)) == [0, 2, 4]
    assert as_list(select(scores, iop, valid, "top1_iou+iop_threshold", 0.65)) == [0, 1, 2, 4]
    # top-5 by score: 1, 5, 2, 3, 4 -> IoP > 0.65 among them: 2, 4
    assert as_list(select(scores, iop, valid, "top5_iou_iop_threshold", 0.65)) == [2, 4]
    # none of the top 5 passes -> an empty mask (the authors' validate_threshold_from_topIoU)
    assert as_list(select(scores, iop, valid, "top5_iou_iop_threshold", 0.999)) == []
    with pytest.raises(ValueError, match="selection"):
        select(scores, iop, valid, "best")
    seg, props = torch.randn(2, 8), torch.randn(2, 5, 8)
    torch.testing.assert_close(similarity(props, seg), torch.cosine_similarity(props, seg[:, None], dim=-1))


def test_option_checks_name_the_key():
    with pytest.raises(ConfigError, match="model.options.heads"):
        build("llm-seg", heads="iou")  # the default selection thresholds the IoP head
    with pytest.raises(ConfigError, match="model.options.fusion"):
        build("llm-seg", fusion="transformer")


# ---- 9. evaluation: gIoU and cIoU at the original resolution, ncIoU at 1024 x 1024 ---------------
def test_evaluation_counts_at_the_original_resolution_and_ncIoU_apart(tiny, monkeypatch):
    """Two images: 40x60 (SAM ran at 20x30) whose chosen proposal, upsampled, covers 800 px of which
    600 are the target and 50 ignored; 20x30 with nothing chosen and a 100-px target. gIoU
    (0.8 + 0) / 2, cIoU 600 / 850; ncIoU resizes all to 1024x1024 first (ignored: 256 x 85 px)."""
    from segfast.data.referring import pad_square
    from segfast.metrics import IoUMeter

    def boxes(h, w, *spans):
        m = torch.zeros(len(spans), h, w, dtype=torch.bool)
        for i, (y1, x1) in enumerate(spans):
            m[i, :y1, :x1] = True
        return m

    proposals = [pad_square(pack_masks(boxes(20, 30, span)), 20, 30) for span in ((10, 20), (5, 5))]
    ignore = torch.zeros(40, 60, dtype=torch.bool)
    ignore[:10, 35:40] = True
    batch = {
        "proposals": proposals,
        "proposal_size": torch.tensor([[20, 30], [20, 30]]),
        "original_masks": [boxes(40, 60, (20, 30)), boxes(20, 30, (10, 10))],
        "original_ignore": [ignore, torch.zeros(20, 30, dtype=torch.bool)],
    }
    chosen = torch.tensor([[True], [False]])
    monkeypatch.setattr(tiny, "predict", lambda b: {"chosen": chosen, "owner": torch.tensor([0, 1])})
    meters = {"iou": IoUMeter()}
    tiny.evaluate(batch, meters)
    iou, nc = meters["iou"].compute(), meters["nciou"].compute()
    assert iou["gIoU"] == pytest.approx(0.4) and iou["cIoU"] == pytest.approx(600 / 850)
    assert nc["ncIoU"] == pytest.approx(512 * 512 / (512 * 683 - 256 * 85 + 512 * 342)) and nc["samples"] == 2


def test_a_trained_tiny_model_is_scored_with_every_metric(tmp_path):
    from tests.models.seg_family import train_tiny

    records = train_tiny(tmp_path, {"name": "llm-seg"}, {"name": "referring", "options": {"length": 8}}, steps=2)
    last = records[-1]
    assert {"eval/iou/gIoU", "eval/iou/cIoU", "eval/nciou/ncIoU", "eval/iou", "eval/iop", "eval/text"} <= set(last)


# ---- 12. the ablations of Tables 2 and 4 ---------------------------------------------------------
@pytest.mark.parametrize(
    "options, expected",
    [
        ({"fusion": "mlp", "heads": "iou", "selection": "top1_iou"}, {"text", "iou"}),  # Table 2, row 1
        ({"heads": "iou", "selection": "top1_iou"}, {"text", "iou"}),  # row 2
        ({"heads": "iop"}, {"text", "iop"}),  # row 3
        ({}, {"text", "iou", "iop"}),  # row 4, the paper's model
    ],
)
def test_table2_structures_train_their_heads_only(options, expected):
    model = build("llm-seg", **options)
    batch = _batch()
    losses = model(batch)
    assert set(losses) == expected
    assert (model.embedding_head is None) == ("iou" not in expected)
    assert (model.iop_head is None) == ("iop" not in expected)
    grads = trainable_gradients(model, losses)
    assert all(grads[n] for n in grads if n.startswith(("fusion.", "project.", "text_fc.")) and "bias" not in n)
    if options.get("fusion") == "mlp":  # the MLP updates the mask embeddings alone: [SEG] plays no part
        masks, valid = torch.randn(2, 5, 256), torch.ones(2, 5, dtype=torch.bool)
        seg, other = torch.randn(2, 256), torch.zeros(2, 256)
        torch.testing.assert_close(model.fusion(masks, seg, valid), model.fusion(masks, other, valid))
    out = model.predict(batch)
    assert out["chosen"].shape == out["valid"].shape


def test_table4_sam_encoder_makes_the_mask_embeddings():
    model = build("llm-seg", backbone="sam", image_size=64, sam_image_size=64)
    batch = _batch(image_size=64)
    assert model.features(batch["image"]).shape == (2, 32, 4, 4)  # SAM's neck: 32 channels here, 256 in ViT-H
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert set(model(batch)) == {"text", "iou", "iop"}
    with pytest.raises(ConfigError, match="image_size"):
        build("llm-seg", backbone="sam", image_size=56, sam_image_size=64)
