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
