"""LISA's model.options (segfast.config.option: default and its source), and the SAM + LLaVA
fields every system built on those two shares."""

from dataclasses import dataclass

from segfast.config import option
from segfast.text.lisa import SYSTEM


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
    max_new_tokens: int = option(32, "LISA, authors' code (LISAForCausalLM.evaluate; chat.py allows 512)")
    system: str = option(SYSTEM, "LISA, authors' code: conv_templates['llava_v1'].system (empty: none)")
    train_projector: bool = option(False, "LISA, authors' code (train_ds.py: mm_projector requires_grad = False)")
    image_start_end: str = option(
        "auto",
        "LISA, authors' code (use_mm_start_end): <im_start><image><im_end> when the checkpoint uses them "
        "(auto: its config's mm_use_im_start_end, or <im_start> in its tokenizer); on | off force it",
    )
    loss_resolution: str = option(
        "original",
        "LISA, authors' code (postprocess_masks to the label's size before BCE/DICE); frame: in SAM's "
        "padded frame, on its unpadded region (ours, cheaper)",
    )
