"""Semantic segmentation in LaSagnA's complex-query format (segfast.text.lasagna): one conversation
per image that names a class list, answered {name}<SEG> (present, one mask) or {name}<NEG>.

Layouts: the label maps of segfast.data.label_maps (ade20k, cocostuff, mapillary, cityscapes,
pascal-context-59, pascal-context-459, pascal-voc-20); openimages (segfast.data.openimages:
per-class instance masks, a training source only); synthetic (generated boxes whose colours
are the classes, the built-in default).

Training: the class list, its order, the answer's order and nothing else are drawn anew every
time the image is used (segfast.data.rng: every epoch, and every draw of a mixture), with the
strategies of segfast.text.lasagna.build (random_class_list, sampling, num_classes,
sequence_augmentation, order_consistency).

Samples: as segfast.data.conversations (conversations, masks, original_masks: one per <SEG> in
answer order). Evaluation samples also carry what the benchmark scores: original_label (H, W)
long, the label map at the image's resolution (255 = ignored), classes (this sample's own class
list: the dataset's names, None for unused indices) and label_space (the format: one mIoU per
label space).
"""

import numpy as np
import torch

from segfast.data.conversations import sample
from segfast.data.label_maps import FORMATS as LABEL_MAPS
from segfast.data.label_maps import IGNORE, read_label_maps
from segfast.data.openimages import load_class_masks, read_openimages
from segfast.data.rng import EpochChoices, content_rng
from segfast.data.scenes import synthetic_label_map
from segfast.frames import read_rgb
from segfast.registry import dataset
from segfast.text.lasagna import SAMPLINGS, build
from segfast.text.synthetic import OBJECT_COLOURS

FORMATS = (*LABEL_MAPS, "openimages", "synthetic")


@dataset("semantic-queries")
class SemanticQueries(EpochChoices, torch.utils.data.Dataset):
    def __init__(
        self,
        format: str = "synthetic",
        root: str = "",
        split: str = "train",
        image_size: int = 64,
        clip_size: int = 32,
        num_classes: int = 80,
        random_class_list: bool = True,
        sampling: str = "paper",
        sequence_augmentation: bool = True,
        order_consistency: bool = True,
        seed: int = 0,
        length: int = 256,
    ):
        if format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
        if sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}")
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.format, self.split, self.seed = format, split, seed
        self.size, self.clip_size = int(image_size), int(clip_size)
        self.strategy = dict(
            num_classes=int(num_classes),
            random_class_list=bool(random_class_list),
            sampling=sampling,
            sequence_augmentation=bool(sequence_augmentation),
            order_consistency=bool(order_consistency),
        )
        if format == "synthetic":
            self.items, self.classes = list(range(int(length))), list(OBJECT_COLOURS)
        elif format == "openimages":
            if split == "eval":
                raise ValueError("format='openimages' has instance masks, no label maps to score: a training source")
            self.items, self.classes = read_openimages(root, split)
        else:
            self.maps = read_label_maps(format, root, split)
            self.items, self.classes = self.maps.pairs, self.maps.classes
        if not self.items:
            raise ValueError(f"no {format} images for split {split!r} under {root}")

    def __len__(self):
        return len(self.items)

    def _read(self, i: int) -> tuple:
        """(image, label map or None, {class: mask (H, W)})."""
        if self.format == "synthetic":
            image, label, _ = synthetic_label_map(content_rng(self.seed, self.split, i))
        elif self.format == "openimages":
            path, per_class = self.items[i]
            image = read_rgb(path)
            h, w = image.shape[:2]
            return image, None, {c: load_class_masks(paths, h, w) for c, paths in per_class.items()}
        else:
            image_path, label_path = self.items[i]
            image, label = read_rgb(image_path), self.maps.load(label_path)
        present = [int(c) for c in np.unique(label) if c != IGNORE and c < len(self.classes)]
        return image, label, {c: label == c for c in present}

    def __getitem__(self, i: int) -> dict:
        image, label, masks = self._read(i)
        question, answer, targets = build(list(masks), self.classes, self.rng(i), **self.strategy)
        stacked = (
            torch.from_numpy(np.stack([masks[c] for c in targets]))
            if targets
            else torch.zeros(0, *image.shape[:2], dtype=torch.bool)
        )
        out = sample(image, [[{"question": question, "answer": answer}]], stacked, self.size, self.clip_size)
        if self.split == "eval":
            out.update(original_label=torch.from_numpy(label), classes=list(self.classes), label_space=self.format)
        return out
