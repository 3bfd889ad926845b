"""LLaVASeg's model.options (see chain.py for the chain-of-thought ones)."""

from dataclasses import dataclass

from segfast.config import option


@dataclass
class LLaVASegOptions:
    sam_type: str = option("tiny", "ours: a random tiny SAM offline; the paper uses SAM ViT-H")
    sam_checkpoint: str = option("", "a local segment-anything checkpoint")
    sam_image_size: int = option(64, "ours: the tiny SAM's input size (SAM's is 1024)")
    llava: dict = option(
        {"text": {"max_position_embeddings": 512}, "vision": {}},
        "ours: tiny LLaVA fields ({text, vision}) when model.path is empty",
    )
    templates: dict = option({}, "overrides of the chain-of-thought templates (prompts.py holds the defaults)")
    merged: bool = option(True, "ours: target and attribute steps asked in one round")
    max_new_tokens: int = option(64, "ours: room for one step's answer")
    system: str = option("", "ours: no system prompt by default")
    prompt_features: str = option("hidden", "ours: the MLLM's last-layer states of the prompt (or 'input' embeddings)")
    adapter_layers: str | list = option("global", "LLaVASeg §3.3: after SAM's global-attention blocks")
    adapter_dim: int = option(256, "ours: the adapters' width")
    adapter_heads: int = option(8, "ours: the adapters' attention heads")
    lambda_bce: float = option(1.0, "LLaVASeg §4.1 (LISA's BCE)")
    lambda_dice: float = option(0.5, "LLaVASeg §4.1 (LISA's DICE)")
