"""toy-llm: a small causal LM trained on token sequences, the engine's built-in default.

With model.path it loads that directory through segfast.models.llm (the real loading path);
without, it builds a random-init Llama from model.options (no downloads)."""

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from segfast.config import ModelConfig, build_options, option
from segfast.models.llm import apply_lora, count_labelled, load_llm, token_mean_kwargs
from segfast.models.tiny import TINY_LLAMA, tiny_llama


@dataclass
class ToyOptions:
    """The tiny Llama's fields (LlamaConfig), used when model.path is empty."""

    vocab_size: int = option(TINY_LLAMA["vocab_size"], "ours: the toy task's token range")
    hidden_size: int = option(TINY_LLAMA["hidden_size"], "ours: tiny, for CPU smoke runs")
    intermediate_size: int = option(TINY_LLAMA["intermediate_size"], "ours: tiny, for CPU smoke runs")
    num_hidden_layers: int = option(TINY_LLAMA["num_hidden_layers"], "ours: tiny, for CPU smoke runs")
    num_attention_heads: int = option(TINY_LLAMA["num_attention_heads"], "ours: tiny, for CPU smoke runs")
    num_key_value_heads: int = option(TINY_LLAMA["num_key_value_heads"], "ours: tiny, for CPU smoke runs")
    max_position_embeddings: int = option(TINY_LLAMA["max_position_embeddings"], "ours: the toy sequences' length")


class ToyLLM(nn.Module):
    def __init__(self, cfg: ModelConfig, device=None):
        super().__init__()
        if cfg.path:
            self.lm, self.tokenizer, self.token_ids = load_llm(cfg, device)
        else:
            lm = tiny_llama(**dataclasses.asdict(build_options(ToyOptions, cfg.options)))
            self.lm = apply_lora(lm, cfg.lora) if cfg.lora.enabled else lm
            self.tokenizer, self.token_ids = None, []

    @property
    def peft_model(self):
        from peft import PeftModel

        return self.lm if isinstance(self.lm, PeftModel) else None

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        out = self.lm(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            labels=batch["labels"],
            **token_mean_kwargs(batch),
        )
        return {"loss_text": out.loss}

    @staticmethod
    def count_targets(batch: dict) -> int:
        return count_labelled(batch["labels"])

    def transformer_blocks(self) -> list:
        base = self.lm.get_base_model() if self.peft_model is not None else self.lm
        return list(base.model.layers)

    def enable_gradient_checkpointing(self) -> None:
        self.lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    @staticmethod
    def count_tokens(batch: dict) -> int:
        return int(batch["attention_mask"].sum())
