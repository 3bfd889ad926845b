"""OpenImages V6 instance masks read as semantic classes (LaSagnA's third semantic-segmentation source).

Layout (the official release, https://storage.googleapis.com/openimages/web/download_v6.html):
  <root>/<split>-annotations-object-segmentation.csv   MaskPath, ImageID, LabelName (a MID), ...
  <root>/<split>-masks/<MaskPath>                        the masks (the per-letter zips extracted)
  <root>/<split>/<ImageID>.jpg                           the images
  <root>/oidv6-class-descriptions.csv (LabelName,DisplayName) or class-descriptions-boxable.csv
                                                         (no header): MID -> name
split: train, validation or test (the engine's "eval" reads validation). The class list is every
MID with a mask in the split, named lower-case as LaSagnA names them; an image's classes are
those with at least one mask, each the union of its masks (resized to the image, nearest, as
LaSagnA does for masks stored at another size).
"""

import csv
from collections import defaultdict
from pathlib import Path

import numpy as np

from segfast.data.layout import Index, Layout, Need, declare, image_size


def _class_names(root: Path) -> dict:
    for name, header in (("oidv6-class-descriptions.csv", True), ("class-descriptions-boxable.csv", False)):
        path = root / name
        if path.is_file():
            with open(path, newline="") as f:
                rows = list(csv.reader(f))
            return {mid: label for mid, label in (rows[1:] if header else rows)}
    raise FileNotFoundError(f"root: no oidv6-class-descriptions.csv or class-descriptions-boxable.csv under {root}")


def read_openimages(root, split: str) -> tuple[list, list]:
    """([(image path, {class index: [mask paths]})], class names)."""
    if not root:
        raise ValueError("root is required for format='openimages'")
    root = Path(root)
    split = "validation" if split == "eval" else split
    table = root / f"{split}-annotations-object-segmentation.csv"
    if not table.is_file():
        raise FileNotFoundError(f"root: no {table} (OpenImages V6 segmentation annotations)")
    names = _class_names(root)
    masks = defaultdict(lambda: defaultdict(list))
    with open(table, newline="") as f:
        for row in csv.DictReader(f):
            masks[row["ImageID"]][row["LabelName"]].append(root / f"{split}-masks" / row["MaskPath"])
    unknown = sorted({mid for per in masks.values() for mid in per if mid not in names})
    if unknown:
        raise ValueError(f"root: {len(unknown)} classes have no name in the class descriptions, e.g. {unknown[0]}")
    mids = sorted({mid for per in masks.values() for mid in per})
    index = {mid: i for i, mid in enumerate(mids)}
    items = [
        (root / split / f"{image_id}.jpg", {index[mid]: paths for mid, paths in per.items()})
        for image_id, per in sorted(masks.items())
    ]
    return items, [names[mid].lower() for mid in mids]


def load_class_masks(paths: list, height: int, width: int) -> np.ndarray:
    """(H, W) bool union of one class's masks, each resized to the image (nearest)."""
    from PIL import Image

    out = np.zeros((height, width), bool)
    for path in paths:
        with Image.open(path) as im:
            if im.size != (width, height):
                im = im.resize((width, height), Image.NEAREST)
            out |= np.asarray(im) > 0
    return out


# The layout this reader expects (segfast.data.layout: `segfast data check`, docs/data.md).
def _openimages_index(root: Path, split: str, options: dict) -> Index:
    items, classes = read_openimages(root, split)
    masks = [p for _, per in items for paths in per.values() for p in paths]
    counts = {"images with masks": len(items), "masks": len(masks), "classes": len(classes)}
    return Index(counts, tuple(str(p) for p in [image for image, _ in items] + masks))


declare(
    Layout(
        name="openimages",
        title="OpenImages V6 instance masks (a LaSagnA training source)",
        download="https://storage.googleapis.com/openimages/web/download_v6.html (segmentation masks and annotations)",
        readers={"semantic-queries": {"format": "openimages"}},
        needs=(
            Need(
                "oidv6-class-descriptions.csv|class-descriptions-boxable.csv", "the class names (MID -> display name)"
            ),
            Need("{split}-annotations-object-segmentation.csv", "the mask table (MaskPath, ImageID, LabelName)"),
            Need("{split}-masks/", "the masks the table names (the per-letter zips extracted)"),
            Need("{split}", "the images", files="*.jpg", sample=image_size),
        ),
        splits={s: s for s in ("train", "validation", "test")},
        index=_openimages_index,
        published={"train": {"masks": 2686666}, "validation": {"masks": 24730}, "test": {"masks": 74102}},
        source="the OpenImages V6 page: 2,686,666 train, 24,730 validation and 74,102 test masks",
    ),
)
