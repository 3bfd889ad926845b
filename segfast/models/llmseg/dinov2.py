"""DINOv2's position embeddings as torch.hub's DINOv2 interpolates them (the model LLM-Seg's
authors load, torch.hub.load('facebookresearch/dinov2', 'dinov2_vitl14')).

Both hub and transformers resample the pretrained 37 x 37 grid bicubically (no antialias) to the
input's n x n patches, but hub asks F.interpolate for scale_factor (n + 0.1) / 37
(interpolate_offset 0.1, against a floating-point rounding of the output size) while transformers
asks for size n. With a scale factor PyTorch maps output pixel j to input (j + 0.5) / s - 0.5,
so the two grids sample slightly different points: at 896 (n = 64) the embeddings differ,
and with them every feature LLM-Seg pools.
"""

import types

import torch
import torch.nn.functional as F

HUB_OFFSET = 0.1  # facebookresearch/dinov2 DinoVisionTransformer(interpolate_offset=0.1)


def hub_position_encoding(self, embeddings: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """transformers' Dinov2Embeddings.interpolate_pos_encoding with hub's resampling."""
    patches, positions = embeddings.shape[1] - 1, self.position_embeddings.shape[1] - 1
    if patches == positions and height == width:
        return self.position_embeddings
    side = int(round(positions**0.5))
    patch = self.config.patch_size
    h, w = height // patch, width // patch
    grid = self.position_embeddings[:, 1:].float().reshape(1, side, side, -1).permute(0, 3, 1, 2)
    scale = ((h + HUB_OFFSET) / side, (w + HUB_OFFSET) / side)
    grid = F.interpolate(grid, scale_factor=scale, mode="bicubic", align_corners=False, antialias=False)
    if grid.shape[-2:] != (h, w):  # hub asserts the same
        raise ValueError(f"DINOv2 position grid resampled to {tuple(grid.shape[-2:])}, expected {(h, w)}")
    grid = grid.permute(0, 2, 3, 1).reshape(1, h * w, -1).to(self.position_embeddings.dtype)
    return torch.cat([self.position_embeddings[:, :1], grid], 1)


def use_hub_positions(model) -> None:
    """Makes a transformers Dinov2Model interpolate its position embeddings as hub's does."""
    model.embeddings.interpolate_pos_encoding = types.MethodType(hub_position_encoding, model.embeddings)
