"""llafs-captions: image-caption pairs for LLaFS's stage 1 (§4.1: the Q-Former and the
fully-connected layer trained BLIP-2's way with the LLM frozen, COCO left out).

Layout: LAVIS's caption annotations (the format BLIP-2's CC3M / CC12M / SBU / LAION builders
read), a JSON list of {"image": path relative to `root`, "caption": text or [texts]}:

    root/<images...>
    annotations.json        [{"image": "cc3m/000001.jpg", "caption": "a dog on a beach"}, ...]

A sample is {"image": (3, size, size) float in [0, 1] (resized, bilinear with antialiasing),
"caption": one caption, drawn anew every epoch when an image has several}.
"""

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from segfast.data.rng import EpochChoices
from segfast.frames import read_rgb
from segfast.registry import dataset


@dataset("llafs-captions")
class CaptionPairs(EpochChoices, Dataset):
    def __init__(self, root, annotations: str, size: int = 384, seed: int = 0, split: str = "train"):
        self.root, self.size, self.seed, self.split = Path(root), size, seed, split
        path = Path(annotations) if Path(annotations).is_absolute() else self.root / annotations
        if not path.exists():
            raise FileNotFoundError(f"data.options.annotations: {path} not found (see segfast.data.llafs_captions)")
        self.items = json.loads(path.read_text())
        for i, item in enumerate(self.items):
            if not isinstance(item, dict) or "image" not in item or "caption" not in item:
                raise ValueError(f"{path}: entry {i} is not {{'image': ..., 'caption': ...}}: {item!r}")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        item = self.items[index]
        captions = [item["caption"]] if isinstance(item["caption"], str) else list(item["caption"])
        rgb = torch.from_numpy(read_rgb(self.root / item["image"])).permute(2, 0, 1)[None].float() / 255
        image = F.interpolate(rgb, size=(self.size,) * 2, mode="bilinear", align_corners=False, antialias=True)[0]
        return {"image": image.clamp(0, 1), "caption": self.rng(index).choice(captions)}
