"""LISA's semantic-segmentation data (utils/sem_seg_dataset.py): class names asked one per
conversation with LISA's SHORT_QUESTION templates, answered with [SEG].

Layouts: the label maps of segfast.data.label_maps (ade20k, cocostuff, mapillary) and the part
annotations of segfast.data.part_annotations (paco_lvis, pascal_part); synthetic (generated
boxes, the built-in default).

Training, drawn anew every epoch (segfast.data.rng) as LISA draws it on every access: up to
classes_per_image (LISA's num_classes_per_sample, 3) of the classes present in the label map
(COCO-Stuff classes whose name holds "-" are ignored, as LISA ignores them), or of the image's
part annotations (each named "obj part" or "the part of the obj" at even odds), without
replacement; each class is its own conversation and its mask the class's pixels (the
annotation's mask). An image with nothing to ask about is replaced by another drawn at random,
as LISA's __getitem__(0) redraws.

Samples: as segfast.data.conversations (conversations, masks, original_masks).
"""

import numpy as np
import torch

from segfast.data.coco_masks import segmentation_mask
from segfast.data.conversations import sample
from segfast.data.label_maps import IGNORE, read_label_maps
from segfast.data.part_annotations import read_part_annotations
from segfast.data.rng import EpochChoices, content_rng
from segfast.data.scenes import synthetic_label_map
from segfast.frames import read_rgb
from segfast.registry import dataset
from segfast.text.lisa import ask, part_name
from segfast.text.tokens import SEG

LABEL_MAPS, PARTS = ("ade20k", "cocostuff", "mapillary"), ("paco_lvis", "pascal_part")
FORMATS = (*LABEL_MAPS, *PARTS, "synthetic")


@dataset("sem-seg-conversations")
class SemSegConversations(EpochChoices, torch.utils.data.Dataset):
    def __init__(
        self,
        format: str = "synthetic",
        root: str = "",
        images: str = "",
        split: str = "train",
        image_size: int = 64,
        clip_size: int = 32,
        classes_per_image: int = 3,
        seg_token: str = SEG,
        seed: int = 0,
        length: int = 256,
    ):
        if format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
        if classes_per_image < 1:
            raise ValueError(f"classes_per_image must be >= 1, got {classes_per_image}")
        self.format, self.split, self.seed, self.seg_token = format, split, seed, seg_token
        self.size, self.clip_size, self.per_image = int(image_size), int(clip_size), int(classes_per_image)
        if format == "synthetic":
            self.items = list(range(int(length)))
        elif format in PARTS:
            self.items = read_part_annotations(format, root, images)
        else:
            maps = read_label_maps(format, root, split)
            self.items, self.maps = maps.pairs, maps
            # LISA asks no COCO-Stuff class with "-" in its name (their pixels are ignored)
            self.classes = [None if c is None or (format == "cocostuff" and "-" in c) else c for c in maps.classes]
        if not self.items:
            raise ValueError(f"no {format} images with annotations under {root}")

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        rng = self.rng(i)
        for _ in range(len(self)):  # an image with nothing to ask about: another one
            drawn = self._draw(i, rng)
            if drawn is not None:
                image, names, masks = drawn
                conversations = [ask(rng, name=n, seg_token=self.seg_token) for n in names]
                return sample(image, conversations, masks, self.size, self.clip_size)
            i = rng.randrange(len(self))
        raise ValueError(f"no {self.format} image has a class to ask about")

    def _draw(self, i: int, rng):
        """(image, names, masks (n, H, W)) of item i, or None when it has no class to ask about."""
        if self.format in PARTS:
            path, anns, (h, w) = self.items[i]
            chosen = rng.sample(anns, min(self.per_image, len(anns)))
            names = [part_name(rng, *n) if isinstance(n, tuple) else n for n, _ in chosen]
            masks = torch.stack([segmentation_mask(seg, h, w) for _, seg in chosen])
            return read_rgb(path), names, masks
        if self.format == "synthetic":
            image, label, classes = synthetic_label_map(content_rng(self.seed, self.split, i))
        else:
            image_path, label_path = self.items[i]
            image, label, classes = read_rgb(image_path), self.maps.load(label_path), self.classes
        present = [int(c) for c in np.unique(label) if c != IGNORE and c < len(classes) and classes[c] is not None]
        if not present:
            return None
        chosen = rng.sample(present, min(self.per_image, len(present)))
        return image, [classes[c] for c in chosen], torch.from_numpy(np.stack([label == c for c in chosen]))
