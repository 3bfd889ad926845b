"""LLaVASeg's model.options (see chain.py for the chain-of-thought ones)."""

from dataclasses import dataclass

from segfast.config import option
from segfast.models.lisa.options import LLaVASamOptions


@dataclass
class LLaVASegOptions(LLaVASamOptions):
    templates: dict = option({}, "overrides of the chain-of-thought templates (prompts.py holds the defaults)")
    merged: bool = option(True, "ours: target and attribute steps asked in one round")
    max_new_tokens: int = option(64, "ours: room for one step's answer")
    prompt_features: str = option("hidden", "ours: the MLLM's last-layer states of the prompt (or 'input' embeddings)")
    adapter_layers: str | list = option("global", "LLaVASeg §3.3: after SAM's global-attention blocks")
    adapter_dim: int = option(256, "ours: the adapters' width")
    adapter_heads: int = option(8, "ours: the adapters' attention heads")
    lambda_bce: float = option(1.0, "LLaVASeg §4.1 (LISA's BCE)")
    lambda_dice: float = option(0.5, "LLaVASeg §4.1 (LISA's DICE)")
