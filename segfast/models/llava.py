"""LLaVA-style image-text models for the [SEG]-token family (LISA, LaSagnA, SegLLM).

A local checkpoint (model.path, transformers' LlavaForConditionalGeneration layout: CLIP vision
tower, projector, language model) loads through segfast.models.llm.load_llm; without a path a
tiny random LLaVA is built from configs over a word tokenizer (tests, CPU smoke runs). Either way
the CLIP tower is frozen, the projector trains unless the system freezes it (LISA's family
does: train_projector) and LoRA adapts the language model.

segfast builds the input embeddings itself (image features scattered into the `<image>` slots,
mask memory into its slots) and calls the model with inputs_embeds, so one code path serves
training, evaluation and generation.
"""

import json
from pathlib import Path

import torch

from segfast.config import ConfigError, ModelConfig
from segfast.models.llm import add_special_tokens, apply_lora, load_llm
from segfast.models.tiny import TINY_LLAMA, word_tokenizer
from segfast.text.tokens import IM_END, IM_START, IMAGE

TINY_VISION = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8
)


def tiny_llava(tokenizer, text: dict | None = None, vision: dict | None = None):
    """A random LlavaForConditionalGeneration: CLIP vision tower TINY_VISION and Llama TINY_LLAMA
    (each updated by the given fields), the image token being the tokenizer's IMAGE."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    config = LlavaConfig(
        vision_config=CLIPVisionConfig(**{**TINY_VISION, **(vision or {})}),
        text_config=LlamaConfig(**{**TINY_LLAMA, **(text or {}), "vocab_size": len(tokenizer)}),
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE),
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlavaForConditionalGeneration(config)


def save_tiny_llava(directory, words, text: dict | None = None, vision: dict | None = None):
    """Writes a tiny random LLaVA and its tokenizer to `directory` in transformers' format (what
    model.path reads): tests go through the real from_pretrained path with it."""
    tokenizer = word_tokenizer(words)
    add_special_tokens(tokenizer, [IMAGE])
    tiny_llava(tokenizer, text, vision).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def base_model(lm):
    """The transformers model under a peft wrapper (or lm itself)."""
    return lm.get_base_model() if hasattr(lm, "get_base_model") else lm


def build_llava(cfg: ModelConfig, tiny: dict, words, tokens, device=None, train_projector: bool = True):
    """(lm, tokenizer) with `tokens` added as single ids; see the module doc."""
    if cfg.path:
        cfg = ModelConfig(**{**cfg.__dict__, "special_tokens": list(cfg.special_tokens) + list(tokens)})
        lm, tokenizer, _ = load_llm(cfg, device, train_projector)
        if not hasattr(getattr(base_model(lm), "model", None), "vision_tower"):
            raise ConfigError(
                f"model.path {cfg.path} is not a LLaVA-style model (no vision tower); the [SEG] models "
                "need an image-text checkpoint such as llava-hf/llava-1.5-7b-hf"
            )
        image_id = base_model(lm).config.image_token_id
        if tokenizer.convert_tokens_to_ids(IMAGE) != image_id:
            raise ConfigError(
                f"model.path {cfg.path}: the tokenizer's {IMAGE} is not the model's image_token_id {image_id}"
            )
    else:
        tokenizer = word_tokenizer(words)
        add_special_tokens(tokenizer, [IMAGE, *tokens])
        lm = tiny_llava(tokenizer, tiny.get("text"), tiny.get("vision"))
        if cfg.lora.enabled:
            lm = apply_lora(lm, cfg.lora, train_embeddings=True, train_projector=train_projector)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    vision_tower(lm).requires_grad_(False).eval()
    if not train_projector:
        base_model(lm).model.multi_modal_projector.requires_grad_(False)
    return lm, tokenizer


def vision_tower(lm):
    return base_model(lm).model.vision_tower


def projector(lm):
    """LLaVA's multi-modal projector (under peft, its module-to-save wrapper)."""
    return base_model(lm).model.multi_modal_projector


def image_token_count(lm) -> int:
    """Image features per image: CLIP's patch grid (plus CLS for the "full" strategy)."""
    config = base_model(lm).config
    v = config.vision_config
    return (v.image_size // v.patch_size) ** 2 + (config.vision_feature_select_strategy == "full")


def image_size(lm) -> int:
    return base_model(lm).config.vision_config.image_size


def tower_layers(lm, pixel_values: torch.Tensor) -> list:
    """The frozen CLIP tower's hidden states at the config's vision_feature_layer(s), CLS included."""
    base = base_model(lm)
    layers = base.config.vision_feature_layer
    with torch.no_grad():
        tower = base.model.vision_tower
        hidden = tower(pixel_values.to(tower.dtype), output_hidden_states=True).hidden_states
    return [hidden[i] for i in (layers if isinstance(layers, (list, tuple)) else [layers])]


def image_features(lm, pixel_values: torch.Tensor) -> torch.Tensor:
    """(B, image_token_count, d_llm): the frozen CLIP tower's selected layer (CLS dropped for
    the "default" strategy), through the trainable projector, as LLaVA computes them."""
    base = base_model(lm)
    picked = tower_layers(lm, pixel_values)
    if base.config.vision_feature_select_strategy == "default":
        picked = [h[:, 1:] for h in picked]
    return base.model.multi_modal_projector(torch.cat(picked, dim=-1))


def conversation_embeds(
    lm, pad_id: int, encoded: list, feats: torch.Tensor, memory: list | None = None, left: bool = False
):
    """(inputs_embeds, attention_mask, labels, ids) of right- (or left-, for generation) padded
    encoded conversations (segfast.models.lisa.conversation) with image features `feats`
    (B, slots, d) in their image slots and mask memory (per sample (slots, d) or None) in theirs."""
    from segfast.models.lisa.conversation import IGNORE, IMAGE_SLOT, MEMORY_SLOT

    device = feats.device
    longest = max(len(e.ids) for e in encoded)

    def pad(rows, fill):
        return torch.tensor(
            [[fill] * (longest - len(r)) + r if left else r + [fill] * (longest - len(r)) for r in rows], device=device
        )

    ids, labels = pad([e.ids for e in encoded], pad_id), pad([e.labels for e in encoded], IGNORE)
    kinds = pad([e.kinds for e in encoded], -1)
    attention = pad([[1] * len(e.ids) for e in encoded], 0)
    embeds = lm.get_input_embeddings()(ids).clone()
    embeds[kinds == IMAGE_SLOT] = feats.reshape(-1, feats.shape[-1]).to(embeds.dtype)
    if memory is not None and (kinds == MEMORY_SLOT).any():
        embeds[kinds == MEMORY_SLOT] = torch.cat([m for m in memory if m is not None]).to(embeds.dtype)
    return embeds, attention, labels, ids


def greedy_answers(
    lm, tokenizer, embeds: torch.Tensor, attention: torch.Tensor, max_new_tokens: int, **generate_kwargs
) -> list:
    """Token ids of each left-padded prompt's greedy answer, up to (not including) </s>."""
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    new = lm.generate(
        inputs_embeds=embeds,
        attention_mask=attention,
        do_sample=False,
        eos_token_id=eos,
        pad_token_id=pad,
        max_new_tokens=max_new_tokens,
        **generate_kwargs,
    )
    answers = []
    for row in new.tolist():
        row = row[: row.index(eos)] if eos in row else row
        answers.append([t for t in row if t != pad])
    return answers


def uses_image_start_end(setting: str, path: str) -> bool:
    """image_start_end resolved: on, off, or (auto) what the checkpoint at `path` was trained with:
    its config's mm_use_im_start_end (LLaVA's and LISA's key, top level or text_config) or
    <im_start> among its tokenizer's tokens; a random tiny model (no path) has none."""
    if setting not in ("auto", "on", "off"):
        raise ConfigError(f"model.options.image_start_end must be auto, on or off, got {setting!r}")
    if setting != "auto":
        return setting == "on"
    if not path:
        return False
    folder = Path(path)
    config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
    if any(c.get("mm_use_im_start_end") for c in (config, config.get("text_config") or {})):
        return True
    files = ("added_tokens.json", "tokenizer.json", "tokenizer_config.json")
    return any(IM_START in (folder / f).read_text() for f in files if (folder / f).is_file())


def with_image_start_end(rounds: list) -> list:
    """The rounds with each <image> wrapped in <im_start>/<im_end> (LLaVA's use_mm_start_end)."""
    return [{**r, "question": r["question"].replace(IMAGE, IM_START + IMAGE + IM_END)} for r in rounds]
