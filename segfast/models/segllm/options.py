"""SegLLM's model.options: LISA's plus the mask memory's."""

from dataclasses import dataclass

from segfast.config import option
from segfast.models.lisa.options import LISAOptions


@dataclass
class SegLLMOptions(LISAOptions):
    clip_path: str = option("", "a local CLIP vision model for the mask encoder (empty: tiny random from `clip`)")
    clip: dict = option({}, "ours: tiny CLIP vision fields when clip_path is empty")
    fourier_bands: int = option(8, "ours: Fourier bands of the box embedding")
    max_rounds: int = option(3, "ours: rounds the per-round meter reports")
    # LISA freezes LLaVA's projector and writes LLaVA v1's system prompt; SegLLM's own values as before
    train_projector: bool = option(True, "SegLLM §4: the projector f_V2L is fine-tuned")
    system: str = option("", "ours: no system prompt (as before the LISA base took LLaVA v1's)")
    loss_resolution: str = option("frame", "ours: SegLLM's masks live in SAM's frame (its data have no original_masks)")
