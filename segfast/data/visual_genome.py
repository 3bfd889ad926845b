"""Visual Genome relationships for SegLLM's interactional conversations (segfast.data.multiround).

Layout (local paths; the official v1.4 download from the Visual Genome site):
  <root>/relationships.json   [{"image_id", "relationships": [{"predicate", "subject": {"object_id",
                              "x", "y", "w", "h", "name" | "names": [..]}, "object": {...}}]}]
  <root>/image_data.json      [{"image_id", "width", "height", "url": ".../VG_100K/<id>.jpg"}]
  <root>/VG_100K/, <root>/VG_100K_2/   the images (the folder named in each url)
  masks                       a JSON {"<object_id>": COCO RLE} of instance masks. Visual Genome has
                              only boxes; SegLLM made masks with SAM (§A.5.2) and released them as
                              annotations_folder/visual_genome/vg_masks_train_new.json; convert those
                              (or prompt SAM with the boxes) to this form.

Relationships whose subject and object are the same box, or whose object has no mask, are
skipped. Without masks, box_masks=True uses the boxes themselves (a departure from the paper).
"""

import json
from collections import defaultdict
from pathlib import Path

from segfast.data.layout import Index, Layout, Need, declare


def _name(obj: dict) -> str:
    return (obj.get("name") or (obj.get("names") or ["object"])[0]).strip().lower()


def _box(obj: dict) -> tuple:
    return (obj["x"], obj["y"], obj["x"] + obj["w"], obj["y"] + obj["h"])


def read_visual_genome(root: Path, masks: str = "", box_masks: bool = False) -> list:
    """[(image path, height, width, [(subject, predicate, object)])], each subject/object an
    instance dict of segfast.data.instances (segmentation: an RLE, or the box with box_masks)."""
    for name in ("relationships.json", "image_data.json"):
        if not (root / name).is_file():
            raise FileNotFoundError(f"root: no Visual Genome {root / name}")
    if not masks and not box_masks:
        raise ValueError("masks: a JSON of SAM masks per object id is required (or box_masks=true)")
    rles = json.loads(Path(masks).read_text()) if masks else {}
    images = {i["image_id"]: i for i in json.loads((root / "image_data.json").read_text())}
    out = defaultdict(list)

    def instance(obj: dict):
        key = str(obj["object_id"])
        if key not in rles and not box_masks:
            return None
        x0, y0, x1, y1 = _box(obj)
        seg = rles[key] if key in rles else [[x0, y0, x1, y0, x1, y1, x0, y1]]
        return {
            "id": obj["object_id"],
            "category": _name(obj),
            "captions": [_name(obj)],
            "box": _box(obj),
            "segmentation": seg,
            "parent": None,
            "interactions": [],
            "instance": obj["object_id"],
        }

    for entry in json.loads((root / "relationships.json").read_text()):
        for rel in entry["relationships"]:
            subject, obj = instance(rel["subject"]), instance(rel["object"])
            if subject is None or obj is None or subject["box"] == obj["box"]:
                continue
            out[entry["image_id"]].append((subject, rel["predicate"].strip().lower(), obj))
    result = []
    for image_id, relations in out.items():
        info = images[image_id]
        folder, name = info["url"].split("/")[-2:]
        result.append((root / folder / name, info["height"], info["width"], relations))
    return result


# The layout this reader expects (segfast.data.layout: `segfast data check`, docs/data.md).
def _vg_index(root: Path, split: str, options: dict) -> Index:
    images = read_visual_genome(root, str(root / options["masks"]))
    counts = {"images with relationships": len(images), "relationships": sum(len(r) for *_, r in images)}
    return Index(counts, tuple(str(path) for path, *_ in images))


declare(
    Layout(
        name="visual-genome",
        title="Visual Genome v1.4 relationships with SAM masks (SegLLM's interactional conversations)",
        download=(
            "https://homes.cs.washington.edu/~ranjay/visualgenome/api.html (relationships.json, image_data.json, "
            "VG_100K, VG_100K_2); masks: SegLLM's annotations_folder/visual_genome/vg_masks_train_new.json "
            "(https://huggingface.co/datasets/Marlo-Z/SegLLM_dataset), as {object id: COCO RLE}"
        ),
        readers={"multiround": {"format": "vg", "masks": "<root>/{masks}"}},
        needs=(
            Need("relationships.json", "the relationships (subject, predicate, object with boxes)"),
            Need("image_data.json", "each image's size and url (its folder: VG_100K or VG_100K_2)"),
            Need("{masks}", "a JSON {object id: COCO RLE} of the objects' masks"),
            Need("VG_100K/", "the images (part 1)"),
            Need("VG_100K_2/", "the images (part 2)", required=False),
        ),
        options={"masks": "vg_masks.json"},
        index=_vg_index,
        notes="The reader takes masks as a path of its own; without masks, box_masks=true uses the boxes "
        "(a departure from the paper).",
    ),
)
