"""Object-part annotations LISA trains on (utils/sem_seg_dataset.py: init_paco_lvis, init_pascal_part),
COCO-format json read without pycocotools' COCO class.

Layouts (local paths, as LISA's README arranges them):
  paco_lvis    <root>/annotations/paco_lvis_v1_train.json (PACO, https://github.com/facebookresearch/paco),
               images under `images` (the COCO root: file_name is "train2017/<id>.jpg")
  pascal_part  <root>/train.json (PASCAL-Part in COCO format, as VLPart's preparation writes it),
               images under <root>/VOCdevkit/VOC2010/JPEGImages/<file_name>
Category names are "object:part" (an object alone for PACO's whole objects); "_(" suffixes
("car_(automobile)") are cut as LISA cuts them. Segmentations are polygons or RLE.
"""

import json
from collections import defaultdict
from pathlib import Path

from segfast.data.layout import Index, Layout, Need, declare, image_size

FORMATS = ("paco_lvis", "pascal_part")


def category_name(name: str, format: str):
    """An object name, or an (object, part) pair, as LISA reads the category."""
    parts = name.strip().split(":")
    if len(parts) == 1:
        return parts[0].split("_(")[0]
    if len(parts) != 2:
        raise ValueError(f"{format}: category {name!r} is neither 'object' nor 'object:part'")
    obj, part = parts
    return (obj.split("_(")[0], part.split("_(")[0]) if format == "paco_lvis" else (obj, part)


def read_part_annotations(format: str, root, images: str = "") -> list:
    """[(image path, [(name, segmentation)], (height, width))] per image with annotations."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    if not root:
        raise ValueError(f"root is required for format={format!r}")
    root = Path(root)
    if format == "paco_lvis":
        path = root / "annotations" / "paco_lvis_v1_train.json"
        if not images:
            raise ValueError("images: the COCO root that PACO-LVIS's file names (train2017/...) are relative to")
        image_dir = Path(images)
    else:
        path, image_dir = root / "train.json", root / "VOCdevkit" / "VOC2010" / "JPEGImages"
    if not path.is_file():
        raise FileNotFoundError(f"root: no {path} ({format} layout)")
    data = json.loads(path.read_text())
    names = {c["id"]: category_name(c["name"], format) for c in data["categories"]}
    by_image = defaultdict(list)
    for ann in data["annotations"]:
        by_image[ann["image_id"]].append((names[ann["category_id"]], ann["segmentation"]))
    return [
        (image_dir / info["file_name"], by_image[info["id"]], (int(info["height"]), int(info["width"])))
        for info in data["images"]
        if by_image[info["id"]]
    ]


# The layouts this reader expects (segfast.data.layout: `segfast data check`, docs/data.md).
PACO_LVIS_FILE = "annotations/paco_lvis_v1_train.json"  # where read_part_annotations looks


def _parts_index(format: str):
    def index(root: Path, split: str, options: dict) -> Index:
        images = str(root / options["images"]) if "images" in options else ""
        items = read_part_annotations(format, root, images)
        counts = {"annotated images": len(items), "part annotations": sum(len(anns) for _, anns, _ in items)}
        return Index(counts, tuple(str(path) for path, *_ in items))

    return index


declare(
    Layout(
        name="paco-lvis",
        title="PACO-LVIS (objects and their parts)",
        download="https://github.com/facebookresearch/paco (paco_lvis_v1_train.json); images: COCO 2017",
        readers={
            "sem-seg-conversations": {"format": "paco_lvis", "images": "{images}"},
            "multiround": {"format": "paco", "annotations": PACO_LVIS_FILE, "images": "{images}"},
        },
        needs=(
            Need(
                PACO_LVIS_FILE,
                "the PACO-LVIS annotations (parts named object:part; obj_ann_id links a part to its object)",
            ),
            Need("{images}/", "the COCO folder the file names (train2017/<id>.jpg) are relative to"),
        ),
        options={"images": "coco"},
        index=_parts_index("paco_lvis"),
        notes="sem-seg-conversations takes images as a path of its own (give it absolutely); the check and "
        "multiround take a relative images under the root. multiround builds SegLLM's hierarchical conversations.",
    ),
    Layout(
        name="pascal-part",
        title="PASCAL-Part in COCO format (VLPart's preparation)",
        download=(
            "https://github.com/facebookresearch/VLPart (datasets/pascal_part: train.json); images: PASCAL VOC 2010 "
            "(http://host.robots.ox.ac.uk/pascal/VOC/voc2010/)"
        ),
        readers={"sem-seg-conversations": {"format": "pascal_part"}},
        needs=(
            Need("train.json", "the part annotations (categories object:part)"),
            Need("VOCdevkit/VOC2010/JPEGImages", "the VOC 2010 images", files="*.jpg", sample=image_size),
        ),
        index=_parts_index("pascal_part"),
    ),
)
