"""Modules built on segfast ops."""

from segfast.nn.losses import OHEMCrossEntropyLoss
from segfast.nn.pooling import MaskPooling

__all__ = ["MaskPooling", "OHEMCrossEntropyLoss"]
