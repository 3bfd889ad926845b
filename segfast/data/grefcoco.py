"""gRefCOCO (GRES, Liu et al. 2023): referring expressions with one, several or no target.

Layout (the official release, as LISA's utils/grefer.py reads it):
  <root>/grefcoco/grefs(unc).json (or grefs(unc).p): a list of refs {"ref_id", "image_id",
      "split": train | val | testA | testB, "ann_id": [ids] ([-1] for a no-target expression),
      "no_target": bool, "sentences": [{"sent": str}, ...]}
  <root>/grefcoco/instances.json: COCO images and annotations (polygons or RLE)
  <root>/images/train2014/<file_name>: the COCO train2014 images
Download: https://github.com/henghuiding/gRefCOCO (annotations), COCO train2014 images.

Entries (the readers' common fields, segfast.data.referring): image, queries (every sentence,
`strip().lower()` as LISA's ValDataset reads them), is_sentence False, and segmentations: the
target objects' segmentations (empty for a no-target expression), whose union is the target.
"""

import json
import pickle
from pathlib import Path

import torch

from segfast.data.coco_masks import segmentation_mask
from segfast.data.layout import Index, Layout, Need, declare, image_size


def read_grefcoco(root: Path, split: str, split_by: str = "unc") -> list:
    folder = Path(root) / "grefcoco"
    candidates = (folder / f"grefs({split_by}).json", folder / f"grefs({split_by}).p")
    refs_path = next((p for p in candidates if p.is_file()), None)
    if refs_path is None or not (folder / "instances.json").is_file():
        raise FileNotFoundError(f"root: expected {folder}/grefs({split_by}).json (or .p) and instances.json (gRefCOCO)")
    if refs_path.suffix == ".p":
        with open(refs_path, "rb") as f:
            refs = pickle.load(f)
    else:
        refs = json.loads(refs_path.read_text())
    instances = json.loads((folder / "instances.json").read_text())
    anns = {a["id"]: a for a in instances["annotations"]}
    images = {i["id"]: i for i in instances["images"]}
    entries = []
    for ref in refs:
        if ref["split"] != split:
            continue
        ann_ids = ref["ann_id"] if isinstance(ref["ann_id"], list) else [ref["ann_id"]]
        entries.append(
            {
                "image": Path(root) / "images" / "train2014" / images[ref["image_id"]]["file_name"],
                "is_sentence": False,
                "queries": [s["sent"].strip().lower() for s in ref["sentences"]],
                "segmentations": [] if ref.get("no_target") else [anns[a]["segmentation"] for a in ann_ids if a != -1],
            }
        )
    return entries


def union_mask(segmentations: list, height: int, width: int) -> torch.Tensor:
    """(H, W) bool union of several objects' segmentations (all False for none)."""
    mask = torch.zeros(height, width, dtype=torch.bool)
    for seg in segmentations:
        mask |= segmentation_mask(seg, height, width)
    return mask


# The layout this reader expects (segfast.data.layout: `segfast data check`, docs/data.md).
def _grefcoco_index(root: Path, split: str, options: dict) -> Index:
    entries = read_grefcoco(root, split)
    counts = {
        "expressions": len(entries),
        "sentences": sum(len(e["queries"]) for e in entries),
        "no-target expressions": sum(not e["segmentations"] for e in entries),
    }
    return Index(counts, tuple(sorted({str(e["image"]) for e in entries})))


declare(
    Layout(
        name="grefcoco",
        title="gRefCOCO (GRES: one, several or no target)",
        download="https://github.com/henghuiding/gRefCOCO (grefs(unc).json, instances.json); images: COCO train2014",
        readers={"seg-conversations": {"format": "grefcoco"}},
        needs=(
            Need("grefcoco/grefs(unc).json|grefcoco/grefs(unc).p", "the expressions with their split and targets"),
            Need("grefcoco/instances.json", "the COCO images and annotations the expressions point to"),
            Need("images/train2014", "the COCO train2014 images", files="*.jpg", sample=image_size),
        ),
        splits={s: s for s in ("train", "val", "testA", "testB")},
        index=_grefcoco_index,
    ),
)
