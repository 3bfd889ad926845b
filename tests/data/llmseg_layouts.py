"""Tiny fake layouts of LLM-Seg's data: proposals files as `segfast proposals` writes them and the
released LLM-Seg40K annotation format."""

import json
from pathlib import Path

import numpy as np
from PIL import Image


def rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": encoded["size"], "counts": encoded["counts"].decode()}


def proposals_json(path: Path, masks: np.ndarray) -> Path:
    """A proposals file with the given (K, h, w) masks, largest first."""
    order = sorted(range(len(masks)), key=lambda k: -int(masks[k].sum()))
    anns = [{"segmentation": rle(masks[k]), "area": int(masks[k].sum())} for k in order]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"height": masks.shape[1], "width": masks.shape[2], "annotations": anns}))
    return path


def box(h: int, w: int, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def write_llmseg40k(root: Path, split: str, images: dict) -> Path:
    """<root>/LLMSeg-40K/<split>.json in the released format and the images in the authors'
    layout. images: name -> (from_dataset, (h, w), [(question, answer, mask)])."""
    folders = {"coco": root / "coco" / "train2017", "ego_objects": root / "ego_objects" / "images"}
    data = {}
    for name, (source, (h, w), qas) in images.items():
        folders[source].mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((h, w, 3), 90, np.uint8)).save(folders[source] / name)
        data[name] = {
            "from_dataset": source,
            "qa_pairs": [{"question": q, "answer": a, "rle_seg": rle(m)} for q, a, m in qas],
        }
    (root / "LLMSeg-40K").mkdir(parents=True, exist_ok=True)
    path = root / "LLMSeg-40K" / f"{split}.json"
    path.write_text(json.dumps(data))
    return path
