"""LLM-Seg's model.options."""

from dataclasses import dataclass

from segfast.config import option
from segfast.models.lisa.options import LLaVASamOptions
from segfast.text.lisa import SYSTEM

BACKBONES = ("dinov2", "sam")
FUSIONS = ("two_way", "mlp")
POSITIONS = ("hub", "transformers")
HEADS = ("both", "iou", "iop")


@dataclass
class LLMSegOptions(LLaVASamOptions):
    image_size: int = option(56, "ours: a tiny default offline; the paper feeds DINOv2 896 (configs/llmseg.yaml)")
    backbone: str = option(
        "dinov2",
        "LLM-Seg §3.2 and Table 4: DINOv2 ViT-L makes the mask embeddings; sam (SAM's image encoder, "
        "Table 4's SAM ViT-H row) is the ablation; Table 4's CLIP ConvNeXt-L (OpenCLIP) is not offered",
    )
    dinov2_path: str = option("", "a local transformers Dinov2Model (the paper: DINOv2 ViT-L/14)")
    dinov2_positions: str = option(
        "hub",
        "authors' code: torch.hub's DINOv2 resamples its position grid with interpolate_offset 0.1; "
        "transformers (its own, size n) is the option",
    )
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
    dim: int = option(256, "LLM-Seg §5.1.1: the fusion module's width (1x1 conv from DINOv2's 1024)")
    pool_grid: int = option(
        256, "authors' code: features upsampled and masks (padded square) resized to 256x256 before pooling"
    )
    fusion: str = option("two_way", "LLM-Seg Fig. 3 (two_way); mlp is Table 2's first row (fusion replaced by an MLP)")
    fusion_heads: int = option(8, "authors' code")
    fusion_blocks: int = option(2, "authors' code: two two-way blocks, then a final mask -> [SEG] attention")
    fusion_mlp: int = option(2048, "authors' code (LISA_TwoWayAttentionBlock mlp_dim)")
    heads: str = option("both", "LLM-Seg Table 2: both heads (the paper's model); iou or iop alone are its ablations")
    embedding_hidden: int = option(2048, "authors' code: the IoU head's shared MLP 256 -> 2048 -> 256 (§3.3)")
    iop_hidden: int = option(64, "LLM-Seg §5.1.1: IoP head MLP [256, 64, 1] (authors' code: 128), sigmoid output")
    tau: float = option(0.05, "LLM-Seg eq. 1: temperature of the IoU alignment")
    normalize: bool = option(True, "authors' code: cosine similarity (the paper writes a dot product)")
    kl: str = option(
        "gt||pred",
        "authors' code: F.kl_div(sim.log(), gt) = KL(gt || pred); pred||gt is eq. 1 read literally",
    )
    lambda_text: float = option(1.0, "authors' code (ce_loss_weight)")
    lambda_iou: float = option(1.0, "LLM-Seg §5.1.1")
    lambda_iop: float = option(50.0, "LLM-Seg §5.1.1")
    selection: str = option(
        "iop_threshold", "LLM-Seg Table 3 (Threshold IoP, the paper's model); or top1_iou, top1_iou+iop_threshold, ..."
    )
    iop_threshold: float = option(0.5, "LLM-Seg §5.1.3 / authors' code (validate_threshold)")
    system: str = option(SYSTEM, "authors' code: conv_templates['llava_v1'].system (training.py --conv_type)")
    image_start_end: str = option(
        "auto",
        "authors' code (use_mm_start_end, on in training.py): <im_start><image><im_end> when the checkpoint "
        "uses them (auto: its config's mm_use_im_start_end, or <im_start> in its tokenizer); on | off force it",
    )
