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

from segfast.data.layout import Index, Layout, Need, declare
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


# The layout this reader expects (segfast.data.layout: `segfast data check`, docs/data.md).
def _captions_index(root: Path, split: str, options: dict) -> Index:
    items = CaptionPairs(root, options["annotations"]).items
    captions = sum(1 if isinstance(item["caption"], str) else len(item["caption"]) for item in items)
    return Index({"images": len(items), "captions": captions}, tuple(sorted({str(root / i["image"]) for i in items})))


declare(
    Layout(
        name="llafs-captions",
        title="Image-caption pairs in LAVIS's format (LLaFS stage 1: CC3M, CC12M, SBU, LAION)",
        download="the BLIP-2 caption sets as LAVIS's dataset builders download them (https://github.com/salesforce/LAVIS)",
        readers={"llafs-captions": {"annotations": "{annotations}"}},
        needs=(Need("{annotations}", 'a JSON list of {"image": path under the root, "caption": text or [texts]}'),),
        options={"annotations": "annotations.json"},
        index=_captions_index,
        notes="The images are wherever the entries say, relative to the root; the check opens the ones they name.",
    ),
)
