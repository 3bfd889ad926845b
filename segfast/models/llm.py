"""Loading the language model: any transformers causal LM (or LLaVA-style image-text model) from
a local directory, special tokens checked to be single ids, embeddings resized, peft LoRA
applied, and the attention implementation chosen (and logged) from what this machine has."""

import importlib.util
import logging

import torch

from segfast.config import ConfigError, LoraConfig, ModelConfig

log = logging.getLogger("segfast")


def choose_attention(requested: str = "auto", device: torch.device | None = None) -> tuple[str, str]:
    """(implementation, why): flash_attention_2 when flash_attn imports and the GPU is Ampere or
    newer, else PyTorch SDPA (whose flash backend serves masks-free attention), else eager."""
    flash_ok, why_not = True, ""
    if importlib.util.find_spec("flash_attn") is None:
        flash_ok, why_not = False, "flash_attn is not installed"
    elif device is None or device.type != "cuda":
        flash_ok, why_not = False, "no CUDA device"
    elif torch.cuda.get_device_capability(device)[0] < 8:
        flash_ok, why_not = False, "GPU older than Ampere"
    if requested == "flash_attention_2" and not flash_ok:
        raise ConfigError(f"model.attention=flash_attention_2 but {why_not}")
    if requested != "auto":
        return requested, "requested in the config"
    if flash_ok:
        return "flash_attention_2", "flash_attn imports and the GPU supports it"
    if hasattr(torch.nn.functional, "scaled_dot_product_attention"):
        return "sdpa", f"PyTorch SDPA ({why_not})"
    return "eager", "no fused attention available"


def verify_single_ids(tokenizer, tokens) -> list[int]:
    """Each token must encode to exactly one id (LISA's [SEG] split into two is the classic bug)."""
    ids = []
    vocab = tokenizer.get_vocab()
    for token in tokens:
        if token not in vocab:
            raise ValueError(
                f"special token {token!r} is not in the tokenizer's vocabulary; add it with "
                "tokenizer.add_tokens([...], special_tokens=True)"
            )
        encoded = tokenizer(token, add_special_tokens=False)["input_ids"]
        expected = tokenizer.convert_tokens_to_ids(token)
        if len(encoded) != 1 or encoded[0] != expected:
            raise ValueError(
                f"special token {token!r} encodes to {encoded}, not to one id; add it with "
                "tokenizer.add_tokens([...], special_tokens=True) before training"
            )
        ids.append(encoded[0])
    return ids


def add_special_tokens(tokenizer, tokens) -> list[int]:
    """Adds `tokens` as special tokens (never split) and returns their ids, verified."""

    def single(token):
        ids = tokenizer(token, add_special_tokens=False)["input_ids"]
        return token in tokenizer.get_vocab() and ids == [tokenizer.convert_tokens_to_ids(token)]

    # tokens already in the vocabulary but split by pre-tokenization are re-registered as added
    # tokens, which keeps their ids and makes them atomic
    todo = [t for t in tokens if not single(t)]
    if todo:
        tokenizer.add_tokens(todo, special_tokens=True)
    return verify_single_ids(tokenizer, tokens)


# LoRA adapts the language model only: LLaVA's CLIP tower stays frozen; its projector trains fully
# (as a module to save) unless train_projector is off (LISA and LaSagnA freeze it)
VISION = r".*(vision_tower|multi_modal_projector).*"


def apply_lora(model, cfg: LoraConfig, train_embeddings: bool = False, train_projector: bool = True):
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    modules_to_save = ["embed_tokens", "lm_head"] if train_embeddings else []
    vision = hasattr(getattr(model, "model", None), "multi_modal_projector")
    if vision and train_projector:
        modules_to_save.append("multi_modal_projector")
    peft_cfg = PeftLoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=list(cfg.target_modules),
        exclude_modules=VISION if vision else None,
        modules_to_save=modules_to_save or None,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, peft_cfg)


def load_llm(cfg: ModelConfig, device: torch.device | None = None, train_projector: bool = True):
    """(model, tokenizer, special token ids) from cfg.path: tokens added and checked, embeddings
    resized, LoRA applied when cfg.lora.enabled (embeddings and lm_head then train fully when
    new tokens were added, as LISA does; an image-text model's projector per train_projector)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if not cfg.path:
        raise ConfigError("model.path must name a local model directory")
    attention, why = choose_attention(cfg.attention, device)
    log.info("segfast: attention implementation %s (%s)", attention, why)
    tokenizer = AutoTokenizer.from_pretrained(cfg.path)
    before = len(tokenizer)
    token_ids = add_special_tokens(tokenizer, cfg.special_tokens)
    hf_config = AutoConfig.from_pretrained(cfg.path)
    try:
        model = AutoModelForCausalLM.from_pretrained(cfg.path, attn_implementation=attention)
    except ValueError:  # LLaVA-style checkpoints register as image-text-to-text models
        from transformers import AutoModelForImageTextToText

        model = AutoModelForImageTextToText.from_pretrained(cfg.path, attn_implementation=attention)
    if len(tokenizer) != before or model.get_input_embeddings().num_embeddings < len(tokenizer):
        # new rows drawn as the authors' transformers (< 4.46) drew them, N(0, initializer_range),
        # not transformers' later default (the old rows' mean and covariance)
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    if cfg.lora.enabled:
        model = apply_lora(model, cfg.lora, train_embeddings=len(tokenizer) != before, train_projector=train_projector)
    log.info("segfast: loaded %s (%s) from %s", type(model).__name__, hf_config.model_type, cfg.path)
    return model, tokenizer, token_ids


def build_llm(cfg: ModelConfig, tiny: dict, words, tokens, device=None):
    """(lm, tokenizer) for a segmentation model: the local checkpoint at cfg.path with `tokens`
    added (load_llm), or, without a path, a tiny random Llama (fields `tiny`) over a word
    tokenizer of `words`. LoRA per cfg.lora; embeddings and LM head train fully beside it."""
    if cfg.path:
        cfg = ModelConfig(**{**cfg.__dict__, "special_tokens": list(cfg.special_tokens) + list(tokens)})
        lm, tokenizer, _ = load_llm(cfg, device)
    else:
        from segfast.models.tiny import tiny_llama, word_tokenizer

        tokenizer = word_tokenizer(words)
        add_special_tokens(tokenizer, tokens)
        lm = tiny_llama(**{**tiny, "vocab_size": len(tokenizer)})
        if cfg.lora.enabled:
            lm = apply_lora(lm, cfg.lora, train_embeddings=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    return lm, tokenizer


def token_mean_kwargs(batch: dict) -> dict:
    """The language model's loss arguments: the engine puts the number of target tokens of the
    whole global batch (per micro-batch share) in batch["num_items_in_batch"], and transformers'
    loss then divides its sum by it instead of taking each micro-batch's own mean, so 1 and N
    processes (and any accumulation) optimise the same loss (transformers' own fix of 2024)."""
    n = batch.get("num_items_in_batch")
    return {} if n is None else {"num_items_in_batch": n}


def count_labelled(labels) -> int:
    """Target tokens of label rows (lists or a tensor): those that are not IGNORE after the
    one-position shift of a causal LM's loss."""
    return sum(sum(1 for t in list(row)[1:] if int(t) != -100) for row in labels)


class LLMHooks:
    """The engine hooks (segfast.models.protocol) of a model whose language model is `self.lm`
    and which counts its tokens per forward in `self._tokens`."""

    @property
    def peft_model(self):
        from peft import PeftModel

        return self.lm if isinstance(self.lm, PeftModel) else None

    def transformer_blocks(self) -> list:
        base = self.lm.get_base_model() if self.peft_model is not None else self.lm
        inner = getattr(base, "model", base)
        layers = getattr(inner, "layers", None)
        if layers is None:  # image-text models keep the decoder under language_model
            layers = getattr(getattr(inner, "language_model", None), "layers", None)
        return list(layers or [])

    def enable_gradient_checkpointing(self) -> None:
        self.lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    def count_tokens(self, batch: dict) -> int:
        return self._tokens
