"""Semantic segmentation datasets read into LaSagnA's complex-query format.

Layouts (local paths):
  ade20k     <root>/images/{training,validation}/*.jpg, <root>/annotations/{training,validation}/*.png
             (ADEChallengeData2016); class names from <root>/objectInfo150.csv (its Name column,
             first synonym). Label 0 ("other") is ignored and k becomes class k-1, as every
             ADE20K-150 benchmark does.
  cocostuff  <root>/images/{train,val}2017/*.jpg, <root>/stuffthingmaps_trainval2017/{train,val}2017/*.png;
             class names from <root>/labels.txt ("<id>: <name>" lines of the cocostuff repo; label
             value v is id v+1, 255 unlabeled; ids absent from the file are never asked about).
  synthetic  generated boxes whose colours are the classes (the built-in default).
split: train or eval (validation / val2017).

Samples: the frames of segfast.frames, label (S, S) long with 255 = ignore, classes (the
dataset's names), and one conversation built by segfast.text.lasagna.build with its
<SEG> masks.
"""

import csv
from pathlib import Path

import numpy as np
import torch

from segfast.data.layout import Index, Layout, Need, declare, image_size, label_values
from segfast.data.rng import EpochChoices, content_rng
from segfast.data.scenes import synthetic_scene
from segfast.frames import frame_labels, frame_masks, model_inputs, read_rgb
from segfast.registry import dataset
from segfast.text.lasagna import build
from segfast.text.synthetic import OBJECT_COLOURS

IGNORE = 255
FORMATS = ("ade20k", "cocostuff", "synthetic")


def ade20k_classes(root: Path) -> list:
    path = root / "objectInfo150.csv"
    if not path.is_file():
        raise FileNotFoundError(f"root: no {path} (ADEChallengeData2016 ships it)")
    with open(path, newline="") as f:
        return [row["Name"].split(";")[0].strip() for row in csv.DictReader(f)]


def cocostuff_classes(root: Path) -> list:
    path = root / "labels.txt"
    if not path.is_file():
        raise FileNotFoundError(f"root: no {path} (the cocostuff repo's labels.txt)")
    names = {}
    for line in path.read_text().splitlines():
        if ":" in line:
            key, name = line.split(":", 1)
            names[int(key)] = name.strip()
    return [names.get(v + 1) for v in range(max(names))]


def read_semantic(format: str, root: Path, split: str) -> tuple[list, list]:
    """([(image path, label path)], class names)."""
    if format == "ade20k":
        sub, classes = ("training" if split == "train" else "validation"), ade20k_classes(root)
        images, labels = root / "images" / sub, root / "annotations" / sub
    else:
        sub, classes = ("train2017" if split == "train" else "val2017"), cocostuff_classes(root)
        images, labels = root / "images" / sub, root / "stuffthingmaps_trainval2017" / sub
    if not images.is_dir() or not labels.is_dir():
        raise FileNotFoundError(f"root: expected {images} and {labels} ({format} layout)")
    pairs = [(p, labels / (p.stem + ".png")) for p in sorted(images.glob("*.jpg"))]
    missing = [str(lbl) for _, lbl in pairs if not lbl.is_file()]
    if missing:
        raise FileNotFoundError(f"root: {len(missing)} label maps are missing, e.g. {missing[0]}")
    return pairs, classes


def load_label(format: str, path: Path) -> np.ndarray:
    """The label map with classes 0..C-1 and IGNORE."""
    from PIL import Image

    with Image.open(path) as im:
        raw = np.asarray(im).astype(np.int64)
    if format == "ade20k":  # 0 = other -> ignore; k -> k-1
        return np.where(raw == 0, IGNORE, raw - 1)
    return raw


@dataset("semantic-queries")
class SemanticQueries(EpochChoices, torch.utils.data.Dataset):
    """The class list, its order and the question are drawn anew every epoch (segfast.data.rng)."""

    def __init__(
        self,
        format: str = "synthetic",
        root: str = "",
        split: str = "train",
        image_size: int = 64,
        clip_size: int = 32,
        num_classes: int = 10,
        random_class_list: bool = True,
        sequence_augmentation: bool = True,
        order_consistency: bool = True,
        seed: int = 0,
        length: int = 256,
    ):
        if format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
        self.format, self.split, self.seed = format, split, seed
        self.size, self.clip_size = int(image_size), int(clip_size)
        self.strategy = dict(
            num_classes=int(num_classes),
            random_class_list=bool(random_class_list),
            sequence_augmentation=bool(sequence_augmentation),
            order_consistency=bool(order_consistency),
        )
        if format == "synthetic":
            self.items, self.classes = list(range(int(length))), list(OBJECT_COLOURS)
            return
        if not root:
            raise ValueError(f"root is required for format={format!r}")
        self.items, self.classes = read_semantic(format, Path(root), split)
        if not self.items:
            raise ValueError(f"no {format} images for split {split!r} under {root}")

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        if self.format == "synthetic":
            image, instances = synthetic_scene(content_rng(self.seed, self.split, i), parts=False)
            label = np.full(image.shape[:2], IGNORE, np.int64)
            for inst in instances:
                if inst["parent"] is None:
                    label[inst["mask"]] = self.classes.index(inst["category"].split()[0])
        else:
            image_path, label_path = self.items[i]
            image = read_rgb(image_path)
            label = load_label(self.format, label_path)
        present = [int(c) for c in np.unique(label) if c != IGNORE and c < len(self.classes)]
        question, answer, targets = build(present, self.classes, self.rng(i), **self.strategy)
        masks = (
            torch.from_numpy(np.stack([label == c for c in targets]))
            if targets
            else torch.zeros(0, *label.shape, dtype=torch.bool)
        )
        return {
            **model_inputs(image, self.size, self.clip_size),
            "label": frame_labels(label, self.size),
            "classes": self.classes,
            "conversation": [{"question": question, "answer": answer}],
            "masks": frame_masks(masks, self.size),
        }


def _pairs_index(format: str, train: str):
    """The reader's pairs of a split (`train`: the folder word of the training split)."""

    def index(root: Path, split: str, options: dict) -> Index:
        pairs, _ = read_semantic(format, root, "train" if split == train else "eval")
        return Index({"image and label map pairs": len(pairs)})

    return index


def _classes(read):
    return lambda path: f"{sum(n is not None for n in read(Path(path).parent))} class names"


# The layouts these readers expect (segfast.data.layout: `segfast data check`, docs/data.md).
declare(
    Layout(
        name="ade20k",
        title="ADE20K (ADEChallengeData2016, SceneParsing 150 classes)",
        download="http://sceneparsing.csail.mit.edu (ADEChallengeData2016.zip)",
        readers={"semantic-queries": {"format": "ade20k"}},
        needs=(
            Need("objectInfo150.csv", "the class names (Name column)", sample=_classes(ade20k_classes)),
            Need("images/{split}", "the images", files="*.jpg", sample=image_size),
            Need(
                "annotations/{split}",
                "a label map <name>.png per image (0 other, 1-150)",
                files="*.png",
                sample=label_values(150, ignore=()),
            ),
        ),
        splits={"training": "training", "validation": "validation"},
        index=_pairs_index("ade20k", "training"),
        published={
            "training": {"images/{split}": 20210, "annotations/{split}": 20210},
            "validation": {"images/{split}": 2000, "annotations/{split}": 2000},
        },
        source="the SceneParsing benchmark page: 20,210 training and 2,000 validation images",
    ),
    Layout(
        name="cocostuff",
        title="COCO-Stuff 164k (171 classes)",
        download=(
            "https://github.com/nightrome/cocostuff (stuffthingmaps_trainval2017.zip and labels.txt); "
            "images: COCO 2017 train/val (https://cocodataset.org/#download)"
        ),
        readers={"semantic-queries": {"format": "cocostuff"}},
        needs=(
            Need("labels.txt", "the cocostuff repo's '<id>: <name>' class list", sample=_classes(cocostuff_classes)),
            Need("images/{split}", "the COCO images", files="*.jpg", sample=image_size),
            Need(
                "stuffthingmaps_trainval2017/{split}",
                "a label map <name>.png per image (0-181, 255 unlabeled)",
                files="*.png",
                sample=label_values(181),
            ),
        ),
        splits={"train2017": "train2017", "val2017": "val2017"},
        index=_pairs_index("cocostuff", "train2017"),
        published={
            "train2017": {"images/{split}": 118287, "stuffthingmaps_trainval2017/{split}": 118287},
            "val2017": {"images/{split}": 5000, "stuffthingmaps_trainval2017/{split}": 5000},
        },
        source="COCO 2017 (cocodataset.org): 118,287 train and 5,000 val images, each with a stuffthingmap",
    ),
)
