"""Modules built on segfast ops."""

from segfast.nn.attention import MaskedCrossAttention
from segfast.nn.losses import OHEMCrossEntropyLoss
from segfast.nn.pooling import MaskPooling

__all__ = ["MaskedCrossAttention", "MaskPooling", "OHEMCrossEntropyLoss"]
