"""What one inference call returns: masks at the image's own size, the model's answer, and the ways
to look at and keep them (overlay, COCO RLE, files)."""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass
class Prediction:
    """masks (N, H, W) bool at the image's size, one per predicted target in answer order; text the
    model's answer; labels the class name of each mask when the system names them (LaSagnA with
    classes), else None; image the (H, W, 3) uint8 RGB input; query what was asked."""

    masks: torch.Tensor
    text: str
    image: np.ndarray
    query: str = ""
    labels: list | None = None

    def __post_init__(self):
        h, w = self.image.shape[:2]
        if self.masks.dtype != torch.bool or self.masks.ndim != 3 or tuple(self.masks.shape[1:]) != (h, w):
            raise ValueError(f"masks must be (N, {h}, {w}) bool, got {tuple(self.masks.shape)} {self.masks.dtype}")
        if self.labels is not None and len(self.labels) != len(self.masks):
            raise ValueError(f"labels: {len(self.labels)} names for {len(self.masks)} masks")

    def overlay(self, alpha: float = 0.5):
        """The image with every mask tinted in its own colour and outlined (a PIL.Image)."""
        from PIL import Image

        from segfast.viz import overlay_masks

        return Image.fromarray(overlay_masks(self.image, self.masks, alpha))

    def rles(self) -> list:
        """One compressed COCO RLE dict per mask ({"size": [H, W], "counts": str}; pycocotools
        decodes it)."""
        from segfast.ops import rle_encode

        return rle_encode(self.masks.cpu().contiguous()) if len(self.masks) else []

    def to_json(self) -> dict:
        return {
            "query": self.query,
            "text": self.text,
            "labels": self.labels,
            "height": int(self.image.shape[0]),
            "width": int(self.image.shape[1]),
            "masks": self.rles(),
        }

    def save(self, out_dir, stem: str) -> dict:
        """Writes <stem>_mask{i}.png (0/255 per mask), <stem>.json (RLEs, labels, text, query) and
        <stem>_overlay.png into out_dir; returns {"masks": [...], "json": ..., "overlay": ...}."""
        from PIL import Image

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        masks = []
        for i, mask in enumerate(self.masks.cpu().numpy()):
            masks.append(out / f"{stem}_mask{i}.png")
            Image.fromarray(mask.astype(np.uint8) * 255).save(masks[-1])
        record = out / f"{stem}.json"
        record.write_text(json.dumps(self.to_json(), indent=1))
        overlay = out / f"{stem}_overlay.png"
        self.overlay().save(overlay)
        return {"masks": masks, "json": record, "overlay": overlay}
