"""Tiny fake dataset folders in the public layouts the readers expect, one builder per layout,
shared by the readers' tests and the `segfast data check` tests."""

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def square(x0, y0, x1, y1):
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def reasonseg(root: Path, split: str = "val") -> Path:
    """Two images: a.jpg (target, ignore, another target label, a flag shape; two texts) and b.jpg
    (a sentence)."""
    (root / split).mkdir(parents=True)
    Image.fromarray(np.zeros((30, 50, 3), np.uint8)).save(root / split / "a.jpg")
    (root / split / "a.json").write_text(
        json.dumps(
            {
                "text": ["the left block", "another wording"],
                "is_sentence": False,
                "shapes": [
                    {"label": "target", "points": square(0, 0, 20, 20)},
                    {"label": "Ignore", "points": square(10, 10, 15, 15)},  # inside the target: smaller, wins
                    {"label": "person", "points": square(30, 0, 40, 10)},  # any other label is target
                    {"label": "flag", "points": square(40, 20, 50, 30)},  # deprecated: skipped
                ],
            }
        )
    )
    Image.fromarray(np.zeros((30, 50, 3), np.uint8)).save(root / split / "b.jpg")
    (root / split / "b.json").write_text(
        json.dumps(
            {
                "text": ["What could hold a drink?"],
                "is_sentence": True,
                "shapes": [{"label": "target", "points": square(5, 5, 25, 25)}],
            }
        )
    )
    return root


def refer(root: Path) -> Path:
    """refCOCO (unc) with one image: two refs in val (three sentences), one in testA."""
    from tests.models.seg_family import write_refer

    refs = [
        {"split": "val", "ann_id": 1, "image_id": 1, "sentences": [{"sent": " Left Block "}, {"sent": "red one"}]},
        {"split": "val", "ann_id": 2, "image_id": 1, "sentences": [{"sent": "right"}]},
        {"split": "testA", "ann_id": 2, "image_id": 1, "sentences": [{"sent": "not in val"}]},
    ]
    anns = [
        {"id": 1, "segmentation": [sum(square(0, 0, 20, 20), [])]},
        {"id": 2, "segmentation": [sum(square(30, 0, 50, 30), [])]},
    ]
    write_refer(root, np.zeros((30, 50, 3), np.uint8), refs, anns)
    return root


def llmseg40k(root: Path, split: str, queries: list, segmentation: list, size=(30, 50)) -> Path:
    """One record naming images/b.png."""
    png(root / "images" / "b.png", np.zeros((*size, 3), np.uint8))
    record = {"image": "b.png", "query": queries, "segmentation": segmentation}
    (root / f"{split}.json").write_text(json.dumps([record]))
    return root


def ade20k(root: Path, split: str = "training", names=("wall", "building;edifice", "sky")) -> np.ndarray:
    """One 20 x 30 image a.jpg whose label map has columns 0 | 1 | 3; returns the label map."""
    raw = np.zeros((20, 30), np.uint8)
    raw[:, 10:20], raw[:, 20:] = 1, 3
    png(root / "images" / split / "a.jpg", np.zeros((20, 30, 3), np.uint8))
    png(root / "annotations" / split / "a.png", raw)
    rows = "".join(f"{i},0.1,1,1,{n}\n" for i, n in enumerate(names, 1))
    (root / "objectInfo150.csv").write_text("Idx,Ratio,Train,Val,Name\n" + rows)
    return raw


def cocostuff(root: Path, split: str = "val2017") -> np.ndarray:
    """One 20 x 30 image b.jpg: person above, bicycle in a corner, unlabeled elsewhere."""
    stuff = np.full((20, 30), 255, np.uint8)
    stuff[:10], stuff[10:, :5] = 0, 1
    png(root / "images" / split / "b.jpg", np.zeros((20, 30, 3), np.uint8))
    png(root / "stuffthingmaps_trainval2017" / split / "b.png", stuff)
    (root / "labels.txt").write_text("0: unlabeled\n1: person\n2: bicycle\n4: motorcycle\n")
    return stuff


def pascal_tree(root: Path, gen) -> dict:
    """Eight VOC images with SegmentationClassAug masks of classes 1, 2 and 7 (one a block with an
    ignored boundary row and a small second part); returns name -> (class, labels)."""
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClassAug").mkdir()
    truth = {}
    for i in range(8):
        labels = np.zeros((40, 50), dtype=np.uint8)
        cls = [1, 2, 7][i % 3]  # fold 0 has classes 1-5; class 7 belongs to the other folds
        y, x = (torch.randint(0, 20, (2,), generator=gen)).tolist()
        labels[y : y + 15, x : x + 20] = cls
        labels[y + 15, x : x + 20] = 255  # an ignored boundary row
        labels[35:38, 45:48] = cls  # a second, small part
        Image.fromarray(labels).save(root / "SegmentationClassAug" / f"img{i}.png")
        rgb = (torch.rand(40, 50, 3, generator=gen) * 255).byte().numpy()
        Image.fromarray(rgb).save(root / "JPEGImages" / f"img{i}.jpg")
        truth[f"img{i}"] = (cls, labels)
    return truth


def pascal_lists(root: Path, truth: dict) -> None:
    """HSNet's fold lists for a pascal_tree: val/fold<i> the fold's classes, trn/fold<i> the others."""
    for fold in range(4):
        test = range(5 * fold + 1, 5 * fold + 6)
        for split, keep in (("val", lambda c: c in test), ("trn", lambda c: c not in test)):
            path = root / "splits" / "pascal" / split / f"fold{fold}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(f"{n}__{c}\n" for n, (c, _) in truth.items() if keep(c)))


def coco20i(root: Path, gen, split: str = "val2014") -> tuple:
    """Four 30 x 40 images with two random polygons of category 18 ("dog", class 17 of fold 0)
    each; returns (images, annotations) as written."""
    (root / "annotations").mkdir(parents=True)
    (root / split).mkdir()
    images, anns = [], []
    for i in range(4):
        Image.fromarray((torch.rand(30, 40, 3, generator=gen) * 255).byte().numpy()).save(root / split / f"{i}.jpg")
        images.append({"id": i, "file_name": f"{i}.jpg", "height": 30, "width": 40})
        for _ in range(2):
            pts = (torch.rand(7, 2, generator=gen) * torch.tensor([40.0, 30.0])).flatten().tolist()
            anns.append({"id": len(anns), "image_id": i, "category_id": 18, "segmentation": [pts], "iscrowd": 0})
    cats = [{"id": c, "name": f"cat{c}"} for c in range(1, 91) if c % 10 != 0][:80]
    cats[16]["name"] = "dog"
    (root / "annotations" / f"instances_{split}.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": cats})
    )
    return images, anns
