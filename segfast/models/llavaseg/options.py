"""LLaVASeg's model.options (see chain.py for the chain-of-thought ones)."""

from dataclasses import dataclass

from segfast.config import option
from segfast.models.lisa.options import LLaVASamOptions


@dataclass
class LLaVASegOptions(LLaVASamOptions):
    templates: dict = option({}, "overrides of the chain-of-thought templates (prompts.py holds the defaults)")
    steps: int = option(3, "LLaVASeg §3.2: reason, target, attributes (1 or 2: Table 3a's ablation)")
    merged: bool = option(True, "LLaVASeg §3.2: steps 2 and 3 asked in one round after step 1")
    max_new_tokens: int = option(64, "ours: room for one step's answer")
    prompt_features: str = option("hidden", "ours: the MLLM's last-layer states of the prompt (or 'input' embeddings)")
    adapter_layers: str | list = option(
        "global", "LLaVASeg §3.3: after SAM's global-attention blocks, multi-scale ('last': Table 3b's single scale)"
    )
    adapter_dim: int = option(256, "ours: the adapters' width")
    adapter_heads: int = option(8, "ours: the adapters' attention heads")
    lambda_bce: float = option(1.0, "LLaVASeg §4.1 (LISA's BCE)")
    lambda_dice: float = option(0.5, "LLaVASeg §4.1 (LISA's DICE)")
