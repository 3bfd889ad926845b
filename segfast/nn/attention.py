"""MaskedCrossAttention: Mask2Former's masked cross-attention layer on segfast's kernel."""

import torch
import torch.nn.functional as F
from torch import nn

from segfast.ops.attention import masked_attention


class MaskedCrossAttention(nn.Module):
    """Drop-in for Mask2Former's CrossAttentionLayer: queries attend to memory (pixel features)
    only inside their current mask; residual, dropout and LayerNorm (post-norm by default).

    Same constructor and forward signature, sequence-first tensors: tgt (Q, B, E), memory
    (HW, B, E), pos (HW, B, E), query_pos (Q, B, E). Parameters live in an nn.MultiheadAttention
    submodule, so Mask2Former checkpoints load unchanged.

    Masks: `memory_mask` uses Mask2Former's convention (True = blocked, (B * nhead, Q, HW));
    `attend_mask` uses segfast's (True = may attend, (B, Q, HW) shared by the heads, bool or
    packed — see segfast.ops.attend_mask_from_logits). Rows with nothing to attend attend
    everywhere, as Mask2Former patches them. Attention-probability dropout (dropout > 0 while
    training) runs through SDPA, since the kernel has none.
    """

    def __init__(
        self, d_model: int, nhead: int, dropout: float = 0.0, activation: str = "relu", normalize_before: bool = False
    ):
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.normalize_before = normalize_before
        self.nhead = nhead

    @staticmethod
    def with_pos_embed(tensor, pos):
        return tensor if pos is None else tensor + pos

    def _attend(self, memory_mask, attend_mask, key_padding_mask, b, q_len, hw):
        if attend_mask is not None and memory_mask is not None:
            raise ValueError("give memory_mask (True = blocked) or attend_mask (True = may attend), not both")
        if memory_mask is not None:
            attend = ~memory_mask.reshape(b, self.nhead, q_len, hw)
        elif attend_mask is not None:
            attend = attend_mask
        else:
            attend = torch.ones(
                b, q_len, hw, dtype=torch.bool, device=key_padding_mask.device if key_padding_mask is not None else None
            )
        if key_padding_mask is not None:
            if attend.dtype != torch.bool:
                raise ValueError("key_padding_mask needs a bool attend_mask, not a packed one")
            keep = ~key_padding_mask
            attend = attend & (keep[:, None, None, :] if attend.dim() == 4 else keep[:, None, :])
        return attend

    def _attention(self, query, key, value, attend):
        mha = self.multihead_attn
        e, h = mha.embed_dim, self.nhead
        w_q, w_k, w_v = mha.in_proj_weight.chunk(3)
        b_q, b_k, b_v = mha.in_proj_bias.chunk(3) if mha.in_proj_bias is not None else (None, None, None)
        heads = lambda x: x.reshape(x.shape[0], x.shape[1], h, e // h).permute(1, 2, 0, 3)  # noqa: E731
        q, k, v = heads(F.linear(query, w_q, b_q)), heads(F.linear(key, w_k, b_k)), heads(F.linear(value, w_v, b_v))
        if self.training and mha.dropout > 0:
            dense = attend if attend.dtype == torch.bool else None
            if dense is None:
                raise ValueError("attention dropout needs a bool mask")
            dense = dense if dense.dim() == 4 else dense[:, None]
            dense = dense | ~dense.any(-1, keepdim=True)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=dense, dropout_p=mha.dropout)
        else:
            out = masked_attention(q, k, v, attend, unmask_empty_rows=True)
        out = out.permute(2, 0, 1, 3).reshape(query.shape[0], query.shape[1], e)
        return mha.out_proj(out)

    def forward(
        self, tgt, memory, memory_mask=None, memory_key_padding_mask=None, pos=None, query_pos=None, attend_mask=None
    ):
        q_len, b, _ = tgt.shape
        attend = self._attend(memory_mask, attend_mask, memory_key_padding_mask, b, q_len, memory.shape[0])
        source = self.norm(tgt) if self.normalize_before else tgt
        tgt2 = self._attention(self.with_pos_embed(source, query_pos), self.with_pos_embed(memory, pos), memory, attend)
        tgt = tgt + self.dropout(tgt2)
        return tgt if self.normalize_before else self.norm(tgt)
