"""LLaFS's model.options."""

from dataclasses import dataclass

from segfast.config import option


@dataclass
class LLaFSOptions:
    image_size: int = option(64, "ours: the offline demo's size (the paper: 384, Supp B)")
    encoder: str = option("tiny", "ours: a small conv encoder offline (the paper: ResNet-50, Supp B)")
    encoder_path: str = option("", "a local ResNet-50 state dict")
    encoder_widths: list = option([16, 32, 64, 64], "ours: the tiny encoder's stage widths")
    freeze_encoder: bool = option(True, "LLaFS §4.1: the pretrained encoder is frozen")
    qformer: dict = option(
        {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128},
        "ours: tiny Blip2QFormerConfig fields (the paper: 8 x 384)",
    )
    qformer_path: str = option("", "a local BLIP-2 Q-Former")
    num_query_tokens: int = option(100, "LLaFS §4.1: 100 queries")
    llm: dict = option(
        {
            "hidden_size": 128,
            "intermediate_size": 256,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 4,
            "max_position_embeddings": 1024,
        },
        "ours: tiny Llama fields when model.path is empty",
    )
    refine_dim: int = option(64, "ours (the paper: 128, Supp B)")
    refine_queries: int = option(8, "ours")
    refine_layers: int = option(3, "LLaFS Supp B: 3 attention layers")
    ohem_thresh: float = option(0.7, "mmseg OHEMPixelSampler default")
    ohem_min_kept: int = option(1024, "ours: per image at the demo's size")
    max_objects: int = option(4, "ours: polygons generated per answer")
