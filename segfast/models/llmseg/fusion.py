"""LLM-Seg's mask-text fusion module (its Fig. 3), as the authors' code builds it (model/LISA.py
lisa_attention_layers + lisa_final_attn, model/transformer.py LISA_TwoWayAttentionBlock):

    two two-way blocks, the K proposal embeddings as queries and the one [SEG] embedding as keys,
    no positional encoding, attention at full width (downsample rate 1), ReLU MLP 2048 wide:
        masks = LN(masks + SelfAttn(masks))
        masks = LN(masks + Attn(masks -> [SEG]))
        masks = LN(masks + MLP(masks))
        seg   = LN(seg + Attn([SEG] -> masks))
    then a final mask -> [SEG] attention: masks = LN(masks + Attn(masks -> [SEG])).

Padded proposals (`valid` False) are never attended to, so the result of every real proposal
is the same however many padded ones sit beside it (the authors run one image at a time).

MLPFusion is LLM-Seg Table 2's ablation: the fusion module replaced by an MLP that updates the
mask embeddings only (no [SEG] interaction).
"""

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Multi-head attention with separate q/k/v/out projections (segment-anything's layout) and an
    optional key mask (True = may attend)."""

    def __init__(self, dim: int, heads: int, downsample: int = 1):
        super().__init__()
        inner = dim // downsample
        if inner % heads:
            raise ValueError(f"fusion_heads={heads} must divide the attention width {inner}")
        self.heads = heads
        self.q_proj, self.k_proj, self.v_proj = nn.Linear(dim, inner), nn.Linear(dim, inner), nn.Linear(dim, inner)
        self.out_proj = nn.Linear(inner, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.heads, c // self.heads).transpose(1, 2)

    def forward(self, q, k, v, key_valid: torch.Tensor | None = None) -> torch.Tensor:
        """q (N, Lq, D), k and v (N, Lk, D), key_valid (N, Lk) bool or None."""
        mask = None if key_valid is None else key_valid[:, None, None, :]
        out = F.scaled_dot_product_attention(
            self._split(self.q_proj(q)), self._split(self.k_proj(k)), self._split(self.v_proj(v)), attn_mask=mask
        )
        return self.out_proj(out.transpose(1, 2).flatten(2))


class MLPBlock(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.lin1, self.lin2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.lin2(F.relu(self.lin1(x)))


class TwoWayBlock(nn.Module):
    """One block: the masks attend to themselves and to [SEG], then [SEG] attends to the masks."""

    def __init__(self, dim: int, heads: int, mlp_dim: int):
        super().__init__()
        self.self_attn = Attention(dim, heads)
        self.cross_attn_token_to_image = Attention(dim, heads)  # masks -> [SEG]
        self.cross_attn_image_to_token = Attention(dim, heads)  # [SEG] -> masks
        self.mlp = MLPBlock(dim, mlp_dim)
        self.norm1, self.norm2, self.norm3, self.norm4 = (nn.LayerNorm(dim) for _ in range(4))

    def forward(self, masks, seg, valid):
        masks = self.norm1(masks + self.self_attn(masks, masks, masks, valid))
        masks = self.norm2(masks + self.cross_attn_token_to_image(masks, seg, seg))
        masks = self.norm3(masks + self.mlp(masks))
        seg = self.norm4(seg + self.cross_attn_image_to_token(seg, masks, masks, valid))
        return masks, seg


def attendable(valid: torch.Tensor) -> torch.Tensor:
    """The key mask: the valid proposals, or every slot of a row with none (an image without
    proposals: its outputs are never used, but a fully masked row would make NaNs)."""
    return valid | ~valid.any(-1, keepdim=True)


class Fusion(nn.Module):
    def __init__(self, dim: int = 256, heads: int = 8, blocks: int = 2, mlp_dim: int = 2048):
        super().__init__()
        self.blocks = nn.ModuleList(TwoWayBlock(dim, heads, mlp_dim) for _ in range(blocks))
        self.final_attn = Attention(dim, heads)
        self.norm_final = nn.LayerNorm(dim)

    def forward(self, masks: torch.Tensor, seg: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """masks (N, K, D) proposal embeddings, seg (N, D), valid (N, K) -> fused masks (N, K, D)."""
        keys = attendable(valid)
        seg = seg[:, None]
        for block in self.blocks:
            masks, seg = block(masks, seg, keys)
        return self.norm_final(masks + self.final_attn(masks, seg, seg))


class MLPFusion(nn.Module):
    """Table 2's first row: an MLP on each mask embedding, [SEG] unused."""

    def __init__(self, dim: int = 256, mlp_dim: int = 2048):
        super().__init__()
        self.mlp, self.norm = MLPBlock(dim, mlp_dim), nn.LayerNorm(dim)

    def forward(self, masks: torch.Tensor, seg: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return self.norm(masks + self.mlp(masks))
