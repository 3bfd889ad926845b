"""Releases of the LISA family (dvlab-research/LISA's LISAForCausalLM, congvvc/LaSagnA's
LaSagnAForCausalLM: one layout) -> a segfast checkpoint.

The release is one merged LLaVA-Llama model, as the authors' merge script saves it with
save_pretrained (safetensors or .bin, sharded with an index), config.json and the tokenizer:

    model.embed_tokens, model.layers.*, model.norm, lm_head        the Llama language model
    model.mm_projector.{weight,bias}                               LLaVA v1's linear projector
      (or model.mm_projector.{0,2}.*                               LLaVA-1.5's two-layer GELU MLP)
    model.vision_tower.vision_tower.vision_model.*                 CLIP (when saved; --clip otherwise)
    model.visual_model.{image_encoder,prompt_encoder,mask_decoder}.*   SAM, segment-anything's names
    model.text_hidden_fcs.0.{0,2}.*                                the [SEG] MLP: Linear, ReLU, Linear
    config.json: the Llama fields, mm_vision_tower, mm_hidden_size, mm_vision_select_layer,
                 mm_use_im_start_end, out_dim

Written to <out>: llava/ (transformers' LlavaForConditionalGeneration and the tokenizer with
<image> added: the linear projector becomes linear_1 with an identity linear_2 and a linear
activation, the same map exactly), sam.pth (segment-anything's state dict), and the segfast
checkpoint over them (config.yaml with relative paths, trainable.safetensors, inference.json
with the authors' prompt, conversion.json, manifest.json). The config carries LISA's LoRA
(r 8, alpha 16 on q_proj and v_proj): its B matrices start at zero, so the converted model
computes what the release does and also fine-tunes as LISA's recipe would.
"""

import torch

from segfast.inference.convert.files import Weights
from segfast.inference.convert.report import ConversionError, Report

LLAMA_FIELDS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "hidden_act",
    "max_position_embeddings",
    "rms_norm_eps",
    "rope_theta",
    "rope_scaling",
    "attention_bias",
    "bos_token_id",
    "eos_token_id",
)
# LLaVA v1's conversation (conv_llava_v1, which LISA's chat.py uses): this system line, " " as separator
SYSTEM_V1 = (
    "A chat between a curious human and an artificial intelligence assistant. The assistant gives "
    "helpful, detailed, and polite answers to the human's questions. "
)
LISA_LORA = {"enabled": True, "r": 8, "alpha": 16, "dropout": 0.05, "target_modules": ["q_proj", "v_proj"]}
SAM_PREFIX, FC_PREFIX = "model.visual_model.", "model.text_hidden_fcs.0."
CLIP_PREFIX, PROJECTOR = "model.vision_tower.vision_tower.", "model.mm_projector."
SAM_WIDTHS = {1280: "vit_h", 1024: "vit_l", 768: "vit_b", 32: "tiny"}  # image encoder width -> type
SAM_PARTS = tuple(SAM_PREFIX + p for p in ("image_encoder.", "prompt_encoder.", "mask_decoder."))


class Source:
    """The release's tensors, recording what each one became in the report."""

    def __init__(self, weights: Weights, report: Report):
        self.weights, self.report, self.used = weights, report, set()

    def keys(self, prefix: str = "") -> list:
        return [k for k in self.weights.keys() if k.startswith(prefix)]

    def take(self, key: str, target: str) -> torch.Tensor:
        tensor = self.weights[key]
        self.report.map(key, target, tensor)
        self.used.add(key)
        return tensor

    def finish(self) -> None:
        self.report.unused = sorted(set(self.weights.keys()) - self.used)


def prefix_of(names, suffix: str) -> str:
    """The module prefix under which a transformers model keeps the key ending in `suffix`."""
    found = [n[: -len(suffix)] for n in names if n.endswith(suffix)]
    if len(found) != 1:
        raise ConversionError(f"cannot place {suffix} in this transformers version's LLaVA ({len(found)} matches)")
    return found[0]


def sam_weights(src: Source) -> tuple:
    """(segment-anything state dict, sam_type, image size) from model.visual_model.{image_encoder,
    prompt_encoder,mask_decoder}.* (LLM-Seg's model.visual_model_dinov2 shares the prefix)."""
    keys = [k for k in src.keys(SAM_PREFIX) if k.startswith(SAM_PARTS)]
    state = {k[len(SAM_PREFIX) :]: src.take(k, "sam.pth:" + k[len(SAM_PREFIX) :]) for k in keys}
    patch = state.get("image_encoder.patch_embed.proj.weight")
    if patch is None:
        src.report.missing.append(SAM_PREFIX + "image_encoder.*")
        return state, None, None
    kind = SAM_WIDTHS.get(patch.shape[0])
    if kind is None:
        raise ConversionError(f"SAM image encoder of width {patch.shape[0]} is none of {sorted(SAM_WIDTHS)}")
    return state, kind, state["image_encoder.pos_embed"].shape[1] * 16


def vision_config(config: dict, clip):
    """The CLIP tower's configuration: from --clip (the local copy of what mm_vision_tower names)."""
    from transformers import CLIPVisionConfig

    if clip is None:
        raise ConversionError(
            f"--clip is required: the release names its CLIP tower {config.get('mm_vision_tower')!r} "
            "(mm_vision_tower) without its configuration; pass a local copy of it"
        )
    return CLIPVisionConfig.from_pretrained(str(clip))


def llava_weights(src: Source, own: dict, clip) -> dict:
    """Target name -> tensor for transformers' LLaVA (`own`: its state dict, meta tensors)."""
    lm = prefix_of(own, "embed_tokens.weight")
    vision = prefix_of(own, "embeddings.class_embedding")
    projector = prefix_of(own, "linear_1.weight")
    out = {}
    skip = (SAM_PREFIX, "model.text_hidden_fcs.", CLIP_PREFIX, PROJECTOR)
    for key in src.keys("model."):
        if not key.startswith(skip) and lm + key[len("model.") :] in own:
            out[lm + key[len("model.") :]] = src.take(key, lm + key[len("model.") :])
    if "lm_head.weight" in src.weights:
        out["lm_head.weight"] = src.take("lm_head.weight", "lm_head.weight")
    tower = src.keys(CLIP_PREFIX + "vision_model.")
    if tower:
        for key in tower:
            out[vision + key[len(CLIP_PREFIX + "vision_model.") :]] = src.take(key, vision + key[len(CLIP_PREFIX) :])
    elif clip is not None:  # not saved in the release: the tower its config names
        clip_weights = Weights(clip)
        for key in clip_weights.keys():  # CLIPModel / transformers 4 name the tower vision_model.*
            rest = key.removeprefix("vision_model.")
            if vision + rest in own:
                out[vision + rest] = clip_weights[key]
        src.report.notes.append(f"CLIP tower weights from --clip {clip} (the release does not hold them)")
    if PROJECTOR + "weight" in src.weights:  # LLaVA v1: one Linear; linear_2 is the identity
        out[projector + "linear_1.weight"] = src.take(PROJECTOR + "weight", projector + "linear_1.weight")
        out[projector + "linear_1.bias"] = src.take(PROJECTOR + "bias", projector + "linear_1.bias")
        width = out[projector + "linear_1.weight"].shape[0]
        out[projector + "linear_2.weight"] = torch.eye(width, dtype=out[projector + "linear_1.weight"].dtype)
        out[projector + "linear_2.bias"] = torch.zeros(width, dtype=out[projector + "linear_1.bias"].dtype)
    else:
        for i, name in ((0, "linear_1"), (2, "linear_2")):
            for p in ("weight", "bias"):
                key = f"{PROJECTOR}{i}.{p}"
                if key in src.weights:
                    out[f"{projector}{name}.{p}"] = src.take(key, f"{projector}{name}.{p}")
    return out


def fit_vocabulary(out: dict, own: dict, report: Report) -> None:
    """Embedding and LM-head rows for the tokens segfast adds (<image>): zeros, as the image slots
    never read their embedding; reported as a note."""
    for name in [n for n in own if n.endswith("embed_tokens.weight")] + ["lm_head.weight"]:
        if name in out and out[name].shape[0] < own[name].shape[0]:
            extra = own[name].shape[0] - out[name].shape[0]
            out[name] = torch.cat([out[name], out[name].new_zeros(extra, out[name].shape[1])])
            report.notes.append(f"{name}: {extra} zero row(s) appended for <image>")


def write_llava(src: Source, config: dict, directory, clip, tokenizer=None) -> tuple:
    """Writes <directory> (transformers LLaVA + tokenizer); returns the tokenizer (the release's
    own unless given: LLM-Seg's comes from its base LLaVA)."""
    from transformers import AutoTokenizer, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    from segfast.models.llm import add_special_tokens
    from segfast.text.tokens import IMAGE

    tokenizer = tokenizer or AutoTokenizer.from_pretrained(str(src.weights.directory))
    add_special_tokens(tokenizer, [IMAGE])
    text = LlamaConfig(**{k: config[k] for k in LLAMA_FIELDS if config.get(k) is not None})
    text.vocab_size = max(text.vocab_size, len(tokenizer))
    linear = PROJECTOR + "weight" in src.weights
    llava_config = LlavaConfig(
        vision_config=vision_config(config, clip),
        text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE),
        projector_hidden_act="linear" if linear else "gelu",
        vision_feature_layer=int(config.get("mm_vision_select_layer", -2)),
        vision_feature_select_strategy="default",  # LLaVA's "patch": the CLS token dropped
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(llava_config)
    own = model.state_dict()
    out = llava_weights(src, own, clip)
    fit_vocabulary(out, own, src.report)
    src.report.fit(out, own, "the model the config describes")
    model.load_state_dict(out, strict=True, assign=True)
    model.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    return tokenizer


def options_for(system: str, config: dict, tokenizer, sam_type: str, sam_size: int) -> dict:
    options = {"sam_type": sam_type, "sam_checkpoint": "sam.pth", "system": SYSTEM_V1}
    if sam_type == "tiny":
        options["sam_image_size"] = sam_size
    vocab = tokenizer.get_vocab()
    if system == "lasagna" and "<ins>" in vocab:  # LaSagnA's code names the answers <ins> / <no_ins>
        options.update(seg_token="<ins>", neg_token="<no_ins>")
    return options


def question_template(config: dict, tokenizer) -> str:
    """LISA's chat.py: the image token, a newline, the query; wrapped in <im_start> <im_end>
    when the model was trained so (mm_use_im_start_end)."""
    image = "<image>"
    if config.get("mm_use_im_start_end") and "<im_start>" in tokenizer.get_vocab():
        image = "<im_start><image><im_end>"
    return image + "\n{query}"


def text_fc(src: Source) -> dict:
    """segfast's text_fc state from the [SEG] MLP (nn.Sequential: Linear 0, ReLU, Linear 2)."""
    out = {}
    for i in (0, 2):
        for p in ("weight", "bias"):
            key = f"{FC_PREFIX}{i}.{p}"
            if key in src.weights:
                out[f"{i}.{p}"] = src.take(key, f"text_fc.{i}.{p}")
            else:
                src.report.missing.append(key)
    return out


def convert(system: str, source, out, clip=None) -> Report:
    """The release in `source` as a segfast checkpoint in `out` (see the module doc)."""
    import json
    from pathlib import Path

    from segfast.config import load_config
    from segfast.inference.predictor import SETTINGS, local_paths
    from segfast.io import save_torch
    from segfast.registry import system as registered
    from segfast.train.checkpoint import save_trained

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"--out: {out} exists and is not empty")
    weights = Weights(source)
    report = Report(system, str(source))
    src = Source(weights, report)
    config = weights.config()
    sam, sam_type, sam_size = sam_weights(src)
    fc = text_fc(src)
    src.report.check()
    save_torch(sam, out / "sam.pth")
    tokenizer = write_llava(src, config, out / "llava", clip)
    segfast_config = {
        "model": {
            "name": system,
            "path": "llava",
            "lora": LISA_LORA,
            "options": options_for(system, config, tokenizer, sam_type, sam_size),
        },
        "run": {"seed": 0},
    }
    cfg = load_config(base=segfast_config, overrides=local_paths(out, segfast_config["model"]))
    torch.manual_seed(0)
    model = registered(system).model(cfg.model, torch.device("cpu"))
    model.text_fc.load_state_dict(fc)
    src.finish()
    print(report.summary())
    report.write(out)
    (out / SETTINGS).write_text(json.dumps({"question": question_template(config, tokenizer)}, indent=1))
    save_trained(model, segfast_config, out)
    return report
