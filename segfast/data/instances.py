"""Instance annotations as SegLLM's conversation builders read them (segfast.data.multiround).

An instance is {"id", "category", "captions" (how a question names it), "box" (x0, y0, x1, y1),
"segmentation" (COCO polygons or RLE), "parent" (the id of the whole a part belongs to, or
None), "interactions" [(verb, object id)], "instance" (the object it shows: RefCOCO gives one
object several captions)}; masks are rasterized when a conversation uses them (instance_mask).

Layouts (local paths):
  coco        a COCO instances JSON (images, annotations, categories; crowd annotations skipped)
              and its image folder; optional annotation fields parent_id (a part's whole) and
              interactions [{"verb", "object_id"}]. LVIS v1 (lvis_v1_train.json) has this layout;
              its images' coco_url names the COCO file when file_name is absent.
  paco        PACO-LVIS (paco_lvis_v1_{train,val}.json): COCO-style, every annotation with
              obj_ann_id (its own id for an object, the object's for a part) and part
              categories named "object:part"; file_name is relative to the image root
              (train2017/...). PASCAL-Panoptic-Parts has its own reader (segfast.data.panoptic_parts).
  refer       refCOCO/+/g: <root>/<dataset>/refs(<split_by>).p and instances.json (the refer
              toolkit layout), images <root>/images/train2014/<file_name>; one caption per
              sentence of a ref (sent.strip().lower(), as LISA reads them).
"""

import json
import pickle
from collections import defaultdict
from pathlib import Path

import torch

from segfast.data.coco_masks import segmentation_mask
from segfast.data.layout import Index, Layout, Need, declare


def _load(path: Path, what: str) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"annotations: no {what} file {path}")
    return json.loads(path.read_text())


def _box(bbox) -> tuple:
    x, y, w, h = bbox
    return (x, y, x + w, y + h)


def _image_name(info: dict) -> str:
    if "file_name" in info:
        return info["file_name"]
    return "/".join(info["coco_url"].split("/")[-2:])  # LVIS: .../train2017/000000xxxx.jpg


def read_coco(root: Path, annotations: str, images: str) -> list:
    """[(image path, height, width, [instance])] of a COCO-style instances file (also LVIS, and
    PACO-LVIS whose obj_ann_id links parts to their objects)."""
    data = _load(root / annotations, "COCO instances")
    names = {c["id"]: c["name"] for c in data["categories"]}
    per_image = defaultdict(list)
    for a in data["annotations"]:
        if a.get("iscrowd", 0):
            continue
        name, parent = names[a["category_id"]], a.get("parent_id")
        if "obj_ann_id" in a and a["obj_ann_id"] != a["id"]:  # PACO: a part of annotation obj_ann_id
            parent, name = a["obj_ann_id"], name.split(":", 1)[-1]
        elif ":" in name:  # PACO's object categories are plain; a part without its object is skipped
            continue
        per_image[a["image_id"]].append(
            {
                "id": a["id"],
                "category": name.replace("_", " "),
                "captions": [name.replace("_", " ")],
                "box": _box(a["bbox"]),
                "segmentation": a["segmentation"],
                "parent": parent,
                "interactions": [(i["verb"], i["object_id"]) for i in a.get("interactions", [])],
                "instance": a["id"],
            }
        )
    return [
        (root / images / _image_name(info), info["height"], info["width"], per_image[info["id"]])
        for info in data["images"]
        if per_image[info["id"]]
    ]


def read_refer(root: Path, dataset: str, split_by: str, split: str) -> list:
    """[(image path, height, width, [instance per sentence])] of one refer split."""
    refs_path = root / dataset / f"refs({split_by}).p"
    if not refs_path.is_file():
        raise FileNotFoundError(f"root: missing {refs_path} (refer toolkit layout)")
    with open(refs_path, "rb") as f:
        refs = pickle.load(f)
    inst = _load(root / dataset / "instances.json", "refer instances")
    anns = {a["id"]: a for a in inst["annotations"]}
    images = {i["id"]: i for i in inst["images"]}
    names = {c["id"]: c["name"] for c in inst.get("categories", [])}
    per_image = defaultdict(list)
    for ref in refs:
        if ref["split"] != split:
            continue
        a = anns[ref["ann_id"]]
        for k, s in enumerate(ref["sentences"]):
            per_image[ref["image_id"]].append(
                {
                    "id": (ref["ann_id"], k),
                    "category": names.get(a.get("category_id"), "object"),
                    "captions": [s["sent"].strip().lower()],
                    "box": _box(a["bbox"]),
                    "segmentation": a["segmentation"],
                    "parent": None,
                    "interactions": [],
                    "instance": ref["ann_id"],
                }
            )
    out = []
    for image_id, instances in per_image.items():
        info = images[image_id]
        path = root / "images" / "train2014" / info["file_name"]
        out.append((path, info.get("height"), info.get("width"), instances))
    return out


def instance_mask(instance: dict, height: int, width: int) -> torch.Tensor:
    """(H, W) bool mask of an instance: its "mask" (generated scenes) or its segmentation
    rasterized (each time: a dataset does not keep a million masks in memory)."""
    if "mask" in instance:
        return torch.as_tensor(instance["mask"])
    return segmentation_mask(instance["segmentation"], height, width)


# The layouts read_coco reads (segfast.data.layout: `segfast data check`, docs/data.md).
def _coco_index(root: Path, split: str, options: dict) -> Index:
    items = read_coco(root, options["annotations"], options["images"])
    counts = {"annotated images": len(items), "instances": sum(len(insts) for *_, insts in items)}
    return Index(counts, tuple(str(path) for path, *_ in items))


def _coco_layout(name, title, download, format, annotations, images, what, notes="") -> Layout:
    return Layout(
        name=name,
        title=title,
        download=download,
        readers={"multiround": {"format": format, "annotations": "{annotations}", "images": "{images}"}},
        needs=(Need("{annotations}", what), Need("{images}/", "the images the annotations name")),
        options={"annotations": annotations, "images": images},
        index=_coco_index,
        notes=notes,
    )


declare(
    _coco_layout(
        "coco-instances",
        "COCO-format instance annotations (SegLLM's positional conversations)",
        "https://cocodataset.org/#download, or any COCO-format instances file",
        "coco",
        "annotations/instances_train2017.json",
        "train2017",
        "a COCO instances JSON; optional parent_id and interactions fields",
    ),
    _coco_layout(
        "lvis",
        "LVIS v1 (SegLLM's positional conversations)",
        "https://www.lvisdataset.org/dataset (lvis_v1_train.json); images: COCO 2017",
        "lvis",
        "lvis_v1_train.json",
        ".",
        "the LVIS instances JSON (an image's coco_url names its COCO file)",
        notes="images is the folder holding train2017/ and val2017/ (LVIS names its images by coco_url).",
    ),
)
