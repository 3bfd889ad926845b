"""`segfast convert --system llm-seg`: a tiny release in LLM-Seg's DeepSpeed layout (training.py's
peft-wrapped LISAForCausalLM, model/LISA.py's module names, LoRA adapters with nonzero B) becomes
a segfast checkpoint whose parts compute what the authors' modules compute."""

import json
from collections import OrderedDict

import pytest
import torch
from torch import nn

import segfast
from segfast.inference.convert import REPORT, ConversionError, convert
from segfast.models.llmseg.heads import similarity
from tests.inference.releases import LisaRelease, authors_name
from tests.inference.tiny import picture

DIM, DINO_WIDTH, GRID = 32, 128, 4  # text_hidden_fcs' out_dim (LisaRelease), DINOv2 width, its patch grid
LORA_R, LORA_ALPHA = 8, 16  # training.py's defaults


class HubBlock(nn.Module):
    """facebookresearch/dinov2's Block (NestedTensorBlock) with its attribute names."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(width, eps=1e-6), nn.LayerNorm(width, eps=1e-6)
        self.attn = nn.Module()
        self.attn.qkv, self.attn.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.mlp = nn.Module()
        self.mlp.fc1, self.mlp.fc2 = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)
        self.ls1, self.ls2 = nn.Module(), nn.Module()
        self.ls1.gamma, self.ls2.gamma = nn.Parameter(torch.rand(width)), nn.Parameter(torch.rand(width))

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.attn.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn = (qkv[0] @ qkv[1].transpose(-2, -1) * (c // self.heads) ** -0.5).softmax(-1)
        x = x + self.ls1.gamma * self.attn.proj((attn @ qkv[2]).transpose(1, 2).reshape(b, n, c))
        return x + self.ls2.gamma * self.mlp.fc2(nn.functional.gelu(self.mlp.fc1(self.norm2(x))))


class HubDinov2(nn.Module):
    """torch.hub's dinov2 DinoVisionTransformer at tiny size (64-wide heads, as DINOv2's are)."""

    def __init__(self, width: int = DINO_WIDTH, depth: int = 2, patch: int = 14, grid: int = GRID):
        super().__init__()
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, width, patch, patch)
        self.cls_token = nn.Parameter(torch.randn(1, 1, width))
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + grid * grid, width) * 0.1)
        self.mask_token = nn.Parameter(torch.zeros(1, width))
        self.blocks = nn.ModuleList(HubBlock(width, width // 64) for _ in range(depth))
        self.norm = nn.LayerNorm(width, eps=1e-6)

    def forward_features(self, x):
        x = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], 1) + self.pos_embed  # at its own grid
        for block in self.blocks:
            x = block(x)
        return {"x_norm_patchtokens": self.norm(x)[:, 1:]}


class LLMSegRelease(LisaRelease):
    """LISAForCausalLM as LLM-Seg's initialize_lisa_modules completes it, LoRA injected as
    training.py's find_linear_layers chooses (q_proj / v_proj outside the excluded modules)."""

    EXCLUDED = ["visual_model", "vision_tower", "mm_projector", "text_hidden_fcs", "lisa_attention_layers"]
    EXCLUDED += ["lisa_final_attn", "lisa_norm_final_attn", "lisa_iou_head", "lisa_embedding_head", "lisa_dino_conv"]

    def __init__(self, seed: int = 1):
        from peft import LoraConfig, inject_adapter_in_model
        from segment_anything.modeling.transformer import Attention, TwoWayAttentionBlock

        super().__init__(seed=seed, sam_size=256)  # the runner's tiny proposal SAM takes 256
        m = self.model
        m.visual_model_dinov2 = HubDinov2()
        m.lisa_dino_conv = nn.Conv2d(DINO_WIDTH, DIM, kernel_size=1)
        # LISA_TwoWayAttentionBlock is segment-anything's block without positional encodings
        m.lisa_attention_layers = nn.ModuleList(
            TwoWayAttentionBlock(DIM, 8, mlp_dim=64, attention_downsample_rate=1) for _ in range(2)
        )
        m.lisa_final_attn = Attention(DIM, 8, downsample_rate=1)
        m.lisa_norm_final_attn = nn.LayerNorm(DIM)
        m.lisa_iou_head = nn.Sequential(nn.Linear(DIM, 16), nn.ReLU(True), nn.Linear(16, 1), nn.Sigmoid())
        m.lisa_embedding_head = nn.Sequential(nn.Linear(DIM, 64), nn.ReLU(True), nn.Linear(64, DIM))
        with torch.no_grad():  # LayerNorms and biases away from their initialisation
            for name, p in m.named_parameters():
                if name.startswith("lisa_"):
                    p.add_(torch.randn_like(p) * 0.1)
        targets = [
            n
            for n, mod in self.named_modules()
            if isinstance(mod, nn.Linear)
            and all(x not in n for x in self.EXCLUDED)
            and any(x in n for x in ("q_proj", "v_proj"))
        ]
        inject_adapter_in_model(
            LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, target_modules=targets, lora_dropout=0.05), self
        )
        with torch.no_grad():
            for name, p in self.named_parameters():
                if "lora_B" in name:  # peft starts B at zero: a trained release's is not
                    p.copy_(torch.randn_like(p) * 0.2)
        self.eval()

    def save_deepspeed(self, directory, peft04: bool = True, drop=(), extra=None, step: int = 5000):
        """<directory>/latest and global_step<step>/mp_rank_00_model_states.pt as DeepSpeed's
        save_checkpoint writes them; peft04: peft 0.4's names (no .base_layer), the authors' version."""
        state = OrderedDict()
        for key, value in self.state_dict().items():
            key = authors_name(key)
            state["base_model.model." + (key.replace(".base_layer.", ".") if peft04 else key)] = value.clone()
        for key in drop:
            del state[key]
        state.update(extra or {})
        states = {
            "module": state,
            "buffer_names": [],
            "optimizer": None,
            "param_shapes": [OrderedDict((k, v.shape) for k, v in state.items())],
            "frozen_param_shapes": None,
            "shared_params": {},
            "lr_scheduler": {"last_batch_iteration": step - 1},
            "sparse_tensor_module_names": set(),
            "skipped_steps": 0,
            "global_steps": step,
            "global_samples": step * 20,
            "dp_world_size": 2,
            "mp_world_size": 1,
            "ds_config": {"bf16": {"enabled": True}, "train_micro_batch_size_per_gpu": 1},
            "ds_version": "0.10.0",
        }
        (directory / f"global_step{step}").mkdir(parents=True)
        torch.save(states, directory / f"global_step{step}" / "mp_rank_00_model_states.pt")
        (directory / "latest").write_text(f"global_step{step}")
        return directory

    def save_base(self, directory):
        """The base LLaVA (training.py's --version): config.json and the tokenizer before
        init_tokenizer adds [SEG], <im_start>, <im_end>."""
        from segfast.models.tiny import word_tokenizer
        from segfast.text.lisa import vocabulary

        directory.mkdir(parents=True)
        config = dict(self.config(), vocab_size=len(self.tokenizer) - 3, architectures=["LlavaLlamaForCausalLM"])
        (directory / "config.json").write_text(json.dumps(config))
        word_tokenizer(vocabulary()).save_pretrained(str(directory))
        return directory

    # ---- the authors' forward (model/LISA.py model_forward, inference branch) -------------------
    def proposal_scores(self, segs: torch.Tensor, seg: torch.Tensor) -> tuple:
        """segs (K, DIM) pooled mask features, seg (DIM,) the [SEG] embedding -> (similarity (K,),
        predicted IoU (K,)), every module called as the authors' code calls it."""
        m = self.model
        text, segs = seg[None, None], segs[None]
        zeros = torch.zeros_like
        for layer in m.lisa_attention_layers:
            segs, text = layer(queries=segs, keys=text, query_pe=zeros(segs), key_pe=zeros(text))
        segs = m.lisa_norm_final_attn(segs + m.lisa_final_attn(q=segs, k=text, v=text))
        iou = m.lisa_iou_head(segs)[0, :, 0]
        feats = m.lisa_embedding_head(segs)[0]
        return (seg / seg.norm()) @ (feats / feats.norm(dim=-1, keepdim=True)).T, iou


def lora_names(module: dict) -> list:
    return sorted(k for k in module if ".lora_A." in k)


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("llmseg-release")
    authors = LLMSegRelease()
    rotary = {"base_model.model.model.layers.0.self_attn.rotary_emb.inv_freq": torch.ones(8)}
    source = authors.save_deepspeed(root / "LLM-Seg-deepspeed", extra=rotary)
    paths = {"clip": authors.save_clip(root / "clip"), "llava": authors.save_base(root / "LLaVA-Lightning-7B-v1")}
    report = convert("llm-seg", source, root / "converted", **paths)
    model = segfast.load(root / "converted", device="cpu").model
    return authors, source, paths, root / "converted", report, model


def test_lora_is_merged_as_peft_merges_it(release):
    """The converted q_proj / v_proj weights are W + B @ A * alpha / r, and the merged language
    model gives the unmerged LoRA model's logits."""
    authors, _, _, _, _, model = release
    layer = authors.model.layers[1].self_attn.q_proj
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    expected = layer.base_layer.weight + (b @ a) * (LORA_ALPHA / LORA_R)
    got = model.lm.get_decoder().layers[1].self_attn.q_proj.weight
    torch.testing.assert_close(got, expected)
    assert not torch.allclose(got, layer.base_layer.weight, atol=1e-3)  # the adapters matter here
    ids = torch.randint(0, len(authors.tokenizer), (2, 9), generator=torch.Generator().manual_seed(0))
    got = model.lm(input_ids=ids).logits[..., : len(authors.tokenizer)]
    torch.testing.assert_close(got, authors.logits(ids), rtol=1e-4, atol=1e-4)
    assert model.seg_id == authors.tokenizer.convert_tokens_to_ids("[SEG]")


def test_heads_compute_what_the_authors_modules_compute(release):
    """DINOv2 -> lisa_dino_conv, the [SEG] MLP, and the fusion with both heads on the same
    inputs: the converted model's similarity and IoP equal the authors' forward."""
    authors, _, _, _, _, model = release
    m = authors.model
    g = torch.Generator().manual_seed(1)
    image = torch.randn(1, 3, GRID * 14, GRID * 14, generator=g)
    hub = m.visual_model_dinov2.forward_features(image)["x_norm_patchtokens"]
    expected = m.lisa_dino_conv(hub.permute(0, 2, 1).reshape(1, DINO_WIDTH, GRID, GRID))
    torch.testing.assert_close(model.project(model.features(image)), expected, rtol=1e-4, atol=1e-4)
    hidden = torch.randn(3, 64, generator=g)
    torch.testing.assert_close(model.text_fc(hidden), m.text_hidden_fcs[0](hidden))
    segs, seg = torch.randn(6, DIM, generator=g), torch.randn(DIM, generator=g)
    want_sim, want_iou = authors.proposal_scores(segs, seg)
    fused = model.fusion(segs[None], seg[None], torch.ones(1, 6, dtype=torch.bool))
    torch.testing.assert_close(similarity(model.embedding_head(fused), seg[None])[0], want_sim, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model.iop_head(fused)[0, :, 0], want_iou, rtol=1e-5, atol=1e-5)


def test_report_and_options(release):
    authors, source, _, out, report, model = release
    record = json.loads((out / REPORT).read_text())
    module = torch.load(source / "global_step5000" / "mp_rank_00_model_states.pt", weights_only=True)["module"]
    mapped = {}
    for key, target, _ in record["mapped"]:
        mapped.setdefault(key, target)
    # every tensor of the release is mapped or reported unused, the LoRA pair with its base weight
    assert set(mapped) | set(record["unused"]) == set(module) and not set(mapped) & set(record["unused"])
    assert record["unused"] == ["base_model.model.model.layers.0.self_attn.rotary_emb.inv_freq"]
    q = "base_model.model.model.layers.0.self_attn.q_proj."
    assert mapped[q + "lora_A.default.weight"] == mapped[q + "weight"] == mapped[q + "lora_B.default.weight"]
    assert len(lora_names(module)) == 2 * len(authors.model.layers)  # q_proj and v_proj of each layer
    p = "base_model.model.model."
    assert mapped[p + "lisa_attention_layers.1.cross_attn_image_to_token.v_proj.weight"] == (
        "fusion.blocks.1.cross_attn_image_to_token.v_proj.weight"
    )
    assert mapped[p + "lisa_iou_head.2.bias"] == "iop_head.2.bias"
    assert mapped[p + "visual_model.mask_decoder.iou_token.weight"] == "sam.pth:mask_decoder.iou_token.weight"
    assert mapped[p + "visual_model_dinov2.blocks.1.attn.qkv.weight"].count("encoder.layer.1.") == 3
    assert any("alpha 16" in n for n in record["notes"]) and any("iop_hidden=16" in n for n in record["notes"])
    o = model.options
    assert (o.dim, o.iop_hidden, o.embedding_hidden, o.fusion_mlp, o.fusion_blocks) == (DIM, 16, 64, 64, 2)
    assert (o.backbone, o.image_size, o.selection) == ("dinov2", 896, "iop_threshold")
    settings = json.loads((out / "inference.json").read_text())
    assert settings["sam_type"] == "tiny" and settings["sam_checkpoint"] == "sam.pth"  # beside it: movable
    assert model.image_start_end  # the release wraps <image> in <im_start>/<im_end> (use_mm_start_end)


def test_predict_on_the_converted_checkpoint(release, tmp_path):
    """segfast.load reads inference.json: the release's own SAM (sam.pth) makes the proposals,
    also after the converted checkpoint is moved."""
    import shutil

    from segfast.models.sam.proposals import ProposalGenerator

    authors, _, _, out, _, _ = release
    moved = shutil.copytree(out, tmp_path / "moved")
    predictor = segfast.load(moved, device="cpu", max_proposals=4)
    sam = predictor.runner.generator.model
    expected = authors.model.visual_model.mask_decoder.iou_token.weight
    torch.testing.assert_close(sam.mask_decoder.iou_token.weight, expected)
    # fewer points (fast), every mask kept (a random SAM's scores are low): the model chooses
    generator = ProposalGenerator(sam, points_per_side=4, pred_iou_thresh=0, stability_score_thresh=0, box_nms_thresh=1)
    predictor.runner.generator = generator
    image = picture()
    assert len(generator.generate_batch([image])[0].top_k_by_area(4)) > 1
    pred = predictor.predict(image, "the box")
    assert pred.masks.shape == (1, 45, 70)


def test_newer_peft_names_and_the_global_step_directory(release, tmp_path):
    """peft >= 0.7 saves the base weight as ...q_proj.base_layer.weight; --from may name the
    global_step directory itself."""
    authors, _, paths, _, _, _ = release
    source = authors.save_deepspeed(tmp_path / "ds", peft04=False, step=10)
    convert("llm-seg", source / "global_step10", tmp_path / "out", **paths)
    model = segfast.load(tmp_path / "out", device="cpu").model
    layer = authors.model.layers[0].self_attn.v_proj
    expected = layer.base_layer.weight + layer.lora_B["default"].weight @ layer.lora_A["default"].weight * 2
    torch.testing.assert_close(model.lm.get_decoder().layers[0].self_attn.v_proj.weight, expected)


def test_missing_weights_and_arguments_are_named(release, tmp_path):
    authors, _, paths, _, _, _ = release
    fusion = "base_model.model.model.lisa_attention_layers.1.norm4.weight"
    source = authors.save_deepspeed(tmp_path / "a", drop=[fusion])
    with pytest.raises(ConversionError, match=f"{fusion} \\(for fusion.blocks.1.norm4.weight\\)"):
        convert("llm-seg", source, tmp_path / "a-out", **paths)
    assert not (tmp_path / "a-out" / "manifest.json").exists()
    dino = [k for k in authors.state_dict() if k.startswith("model.visual_model_dinov2.")]
    source = authors.save_deepspeed(tmp_path / "b", drop=["base_model.model." + k for k in dino])
    with pytest.raises(ConversionError, match="--dinov2 is required"):
        convert("llm-seg", source, tmp_path / "b-out", **paths)
    with pytest.raises(ConversionError, match="--llava is required"):
        convert("llm-seg", source, tmp_path / "c-out", clip=paths["clip"])
    with pytest.raises(ValueError, match="--dinov2: lisa's converter does not read it"):
        convert("lisa", source, tmp_path / "d-out", dinov2=tmp_path)
    with pytest.raises(FileNotFoundError, match="--from: .* neither a DeepSpeed model-states file"):
        convert("llm-seg", tmp_path, tmp_path / "e-out", **paths)


def test_a_pickle_with_code_is_refused(tmp_path):
    import argparse

    (tmp_path / "global_step1").mkdir()
    states = tmp_path / "global_step1" / "mp_rank_00_model_states.pt"
    torch.save({"module": {}, "args": argparse.Namespace(lr=1)}, states)
    (tmp_path / "latest").write_text("global_step1\n")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ConversionError, match="weights_only=True.*argparse.Namespace"):
        convert("llm-seg", tmp_path, tmp_path / "out", llava=tmp_path)


def test_command_line(release, tmp_path, capsys):
    from segfast.cli import main

    _, source, paths, _, _, _ = release
    args = ["convert", "--system", "llm-seg", "--from", str(source), "--out", str(tmp_path / "cli")]
    args += ["--clip", str(paths["clip"]), "--llava", str(paths["llava"])]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "keys mapped, 1 unused, 0 missing" in printed and "rotary_emb.inv_freq" in printed
    assert segfast.load(tmp_path / "cli", device="cpu").system == "llm-seg"
    args[6], args[-1] = str(tmp_path / "cli2"), str(tmp_path)
    with pytest.raises(SystemExit, match="--llava: .* has no config.json"):
        main(args)
