"""LISA's model.options (segfast.config.option: default and its source), and the SAM + LLaVA
fields every system built on those two shares."""

from dataclasses import dataclass

from segfast.config import option


@dataclass
class LLaVASamOptions:
    sam_type: str = option("tiny", "ours: a random tiny SAM offline; the papers load vit_h (authors' code)")
    sam_checkpoint: str = option("", "a local segment-anything checkpoint (sam_vit_h_4b8939.pth)")
    sam_image_size: int = option(64, "ours: the tiny SAM's input size (SAM's is 1024)")
    llava: dict = option(
        {"text": {"max_position_embeddings": 512}, "vision": {}},
        "ours: tiny LLaVA fields ({text, vision}) when model.path is empty",
    )
    system: str = option("", "ours: no system prompt by default (LLaVA v1's is an option)")


@dataclass
class LISAOptions(LLaVASamOptions):
    lambda_text: float = option(1.0, "LISA, authors' code (ce_loss_weight)")
    lambda_bce: float = option(2.0, "LISA, authors' code (bce_loss_weight)")
    lambda_dice: float = option(0.5, "LISA, authors' code (dice_loss_weight)")
    seg_token: str = option("[SEG]", "LISA")
    max_new_tokens: int = option(32, "ours: LISA's answers are a few words")
