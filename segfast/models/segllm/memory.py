"""SegLLM's mask encoding: two LLM-input embeddings per mask.

* mask embedding: the image with every pixel outside the mask blacked out, cropped to the mask's
  box and padded square (torchvision roi_align, one batched call for all masks), through LLaVA's
  own frozen CLIP tower, the CLS token of its selected layer through LLaVA's trainable projector
  (authors' code: llava_llama.py encode_images(..., features='cls')); mask_clip "separate" (ours)
  takes a second frozen CLIP vision model's pooled output through a new MLP instead;
* box embedding: the mask's box [row0, col0, row1, col1] (inclusive maxima) divided by the
  frame's side, through a trainable linear layer to the LLM width (authors' code: train.py
  get_bitmask_bbox_encode, llava_arch.py mask_enc_head = nn.Linear(4, hidden)); box_embedding
  "fourier" puts sin/cos features of those four numbers before the linear layer instead (ours).
"""

import math

import torch
from torch import nn

from segfast.frames import CLIP_MEAN, CLIP_STD, SAM_MEAN, SAM_STD
from segfast.models.llava import base_model, tower_layers

TINY_CLIP = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8
)


def load_clip(path: str, tiny: dict):
    """A frozen CLIPVisionModel from a local directory (a CLIP or CLIP-vision checkpoint), or a
    tiny random one from TINY_CLIP updated by `tiny`."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    model = (
        CLIPVisionModel.from_pretrained(path) if path else CLIPVisionModel(CLIPVisionConfig(**{**TINY_CLIP, **tiny}))
    )
    return model.requires_grad_(False).eval()


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(n, 4) float XYXY boxes (exclusive max) of (n, H, W) bool masks; an empty mask gets the
    whole frame."""
    n, h, w = masks.shape
    rows, cols = masks.any(2), masks.any(1)
    ar_h = torch.arange(h, device=masks.device)
    ar_w = torch.arange(w, device=masks.device)
    big = torch.tensor(10**9, device=masks.device)
    x0 = torch.where(cols, ar_w, big).amin(1)
    x1 = torch.where(cols, ar_w + 1, -big).amax(1)
    y0 = torch.where(rows, ar_h, big).amin(1)
    y1 = torch.where(rows, ar_h + 1, -big).amax(1)
    boxes = torch.stack([x0, y0, x1, y1], 1).float()
    whole = torch.tensor([0.0, 0.0, w, h], device=masks.device)
    return torch.where(masks.flatten(1).any(1)[:, None], boxes, whole)


def box_coords(boxes: torch.Tensor, side: int) -> torch.Tensor:
    """(n, 4) [row0, col0, row1, col1] / side of mask_boxes' XYXY boxes, maxima inclusive: the
    authors' box (train.py get_bitmask_bbox_encode takes min/max pixel indices of the 1024
    SAM-frame mask, rows first, and divides by 1024)."""
    x0, y0, x1, y1 = boxes.unbind(1)
    return torch.stack([y0, x0, y1 - 1, x1 - 1], 1) / side


def fourier(x: torch.Tensor, bands: int) -> torch.Tensor:
    """(..., k) in [0, 1] -> (..., k * 2 * bands) sin/cos at frequencies 2^j * pi."""
    freqs = (2.0 ** torch.arange(bands, device=x.device)) * math.pi
    angles = x[..., None] * freqs
    return torch.cat([angles.sin(), angles.cos()], -1).flatten(-2)


def llava_cls(lm, pixel_values: torch.Tensor) -> torch.Tensor:
    """(n, d_llm): the CLS token of LLaVA's frozen CLIP tower at its vision_feature_layer(s),
    through LLaVA's projector (authors' code: CLIPVisionTower.feature_select 'cls' = hidden_states
    [mm_vision_select_layer][:, :1], then mm_projector)."""
    cls = torch.cat([h[:, 0] for h in tower_layers(lm, pixel_values)], -1)
    return base_model(lm).model.multi_modal_projector(cls)


class MaskEncoder(nn.Module):
    """clip None: the mask embedding comes from the `embed` callable forward gets (LLaVA's own
    tower and projector, llava_cls), on crops of side `size`."""

    slots = 2

    def __init__(self, clip, width: int, bands: int = 8, box: str = "linear", size: int = 0):
        super().__init__()
        self.clip, self.bands = clip, bands if box == "fourier" else 0
        self.size = clip.config.image_size if clip is not None else size
        if clip is not None:
            hidden = clip.config.hidden_size
            self.mask_mlp = nn.Sequential(nn.Linear(hidden, width), nn.GELU(), nn.Linear(width, width))
        self.box_proj = nn.Linear(4 * 2 * bands if box == "fourier" else 4, width)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.clip is not None:
            self.clip.eval()  # frozen
        return self

    def crops(self, image: torch.Tensor, masks: torch.Tensor, boxes: torch.Tensor | None = None) -> torch.Tensor:
        """(n, 3, C, C) CLIP inputs of n masks (n, S, S) bool on one SAM-frame image (3, S, S): the
        image blacked out outside each mask, cropped to the mask's box and padded square with black
        at the bottom and right, then resized to CLIP's input (authors' code, train.py
        get_bitmask_bbox_encode: the crop is pasted into a zero max(h, w) square, which the CLIP
        processor then resizes). A square region from the box's corner does the same in one
        roi_align call: everything in it outside the mask, or outside the image, is black."""
        size = self.size
        rgb = (
            image.float() * torch.tensor(SAM_STD, device=image.device)[:, None, None]
            + torch.tensor(SAM_MEAN, device=image.device)[:, None, None]
        )
        blacked = (rgb[None] / 255) * masks[:, None].float()
        boxes = mask_boxes(masks) if boxes is None else boxes
        side = (boxes[:, 2:] - boxes[:, :2]).amax(1, keepdim=True)
        square = torch.cat([boxes[:, :2], boxes[:, :2] + side], 1)
        from torchvision.ops import roi_align

        rois = torch.cat([torch.arange(len(masks), device=image.device, dtype=torch.float)[:, None], square], 1)
        crops = roi_align(blacked, rois, output_size=(size, size), spatial_scale=1.0, sampling_ratio=2, aligned=True)
        mean = torch.tensor(CLIP_MEAN, device=image.device)[:, None, None]
        return (crops - mean) / torch.tensor(CLIP_STD, device=image.device)[:, None, None]

    def forward(self, image: torch.Tensor, masks: torch.Tensor, embed=None) -> torch.Tensor:
        """(n, 2, width) memory of n masks (n, S, S) bool on one SAM-frame image (3, S, S)."""
        boxes = mask_boxes(masks)
        crops = self.crops(image, masks, boxes)
        if self.clip is None:
            mask = embed(crops).float()
        else:
            with torch.no_grad():
                pooled = self.clip(pixel_values=crops.to(self.clip.dtype)).pooler_output
            mask = self.mask_mlp(pooled.float())
        coords = box_coords(boxes, masks.shape[-1])
        box = self.box_proj(fourier(coords, self.bands) if self.bands else coords)
        return torch.stack([mask, box], 1)
