"""`segfast convert`: a tiny release in LISA's layout (LISAForCausalLM's key names, sharded as
save_pretrained writes them) becomes a segfast checkpoint whose model computes what the release's
modules compute, part by part; the report lists every key; missing weights are refused."""

import json

import pytest
import torch

import segfast
from segfast.frames import clip_input, sam_frame
from segfast.inference.convert import REPORT, ConversionError, convert
from segfast.models.lisa.decoder import PromptedSam
from segfast.models.llava import image_features
from tests.inference.releases import LisaRelease
from tests.inference.tiny import picture


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("lisa-release")
    authors = LisaRelease()
    source = authors.save(root / "LISA-7B-v1", extra={"model.layers.0.self_attn.rotary_emb.inv_freq": torch.ones(8)})
    clip = authors.save_clip(root / "clip-vit-large-patch14")
    out = root / "converted"
    report = convert("lisa", source, out, clip=clip)
    return authors, source, clip, out, report


def test_converted_model_computes_what_the_release_computes(release):
    authors, _, _, out, _ = release
    model = segfast.load(out, device="cpu").model
    g = torch.Generator().manual_seed(0)
    # the language model: same logits over the release's vocabulary
    ids = torch.randint(0, len(authors.tokenizer), (2, 9), generator=g)
    got = model.lm(input_ids=ids).logits[..., : len(authors.tokenizer)]
    torch.testing.assert_close(got, authors.logits(ids), rtol=1e-4, atol=1e-4)
    # CLIP -> projector: LLaVA's image features (select layer -2, CLS dropped, the linear projector)
    pixels = clip_input(picture(40, 60), 32)[None]
    torch.testing.assert_close(image_features(model.lm, pixels), authors.image_features(pixels), rtol=1e-5, atol=1e-5)
    # the [SEG] MLP
    hidden = torch.randn(5, 64, generator=g)
    torch.testing.assert_close(model.text_fc(hidden), authors.model.text_hidden_fcs[0](hidden))
    # SAM: image embedding and the mask decoder prompted with the MLP's output
    frame, _ = sam_frame(picture(40, 60), 64)
    emb = model.decoder.embed(frame[None])
    torch.testing.assert_close(emb, authors.model.visual_model.image_encoder(frame[None]))
    queries = model.text_fc(hidden)[:, None]
    torch.testing.assert_close(
        model.decoder.decode(emb[0], queries), PromptedSam(authors.model.visual_model).decode(emb[0], queries)
    )


def test_report_lists_every_key(release):
    authors, source, _, out, report = release
    record = json.loads((out / REPORT).read_text())
    mapped = {m[0]: m[1] for m in record["mapped"]}
    assert mapped["model.text_hidden_fcs.0.2.weight"] == "text_fc.2.weight"
    assert mapped["model.mm_projector.weight"].endswith("multi_modal_projector.linear_1.weight")
    assert mapped["model.visual_model.mask_decoder.iou_token.weight"] == "sam.pth:mask_decoder.iou_token.weight"
    assert mapped["model.layers.1.self_attn.k_proj.weight"].endswith("language_model.layers.1.self_attn.k_proj.weight")
    # every tensor of the release is either mapped or reported unused (old rotary buffers are)
    released = set(json.loads((source / "model.safetensors.index.json").read_text())["weight_map"])
    assert set(mapped) | set(record["unused"]) == released and not set(mapped) & set(record["unused"])
    assert record["unused"] == ["model.layers.0.self_attn.rotary_emb.inv_freq"] and record["missing"] == []
    assert any("<image>" in note for note in record["notes"])


def test_prompt_and_options_follow_the_release(release):
    _, _, _, out, _ = release
    settings = json.loads((out / "inference.json").read_text())
    assert settings["question"] == "<im_start><image><im_end>\n{query}"  # mm_use_im_start_end
    predictor = segfast.load(out, device="cpu")
    o = predictor.model.options
    assert (o.sam_type, o.sam_image_size, o.seg_token) == ("tiny", 64, "[SEG]")
    assert o.system.startswith("A chat between a curious human")
    pred = predictor.predict(picture(), "Please segment the box.")
    assert pred.masks.shape[1:] == (45, 70)
    # loaded through model.path: the attention segfast.models.llm chooses (SDPA without flash_attn)
    assert predictor.model.lm.config._attn_implementation in ("sdpa", "flash_attention_2")


@pytest.mark.gpu
def test_cuda_runs_the_language_model_in_bf16_with_fused_attention(release):
    """On a GPU: bf16 language model, SDPA (or flash-attention 2), the same [SEG] masks as fp32
    on the CPU up to bf16 rounding."""
    from tests.inference.test_predict import forced

    _, _, _, out, _ = release
    cpu = segfast.load(out, device="cpu")
    gpu = segfast.load(out, device="cuda", generate=forced(cpu.model, n=1))
    lm = gpu.model.lm
    assert next(lm.parameters()).dtype == torch.bfloat16 and next(lm.parameters()).is_cuda
    assert lm.config._attn_implementation in ("sdpa", "flash_attention_2")
    cpu = segfast.load(out, device="cpu", generate=forced(cpu.model, n=1))
    image = picture()
    a, b = gpu.predict(image, "Please segment the box."), cpu.predict(image, "Please segment the box.")
    assert a.text == b.text and a.masks.shape == b.masks.shape == (1, 45, 70)
    assert (a.masks == b.masks).float().mean() > 0.95


def test_bin_shards_and_missing_clip_tower(release, tmp_path):
    """pytorch_model-*.bin shards without the CLIP tower: the tower comes from --clip."""
    authors, _, clip, out, _ = release
    tower = [k for k in json.loads((out / REPORT).read_text())["mapped"] if "vision_tower" in k[0]]
    source = authors.save(tmp_path / "bin", fmt="bin", shards=3, drop=[k[0] for k in tower])
    report = convert("lisa", source, tmp_path / "converted", clip=clip)
    assert any("--clip" in n for n in report.notes) and report.missing == []
    model = segfast.load(tmp_path / "converted", device="cpu").model
    from transformers import CLIPVisionModel

    pixels = clip_input(picture(40, 60), 32)[None]
    local = CLIPVisionModel.from_pretrained(str(clip))
    expected = authors.model.mm_projector(local(pixels, output_hidden_states=True).hidden_states[-2][:, 1:])
    torch.testing.assert_close(image_features(model.lm, pixels), expected, rtol=1e-5, atol=1e-5)


def test_missing_weights_are_named_and_nothing_is_written(release, tmp_path):
    authors, original, clip, _, _ = release
    source = authors.save(tmp_path / "broken", drop=["model.text_hidden_fcs.0.2.bias", "model.norm.weight"])
    with pytest.raises(ConversionError, match="model.text_hidden_fcs.0.2.bias"):
        convert("lisa", source, tmp_path / "a", clip=clip)
    with pytest.raises(ConversionError, match="language_model.norm.weight"):
        convert("lisa", authors.save(tmp_path / "nonorm", drop=["model.norm.weight"]), tmp_path / "b", clip=clip)
    assert not (tmp_path / "b" / "manifest.json").exists()
    with pytest.raises(ConversionError, match="--clip is required"):
        convert("lisa", original, tmp_path / "c")
    with pytest.raises(ValueError, match="--system: no converter for 'toy-llm'"):
        convert("toy-llm", source, tmp_path / "d")
    with pytest.raises(ValueError, match="segllm's release cannot be converted: .*HIPIE"):
        convert("segllm", source, tmp_path / "e")


def test_lasagna_release_keeps_its_answer_tokens(tmp_path):
    """LaSagnA's code answers <ins> / <no_ins> (the paper writes <SEG> / <NEG>)."""
    authors = LisaRelease(tokens=("<ins>", "<no_ins>", "<im_start>", "<im_end>"), seed=3)
    source = authors.save(tmp_path / "LaSagnA-7B", shards=1)
    authors.save_clip(tmp_path / "clip")
    convert("lasagna", source, tmp_path / "out", clip=tmp_path / "clip")
    predictor = segfast.load(tmp_path / "out", device="cpu")
    model = predictor.model
    assert (model.options.seg_token, model.options.neg_token) == ("<ins>", "<no_ins>")
    assert model.seg_id == authors.tokenizer.convert_tokens_to_ids("<ins>")
    hidden = torch.randn(3, 64)
    torch.testing.assert_close(model.text_fc(hidden), authors.model.text_hidden_fcs[0](hidden))


def test_command_line(release, tmp_path, capsys):
    from segfast.cli import main

    _, source, clip, _, _ = release
    out = tmp_path / "cli"
    assert main(["convert", "--system", "lisa", "--from", str(source), "--out", str(out), "--clip", str(clip)]) == 0
    printed = capsys.readouterr().out
    assert "keys mapped, 1 unused, 0 missing" in printed and "rotary_emb.inv_freq" in printed
    with pytest.raises(SystemExit, match="--out: .* exists and is not empty"):
        main(["convert", "--system", "lisa", "--from", str(source), "--out", str(out), "--clip", str(clip)])


def test_a_bf16_release_runs_in_the_requested_dtype(tmp_path):
    """Releases are saved in bf16: on a CPU segfast.load runs the language model in fp32 (the
    release's bf16 values, exactly) unless told otherwise."""
    authors = LisaRelease(seed=4).to(torch.bfloat16)
    source = authors.save(tmp_path / "bf16", shards=1)
    authors.float().save_clip(tmp_path / "clip")
    convert("lisa", source, tmp_path / "out", clip=tmp_path / "clip")
    predictor = segfast.load(tmp_path / "out", device="cpu")
    assert next(predictor.model.lm.parameters()).dtype == torch.float32
    ids = torch.randint(0, len(authors.tokenizer), (1, 7))
    got = predictor.model.lm(input_ids=ids).logits[..., : len(authors.tokenizer)]
    torch.testing.assert_close(got, authors.logits(ids), rtol=1e-4, atol=1e-4)
