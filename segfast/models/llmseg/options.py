"""LLM-Seg's model.options."""

from dataclasses import dataclass

from segfast.config import option


@dataclass
class LLMSegOptions:
    image_size: int = option(56, "ours: a tiny default offline; the paper feeds DINOv2 896 (configs/llmseg.yaml)")
    dinov2_path: str = option("", "a local transformers Dinov2Model (the paper: DINOv2 ViT-L/14)")
    dinov2: dict = option(
        {
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 64,
            "patch_size": 14,
        },
        "ours: tiny DINOv2 fields when dinov2_path is empty",
    )
    dim: int = option(256, "LLM-Seg §3.3: proposal embeddings projected to 256")
    fusion_heads: int = option(8, "authors' code")
    fusion_blocks: int = option(2, "authors' code: two two-way blocks")
    fusion_mlp: int = option(1024, "ours (authors' code: 2048)")
    tau: float = option(0.05, "LLM-Seg eq. 1: temperature of the IoU alignment")
    normalize: bool = option(True, "authors' code: cosine similarity (the paper writes a dot product)")
    lambda_text: float = option(1.0, "LLM-Seg §3.4")
    lambda_iou: float = option(1.0, "LLM-Seg §3.4")
    lambda_iop: float = option(50.0, "LLM-Seg §3.4")
    visual_tokens: int = option(4, "ours: DINOv2 patch tokens per side the LLM reads")
    llm: dict = option(
        {
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 4,
            "max_position_embeddings": 256,
        },
        "ours: tiny Llama fields when model.path is empty",
    )
    selection: str = option("top1_iou", "LLM-Seg Table 3's strategies: top1_iou | iop_threshold | ...")
    iop_threshold: float = option(0.5, "LLM-Seg §3.5")
