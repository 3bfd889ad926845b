"""MaskPooling: the pooled embedding of each mask proposal (LLM-Seg, Mask2Former-style heads)."""

import torch
from torch import nn

from segfast.ops.pooling import mask_pool


class MaskPooling(nn.Module):
    """Pools (B, C, h, w) features under (B, K, H, W) masks into (B, K, C) embeddings.

    Args:
        weights: "area" or "bilinear" (see segfast.ops.pooling).
        grid: with "bilinear", LLM-Seg's upsampling grid (gh, gw); None pools at feature size.
        eps: added to the weight sum; empty masks pool to 0.
        projection: optional module applied to the features first (LLM-Seg uses a 1x1 conv),
            trained through the pooling.
    """

    def __init__(
        self, weights: str = "area", grid: tuple | None = None, eps: float = 1e-8, projection: nn.Module | None = None
    ):
        super().__init__()
        self.weights, self.grid, self.eps = weights, grid, eps
        self.projection = projection

    def forward(self, features: torch.Tensor, masks: torch.Tensor, width: int | None = None) -> torch.Tensor:
        if self.projection is not None:
            features = self.projection(features)
        return mask_pool(features, masks, weights=self.weights, eps=self.eps, grid=self.grid, width=width)

    def extra_repr(self) -> str:
        return f"weights={self.weights!r}, grid={self.grid}, eps={self.eps}"
