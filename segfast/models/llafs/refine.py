"""LLaFS refinement network (Supp A.3, Fig. 8): turns the rasterized LLM polygon into a refined mask.

A light pixel decoder of 6 convolutions with bilinear up-sampling lifts the 1/8-scale image
features to 1/4 scale (two 3x3 convolutions at 1/8, up-sampling, three 3x3 at 1/4, a 1x1 giving
the mask features); a Mask2Former-style decoder applied once, `num_layers` = 3 masked-attention
layers, lets learned queries attend only inside the current mask — the rasterized polygon M for
the first layer, the previous layer's prediction after that (segfast's masked attention,
Mask2Former's empty-row rule) — each followed by self-attention and a feed-forward block. M
reaches the network only as that attention mask, as in the paper; `polygon_input` (ours) also
concatenates it to the pixel decoder's input. Each layer predicts mask logits
as query-pixel dot products combined by per-query weights; the output is two-class (background,
foreground) logits at the input image size, ready for segfast's OHEM cross-entropy.
"""

import torch
import torch.nn.functional as F
from torch import nn

from segfast.nn import MaskedCrossAttention
from segfast.ops import pack_masks


def sine_position(h: int, w: int, dim: int, device=None) -> torch.Tensor:
    """Fixed 2-D sine position encoding, (h * w, dim); zero-padded when dim is not a multiple of 4."""
    y, x = torch.meshgrid(torch.linspace(0, 1, h, device=device), torch.linspace(0, 1, w, device=device), indexing="ij")
    freqs = torch.arange(dim // 4, device=device, dtype=torch.float32)
    freqs = 10000 ** (-freqs / max(1, dim // 4)) * torch.pi * 8
    enc = [
        torch.sin(x[..., None] * freqs),
        torch.cos(x[..., None] * freqs),
        torch.sin(y[..., None] * freqs),
        torch.cos(y[..., None] * freqs),
    ]
    enc = torch.cat(enc, -1).reshape(h * w, -1)
    return torch.nn.functional.pad(enc, (0, dim - enc.shape[1]))


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.cross = MaskedCrossAttention(dim, heads)
        self.self_attn = nn.MultiheadAttention(dim, heads)
        self.norm_self = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 4 * dim), nn.ReLU(), nn.Linear(4 * dim, dim))
        self.norm_ffn = nn.LayerNorm(dim)

    def forward(self, queries, memory, attend, pos, query_pos):
        queries = self.cross(queries, memory, attend_mask=attend, pos=pos, query_pos=query_pos)
        q = queries + query_pos
        queries = self.norm_self(queries + self.self_attn(q, q, queries)[0])
        return self.norm_ffn(queries + self.ffn(queries))


class RefinementNetwork(nn.Module):
    def __init__(
        self,
        in_channels: int,
        dim: int = 128,
        num_queries: int = 100,
        num_layers: int = 3,
        polygon_input: bool = False,
        heads: int = 4,
    ):
        super().__init__()
        self.polygon_input = polygon_input

        def conv(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.ReLU()]

        self.pixel_decoder = nn.Sequential(
            *conv(in_channels + int(polygon_input), dim),
            *conv(dim, dim),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            *conv(dim, dim),
            *conv(dim, dim),
            *conv(dim, dim),
            nn.Conv2d(dim, dim, 1),
        )
        self.queries = nn.Embedding(num_queries, dim)
        self.query_pos = nn.Embedding(num_queries, dim)
        self.layers = nn.ModuleList(_Block(dim, heads) for _ in range(num_layers))
        self.mask_embed = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))
        self.query_weight = nn.Linear(dim, 1)
        self.bias = nn.Parameter(torch.zeros(2))

    def _predict(self, queries, pixels):
        """Foreground logits (B, h, w) from queries (Q, B, dim) and pixel features (B, dim, h, w)."""
        embed = self.mask_embed(queries)  # (Q, B, dim)
        per_query = torch.einsum("qbd,bdhw->bqhw", embed, pixels)
        weights = torch.softmax(self.query_weight(queries)[..., 0], dim=0)  # (Q, B)
        return torch.einsum("qb,bqhw->bhw", weights, per_query)

    def forward(self, features: torch.Tensor, polygon_masks: torch.Tensor, out_size: tuple) -> dict:
        """features (B, C, h, w) at 1/8 scale; polygon_masks (B, H, W) bool (the rasterized LLM
        answer); returns {"logits": (B, 2, *out_size), "layer_logits": [(B, h', w')...]}."""
        b = features.shape[0]
        if self.polygon_input:
            prior = F.interpolate(polygon_masks[:, None].float(), size=features.shape[-2:], mode="area")
            features = torch.cat([features, prior], 1)
        pixels = self.pixel_decoder(features)  # (B, dim, h', w')
        h, w = pixels.shape[-2:]
        memory = pixels.flatten(2).permute(2, 0, 1)  # (hw, B, dim)
        pos = sine_position(h, w, memory.shape[-1], memory.device)[:, None].expand(-1, b, -1)
        queries = self.queries.weight[:, None].expand(-1, b, -1)
        query_pos = self.query_pos.weight[:, None].expand(-1, b, -1)
        current = F.interpolate(polygon_masks[:, None].float(), size=(h, w), mode="area")[:, 0] >= 0.5
        layer_logits = []
        for layer in self.layers:
            attend = pack_masks(current.flatten(1)[:, None].expand(-1, queries.shape[0], -1).contiguous())
            queries = layer(queries, memory, attend, pos, query_pos)
            fg = self._predict(queries, pixels)
            layer_logits.append(fg)
            current = fg.detach().sigmoid() >= 0.5
        fg = F.interpolate(layer_logits[-1][:, None], size=tuple(out_size), mode="bilinear", align_corners=False)
        logits = torch.cat([-fg / 2, fg / 2], 1) + self.bias[None, :, None, None]
        return {"logits": logits, "layer_logits": layer_logits}
