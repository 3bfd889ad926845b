"""Language-aware adapters inside SAM's frozen ViT image encoder (LLaVASeg's segmenter).

After each chosen block, an adapter lets the visual tokens read the text prompt:

    h = q + CrossAttn(q = W_q LN(x), k, v = W_kv text)      (text padding masked out)
    h = h + FFN(LN(h))
    x = x + W_out h                                         W_out zero-initialised

so at initialisation the encoder's output is exactly SAM's, and training moves it only through
the residual. The adapters work in a narrower width (adapter_dim) than the encoder. The blocks
before the first adapter do not depend on the text and run without autograd; the frozen blocks
after it pass gradients through to the adapters (activation checkpointing optional).
"""

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


class LanguageAwareAdapter(nn.Module):
    def __init__(self, dim: int, text_dim: int, inner: int, heads: int):
        super().__init__()
        if inner % heads:
            raise ValueError(f"adapter_dim {inner} must be divisible by adapter_heads {heads}")
        self.heads = heads
        self.norm, self.q, self.kv = nn.LayerNorm(dim), nn.Linear(dim, inner), nn.Linear(text_dim, 2 * inner)
        self.ffn_norm = nn.LayerNorm(inner)
        self.ffn = nn.Sequential(nn.Linear(inner, 4 * inner), nn.GELU(), nn.Linear(4 * inner, inner))
        self.out = nn.Linear(inner, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """x (B, H, W, C) visual tokens, text (B, L, text_dim), text_mask (B, L) True = token."""
        b, h, w, c = x.shape
        q = self.q(self.norm(x)).reshape(b, h * w, -1)
        k, v = self.kv(text.to(q.dtype)).chunk(2, dim=-1)

        def split(t):
            return t.unflatten(-1, (self.heads, -1)).transpose(1, 2)

        attended = F.scaled_dot_product_attention(split(q), split(k), split(v), attn_mask=text_mask[:, None, None, :])
        hidden = q + attended.transpose(1, 2).flatten(2)
        hidden = hidden + self.ffn(self.ffn_norm(hidden))
        return x + self.out(hidden).reshape(b, h, w, c)


def global_layers(encoder) -> list:
    """The blocks with global attention (SAM's stage ends: 7, 15, 23, 31 in ViT-H)."""
    return [i for i, block in enumerate(encoder.blocks) if block.window_size == 0]


class LanguageAdapters(nn.Module):
    """Adapters after the blocks `layers` of a segment-anything ImageEncoderViT, which stays
    outside this module (it belongs to the frozen SAM) and is passed to forward."""

    def __init__(self, encoder, layers, text_dim: int, inner: int, heads: int):
        super().__init__()
        depth = len(encoder.blocks)
        if layers in ("global", "last"):  # all stage ends (multi-scale) or the last one (single scale)
            layers = global_layers(encoder)[-1:] if layers == "last" else global_layers(encoder)
        else:
            layers = sorted({int(i) for i in layers})
        if not layers or any(not 0 <= i < depth for i in layers):
            raise ValueError(
                f"model.options.adapter_layers must name blocks 0..{depth - 1} of the image encoder "
                f"(or 'global' / 'last'), got {layers}"
            )
        dim = encoder.blocks[0].norm1.normalized_shape[0]
        self.layers = layers
        self.adapters = nn.ModuleDict({str(i): LanguageAwareAdapter(dim, text_dim, inner, heads) for i in layers})
        self.checkpointing = False

    def forward(self, encoder, images: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """(B, C_out, h, w) image embeddings of (B, 3, S, S) SAM-normalised images, each image's
        tokens adapted to its own text (B, L, text_dim)."""
        first = self.layers[0]
        with torch.no_grad():
            x = encoder.patch_embed(images.to(encoder.patch_embed.proj.weight.dtype))
            if encoder.pos_embed is not None:
                x = x + encoder.pos_embed
            for block in encoder.blocks[: first + 1]:
                x = block(x)
        for i in range(first, len(encoder.blocks)):
            if i > first:
                block = encoder.blocks[i]
                x = checkpoint(block, x, use_reentrant=False) if self.checkpointing and x.requires_grad else block(x)
            if str(i) in self.adapters:
                x = self.adapters[str(i)](x, text, text_mask)
        return encoder.neck(x.permute(0, 3, 1, 2))
