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
    # VOC's val image set: the images of classes 1 and 2; img2 and img5 (class 7) are training images
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    val = [f"img{i}" for i in range(8) if truth[f"img{i}"][0] != 7]
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(val) + "\n")
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


def pascal_part(root: Path) -> Path:
    """PASCAL-Part in COCO format: one VOC 2010 image with a dog's head and tail."""
    png(root / "VOCdevkit" / "VOC2010" / "JPEGImages" / "2008_000001.jpg", np.zeros((20, 30, 3), np.uint8))
    (root / "train.json").write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "2008_000001.jpg", "height": 20, "width": 30}],
                "categories": [{"id": 3, "name": "dog:head"}, {"id": 4, "name": "dog:tail"}],
                "annotations": [
                    {"id": 1, "image_id": 1, "category_id": 3, "segmentation": [[0, 0, 10, 0, 10, 10, 0, 10]]},
                    {"id": 2, "image_id": 1, "category_id": 4, "segmentation": [[20, 0, 30, 0, 30, 5, 20, 5]]},
                ],
            }
        )
    )
    return root


def paco_lvis(root: Path, coco: Path) -> Path:
    """PACO-LVIS: annotations/paco_lvis_v1_train.json with a mug (and a part category never used),
    its image train2017/b.jpg under the COCO folder `coco`."""
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "paco_lvis_v1_train.json").write_text(
        json.dumps(
            {
                "images": [{"id": 5, "file_name": "train2017/b.jpg", "height": 20, "width": 30}],
                "categories": [{"id": 1, "name": "car_(automobile):wheel"}, {"id": 2, "name": "mug"}],
                "annotations": [
                    {
                        "id": 9,
                        "image_id": 5,
                        "category_id": 2,
                        "bbox": [0, 0, 5, 5],
                        "segmentation": [[0, 0, 5, 0, 5, 5]],
                    }
                ],
            }
        )
    )
    png(coco / "train2017" / "b.jpg", np.zeros((20, 30, 3), np.uint8))
    return root


def llava_instruct(root: Path) -> dict:
    """A LLaVA-Instruct-150k layout with one two-round conversation: the dataset's options."""
    png(root / "coco" / "x.jpg", np.zeros((20, 30, 3), np.uint8))
    turns = [
        {"from": "human", "value": "What is shown?\n<image>"},
        {"from": "gpt", "value": "A grey box."},
        {"from": "human", "value": "Is it dark?"},
        {"from": "gpt", "value": "Yes."},
    ]
    (root / "llava_instruct_150k.json").write_text(json.dumps([{"id": "1", "image": "x.jpg", "conversations": turns}]))
    return {"root": str(root), "images": str(root / "coco")}


def grefcoco(root: Path) -> Path:
    """gRefCOCO val: an expression with two targets and a no-target one with two sentences."""
    folder = root / "grefcoco"
    folder.mkdir(parents=True)
    png(root / "images" / "train2014" / "c.jpg", np.zeros((20, 30, 3), np.uint8))
    refs = [
        {"ref_id": 0, "image_id": 1, "split": "val", "ann_id": [1, 2], "no_target": False,
         "sentences": [{"sent": "Both Blocks"}]},
        {"ref_id": 1, "image_id": 1, "split": "val", "ann_id": [-1], "no_target": True,
         "sentences": [{"sent": "the purple cat"}, {"sent": "a dog"}]},
    ]  # fmt: skip
    (folder / "grefs(unc).json").write_text(json.dumps(refs))
    anns = [
        {"id": 1, "image_id": 1, "segmentation": [[0, 0, 10, 0, 10, 10, 0, 10]]},
        {"id": 2, "image_id": 1, "segmentation": [[20, 0, 30, 0, 30, 10, 20, 10]]},
    ]
    (folder / "instances.json").write_text(
        json.dumps({"images": [{"id": 1, "file_name": "c.jpg"}], "annotations": anns, "categories": []})
    )
    return root


def cityscapes(root: Path, city: str = "bonn", name: str = "b_000", ids=None) -> Path:
    """Cityscapes val: one image of `city` with its gtFine labelIds (default: road, sidewalk,
    unlabeled, bicycle, car, ego vehicle)."""
    png(root / "leftImg8bit" / "val" / city / f"{name}_leftImg8bit.png", np.zeros((4, 6, 3), np.uint8))
    ids = np.array([[7, 8, 0, 33, 26, 1]] * 4, np.uint8) if ids is None else ids
    png(root / "gtFine" / "val" / city / f"{name}_gtFine_labelIds.png", ids)
    return root


def pascal_context(root: Path) -> Path:
    """PASCAL-Context in the detectron2 layout: one validation image 2008_1 with its 459-class
    uint16 tif, its 59-class png, and labels.txt naming the 459 classes."""
    ctx = root / "pascal_ctx_d2"
    png(ctx / "images" / "validation" / "2008_1.jpg", np.zeros((4, 6, 3), np.uint8))
    (ctx / "annotations_ctx459" / "validation").mkdir(parents=True)
    tif = np.array([[0, 458, 65535, 3, 3, 3]] * 4, np.uint16)
    Image.fromarray(tif).save(ctx / "annotations_ctx459" / "validation" / "2008_1.tif")
    png(ctx / "annotations_ctx59" / "validation" / "2008_1.png", np.array([[0, 58, 255, 1, 1, 1]] * 4, np.uint8))
    (ctx / "labels.txt").write_text("".join(f"{k}: name{k}\n" for k in range(1, 460)))
    return root


def pascal_voc20(root: Path, name: str = "2007_1", value: int = 14) -> Path:
    """PASCAL VOC 20 in the detectron2 layout: one validation image of class `value`."""
    voc = root / "pascal_voc_d2"
    png(voc / "images" / "validation" / f"{name}.jpg", np.zeros((4, 6, 3), np.uint8))
    png(voc / "annotations_pascal20" / "validation" / f"{name}.png", np.full((4, 6), value, np.uint8))
    return root


def mapillary(root: Path, split: str = "validation") -> Path:
    """Mapillary Vistas v2.0: the label list (bird, ground animal, curb) and one image with its label map."""
    labels = [{"readable": n} for n in ("Bird", "Ground Animal", "Curb")]
    root.mkdir(parents=True, exist_ok=True)
    (root / "config_v2.0.json").write_text(json.dumps({"labels": labels}))
    png(root / split / "images" / "m.jpg", np.zeros((4, 6, 3), np.uint8))
    png(root / split / "v2.0" / "labels" / "m.png", np.array([[0, 1, 2, 2, 1, 0]] * 4, np.uint8))
    return root


def openimages(root: Path) -> Path:
    """OpenImages V6 train: image img1 with two masks of /m/01 (Cat; one stored at half
    resolution) and one of /m/02 (Sky)."""
    png(root / "train" / "img1.jpg", np.zeros((8, 12, 3), np.uint8))
    half = np.zeros((4, 6), np.uint8)
    half[:, :3] = 255  # stored at half resolution: the left half
    png(root / "train-masks" / "img1_m01_a.png", half)
    png(root / "train-masks" / "img1_m01_b.png", np.pad(np.full((2, 6), 255, np.uint8), ((2, 0), (0, 0))))
    png(root / "train-masks" / "img1_m02_a.png", np.full((8, 12), 255, np.uint8))
    (root / "train-annotations-object-segmentation.csv").write_text(
        "MaskPath,ImageID,LabelName\nimg1_m01_a.png,img1,/m/01\nimg1_m01_b.png,img1,/m/01\nimg1_m02_a.png,img1,/m/02\n"
    )
    (root / "oidv6-class-descriptions.csv").write_text("LabelName,DisplayName\n/m/01,Cat\n/m/02,Sky\n/m/03,Dog\n")
    return root


def coco_box(id, cat, box, image_id=1, **extra):
    """A COCO-style box annotation (its segmentation the box's polygon)."""
    x0, y0, x1, y1 = box
    return {
        "id": id,
        "image_id": image_id,
        "category_id": cat,
        "bbox": [x0, y0, x1 - x0, y1 - y0],
        "iscrowd": 0,
        "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]],
        **extra,
    }


def paco(root: Path, annotations: str = "paco.json") -> Path:
    """PACO-LVIS style: a mug (object) with its handle and rim (parts, obj_ann_id), image
    train2017/a.jpg under the root."""
    png(root / "train2017" / "a.jpg", np.zeros((40, 60, 3), np.uint8))
    boxes = ((1, 1, (0, 0, 30, 30)), (2, 2, (20, 5, 30, 20)), (3, 3, (0, 0, 30, 4)))
    data = {
        "images": [{"id": 1, "file_name": "train2017/a.jpg", "height": 40, "width": 60}],
        "categories": [{"id": 1, "name": "mug"}, {"id": 2, "name": "mug:handle"}, {"id": 3, "name": "mug:rim"}],
        "annotations": [coco_box(id, cat, box, obj_ann_id=1) for id, cat, box in boxes],
    }
    (root / annotations).parent.mkdir(parents=True, exist_ok=True)
    (root / annotations).write_text(json.dumps(data))
    return root


def visual_genome(root: Path) -> Path:
    """One image VG_100K/5.jpg, a man holding a cup (and a same-box relation the reader skips);
    returns the masks JSON ({object id: RLE})."""
    from pycocotools import mask as mask_utils

    png(root / "VG_100K" / "5.jpg", np.zeros((40, 60, 3), np.uint8))
    (root / "image_data.json").write_text(
        json.dumps([{"image_id": 5, "width": 60, "height": 40, "url": "http://x/VG_100K/5.jpg"}])
    )
    man = {"object_id": 1, "x": 0, "y": 0, "w": 20, "h": 30, "names": ["man"]}
    cup = {"object_id": 2, "x": 25, "y": 10, "w": 5, "h": 5, "name": "cup"}
    relationships = [
        {"predicate": "holding", "subject": man, "object": cup},
        {"predicate": "near", "subject": cup, "object": cup},  # same box: skipped
    ]
    (root / "relationships.json").write_text(json.dumps([{"image_id": 5, "relationships": relationships}]))
    rle = mask_utils.encode(np.asfortranarray(np.pad(np.ones((5, 5), np.uint8), ((10, 25), (25, 30)))))
    rle["counts"] = rle["counts"].decode()
    (root / "masks.json").write_text(json.dumps({"1": rle, "2": rle}))
    return root / "masks.json"


def mrseg(root: Path) -> list:
    """The released MRSeg format: one image (named by its val2014 path, found in train2014), three
    refcoco masks, a two-round conversation and an MRSeg-hard one in
    conversations_folder/all_data_mix_val/mr_refcoco_val.json; returns the conversations."""
    png(root / "images_folder" / "coco" / "train2014" / "x.jpg", np.zeros((40, 60, 3), np.uint8))
    (root / "annotations_folder" / "refcoco").mkdir(parents=True)
    anns = [
        {
            "id": k,
            "image_id": 1,
            "category_id": 1,
            "bbox": [10 * k, 0, 10, 10],
            "segmentation": [[10 * k, 0, 10 * k + 10, 0, 10 * k + 10, 10, 10 * k, 10]],
        }
        for k in (1, 2, 3)
    ]
    (root / "annotations_folder" / "refcoco" / "instances.json").write_text(json.dumps({"annotations": anns}))
    img = "coco/val2014/x.jpg"  # the authors' path fallback: val2014 -> train2014
    entries = [
        {
            "image": img,
            "conversations": [
                {"from": "human", "value": f"[IMAGE256:{img}] Segment a person."},
                {"from": "gpt", "value": f"[MASK-DECODE:none:none:1:{img}:refcoco]."},
                {
                    "from": "human",
                    "value": f"[MASK-ENCODE:{img}|refcoco|1][BOX-ENCODE:{img}|refcoco|1] Segment the person "
                    "next to instance 1.",
                },
                {"from": "gpt", "value": f"Sure, [MASK-DECODE:relational:1:2:{img}:refcoco]."},
            ],
        },
        {
            "conversations": [  # MRSeg-hard: the encoded mask is no round's output
                {
                    "from": "human",
                    "value": f"[IMAGE256:{img}] [MASK-ENCODE:{img}|refcoco|3][BOX-ENCODE:{img}|refcoco|3] "
                    "Please segment the other person",
                },
                {"from": "gpt", "value": f"[MASK-DECODE:hard:3:2:{img}:refcoco]"},
            ]
        },
    ]
    (root / "conversations_folder" / "all_data_mix_val").mkdir(parents=True)
    (root / "conversations_folder" / "all_data_mix_val" / "mr_refcoco_val.json").write_text(json.dumps(entries))
    return entries


def panoptic_parts(root: Path) -> np.ndarray:
    """PASCAL-Panoptic-Parts: the dataset spec, training labels a.tif (an aeroplane with body and
    two grouped engines, a person with a head, a second aeroplane without parts, sky) and b.tif
    (no part anywhere), images in JPEGImages; returns a.tif's uids."""
    (root / "labels" / "training").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    (root / "ppp_datasetspec.yaml").write_text(
        "version: 2.0\n"
        "scene_class2part_classes: {aeroplane: [body, engine], person: [head, torso], sky: []}\n"
        "countable_pids_groupings: {aeroplane: {engine: [2, 3]}}\n"
    )
    uid = np.full((40, 60), 3, np.int32)  # sky (sid 3), no instances
    uid[0:20, 0:30] = 1_001_01  # aeroplane 1 body
    uid[0:5, 0:10], uid[15:20, 0:10] = 1_001_02, 1_001_03  # its two engines (raw pids 2, 3)
    uid[20:40, 40:60] = 2_001_01  # person 1 head
    uid[30:40, 40:50] = 2001  # person 1, no part label
    uid[0:10, 50:60] = 1002  # aeroplane 2: no parts, left out
    for name, label in (("a", uid), ("b", np.full((40, 60), 2001, np.int32))):  # b: no part anywhere
        Image.fromarray(label).save(root / "labels" / "training" / f"{name}.tif")
        Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(root / "JPEGImages" / f"{name}.jpg")
    return uid
