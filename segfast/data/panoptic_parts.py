"""PASCAL-Panoptic-Parts objects and their parts for SegLLM's hierarchical conversations
(segfast.data.multiround, format pascal_part; §A.5.2 "Pascal Panoptic Part").

Layout (the official release, linked from github.com/pmeletis/panoptic_parts; images from PASCAL
VOC 2010):
  <root>/labels/{training,validation}/<image id>.tif   one int32 label per pixel, the universal id
                      uid: sid (<= 99), sid_iid (sid * 10^3 + iid) or sid_iid_pid
                      (sid * 10^5 + iid * 10^2 + pid): scene class, instance, part (0: unlabelled)
  <root>/<spec>       the dataset spec (ppp_datasetspec.yaml of the panoptic_parts repo):
                      scene_class2part_classes, an ordered mapping whose order gives the ids (sid
                      and pid count from 1), and countable_pids_groupings {class: {part: [raw pids]}}
                      for the parts whose raw pids count instances (an aeroplane's engines)
  <images>/<image id>.jpg   VOC2010 JPEGImages

As the paper says, only instance-level objects are used (a class without instance ids is left
out), each object with the parts labelled on it.
"""

from pathlib import Path

import numpy as np
import yaml

from segfast.data.layout import Index, Layout, Need, declare

SPLITS = {"train": "training", "eval": "validation"}


def read_spec(path: Path) -> tuple[dict, dict]:
    """(sid -> class name, (sid, raw pid) -> part name) of a panoptic-parts dataset spec."""
    if not path.is_file():
        raise FileNotFoundError(f"annotations: no panoptic-parts dataset spec {path}")
    spec = yaml.safe_load(path.read_text())
    if not isinstance(spec, dict) or not isinstance(spec.get("scene_class2part_classes"), dict):
        raise ValueError(f"annotations: {path} has no scene_class2part_classes mapping")
    groups = spec.get("countable_pids_groupings") or {}
    classes, parts = {}, {}
    for sid, (name, names) in enumerate(spec["scene_class2part_classes"].items(), 1):
        classes[sid] = str(name)
        for pid, part in enumerate(names or [], 1):
            for raw in groups.get(name, {}).get(part, [pid]):
                parts[sid, int(raw)] = str(part)
    return classes, parts


def read_panoptic_parts(root: Path, images: str, split: str) -> list:
    """[(image path, label path)] of one split ("train" or "eval"), the images with a labelled
    part of an object (each label read once here, so no item fails to make a conversation)."""
    from PIL import Image

    labels = root / "labels" / SPLITS[split]
    if not labels.is_dir():
        raise FileNotFoundError(f"root: no {labels} (PASCAL-Panoptic-Parts layout)")
    return [
        (root / images / f"{p.stem}.jpg", p)
        for p in sorted(labels.glob("*.tif"))
        if (np.asarray(Image.open(p)) >= 100_000).any()
    ]


def decode_uids(uids: np.ndarray) -> tuple:
    """(sid, iid, pid) per pixel of a uid map; -1 where a level is absent."""
    uids = uids.astype(np.int64)
    sid = np.where(uids <= 99, uids, np.where(uids <= 99_999, uids // 1000, uids // 100_000))
    iid = np.where(uids <= 99, -1, np.where(uids <= 99_999, uids % 1000, (uids // 100) % 1000))
    pid = np.where(uids <= 99_999, -1, uids % 100)
    return sid, iid, pid


def object_instances(label_path: Path, classes: dict, parts: dict) -> list:
    """Instance dicts (segfast.data.instances, with "mask") of the objects that have labelled
    parts, each followed by its parts (parent: the object's id)."""
    from PIL import Image

    sid, iid, pid = decode_uids(np.asarray(Image.open(label_path)))
    out = []
    for s, i in sorted({(int(s), int(i)) for s, i in zip(sid[iid >= 0], iid[iid >= 0])}):
        whole = (sid == s) & (iid == i)
        named = [(p, parts[s, p]) for p in np.unique(pid[whole]).tolist() if (s, p) in parts]
        if s not in classes or not named:
            continue
        oid = len(out)
        out.append(_instance(oid, classes[s], whole, None))
        by_name = {}
        for p, name in named:  # grouped raw pids (one class's engines) make one part
            by_name[name] = by_name.get(name, False) | (whole & (pid == p))
        out += [_instance(len(out) + k, name, m, oid) for k, (name, m) in enumerate(by_name.items())]
    return out


def _instance(id: int, name: str, mask: np.ndarray, parent) -> dict:
    ys, xs = np.nonzero(mask)
    return {
        "id": id,
        "category": name,
        "captions": [name],
        "box": (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1),
        "mask": mask,
        "parent": parent,
        "interactions": [],
        "instance": id,
    }


# The layout this reader expects (segfast.data.layout: `segfast data check`, docs/data.md).
def _parts_index(root: Path, split: str, options: dict) -> Index:
    """The spec's classes and parts, and an image per label map (the reader's rule; the label maps
    themselves are only sampled: the reader decodes each one to find the objects with parts)."""
    classes, parts = read_spec(root / options["annotations"])
    labels = sorted((root / "labels" / split).glob("*.tif"))
    counts = {"scene classes": len(classes), "part classes": len(set(parts.values())), "label maps": len(labels)}
    return Index(counts, tuple(str(root / options["images"] / f"{p.stem}.jpg") for p in labels))


def _has_uids(path: Path) -> str:
    from PIL import Image

    with Image.open(path) as im:
        uids = np.asarray(im)
    if uids.dtype.kind not in "iu":
        raise ValueError(f"not an integer uid map ({uids.dtype})")
    return f"{int((uids >= 100_000).sum())} part pixels"


declare(
    Layout(
        name="pascal-panoptic-parts",
        title="PASCAL-Panoptic-Parts (SegLLM's hierarchical conversations)",
        download=(
            "https://github.com/pmeletis/panoptic_parts (labels and ppp_datasetspec.yaml); images: PASCAL VOC "
            "2010 JPEGImages (http://host.robots.ox.ac.uk/pascal/VOC/voc2010/)"
        ),
        readers={"multiround": {"format": "pascal_part", "annotations": "{annotations}", "images": "{images}"}},
        needs=(
            Need("{annotations}", "the dataset spec (scene_class2part_classes, countable_pids_groupings)"),
            Need("labels/{split}", "an int32 uid map <image id>.tif per image", files="*.tif", sample=_has_uids),
            Need("{images}/", "the VOC 2010 images the label maps name (<image id>.jpg)"),
        ),
        splits={"training": "training", "validation": "validation"},
        options={"annotations": "ppp_datasetspec.yaml", "images": "JPEGImages"},
        index=_parts_index,
    ),
)
