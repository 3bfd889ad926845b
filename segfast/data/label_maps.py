"""Semantic-segmentation label maps: the public layouts LISA and LaSagnA train and evaluate on,
each read into (image, label map) pairs, the dataset's class names and a decoder that turns a
stored label map into classes 0..C-1 with IGNORE (255) elsewhere.

Layouts (local paths; split train or eval):
  ade20k      ADEChallengeData2016 (http://sceneparsing.csail.mit.edu): <root>/images/{training,
              validation}/*.jpg, <root>/annotations/{training,validation}/*.png; names from
              <root>/objectInfo150.csv (its Name column, first synonym). 0 ("other") is ignored and
              k becomes class k-1, as every ADE20K-150 benchmark does.
  cocostuff   COCO-Stuff 164k (https://github.com/nightrome/cocostuff): <root>/images/{train,val}2017/
              *.jpg, <root>/stuffthingmaps_trainval2017/{train,val}2017/*.png; names from
              <root>/labels.txt ("<id>: <name>" lines of the cocostuff repo; label value v is id v+1,
              255 unlabeled; ids absent from the file are never asked about).
  mapillary   Mapillary Vistas v2.0 as LISA reads it: <root>/config_v2.0.json ("labels", each
              "readable" name lower-cased), <root>/{training,validation}/v2.0/labels/*.png indexing
              that list, images in <root>/{training,validation}/images/*.jpg.
  cityscapes  Cityscapes (https://www.cityscapes-dataset.com, gtFine): <root>/leftImg8bit/{train,val}/
              <city>/<name>_leftImg8bit.png, <root>/gtFine/{train,val}/<city>/<name>_gtFine_labelIds.png;
              the 19 evaluated classes (cityscapesScripts' trainIds), every other labelId ignored.
  pascal-context-59, pascal-context-459, pascal-voc-20
              the open-vocabulary benchmarks in the detectron2 layout of ODISE / SAN / OVSeg
              (their datasets/prepare_pascal_*.py): <root>/pascal_ctx_d2/images/{training,validation}/
              *.jpg with annotations_ctx59/*.png (0..58, 255 ignored) or annotations_ctx459/*.tif
              (uint16 0..458, 65535 ignored; names from <root>/pascal_ctx_d2/labels.txt, the
              "<id>: <name>" list of the PASCAL-Context release); <root>/pascal_voc_d2/images/
              {training,validation}/*.jpg with annotations_pascal20/*.png (VOC 2012, background
              and boundaries ignored, 0..19).
"""

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segfast.data.layout import Index, Layout, Need, declare, image_size, label_values

IGNORE = 255
FORMATS = ("ade20k", "cocostuff", "mapillary", "cityscapes", "pascal-context-59", "pascal-context-459", "pascal-voc-20")
CITYSCAPES = {  # labelId -> (trainId, name): the 19 classes of cityscapesScripts' labels.py
    7: "road", 8: "sidewalk", 11: "building", 12: "wall", 13: "fence", 17: "pole", 19: "traffic light",
    20: "traffic sign", 21: "vegetation", 22: "terrain", 23: "sky", 24: "person", 25: "rider", 26: "car",
    27: "truck", 28: "bus", 31: "train", 32: "motorcycle", 33: "bicycle",
}  # fmt: skip
PASCAL_CONTEXT_59 = (
    "aeroplane bag bed bedclothes bench bicycle bird boat book bottle building bus cabinet car cat ceiling "
    "chair cloth computer cow cup curtain dog door fence floor flower food grass ground horse keyboard light "
    "motorbike mountain mouse person plate platform pottedplant road rock sheep shelves sidewalk sign sky snow "
    "sofa table track train tree truck tvmonitor wall water window wood"
).split()
PASCAL_VOC_20 = (
    "aeroplane bicycle bird boat bottle bus car cat chair cow diningtable dog horse motorbike person "
    "pottedplant sheep sofa train tvmonitor"
).split()


@dataclass
class LabelMaps:
    """A split of a label-map dataset: pairs (image, label map) and the class names (None for
    an index never asked about)."""

    format: str
    pairs: list
    classes: list

    def load(self, path) -> np.ndarray:
        """The stored label map at `path` as classes 0..C-1 and IGNORE."""
        from PIL import Image

        with Image.open(path) as im:
            raw = np.asarray(im).astype(np.int64)
        if self.format == "ade20k":  # 0 = other -> ignore; k -> k-1
            return np.where(raw == 0, IGNORE, raw - 1)
        if self.format == "cityscapes":
            lut = np.full(256, IGNORE, np.int64)
            lut[list(CITYSCAPES)] = np.arange(len(CITYSCAPES))
            return lut[np.clip(raw, 0, 255)]
        if self.format == "pascal-context-459":
            return np.where(raw == 65535, IGNORE, raw)
        return raw


def _names_file(path: Path, offset: int) -> list:
    """Names from "<id>: <name>" lines: label value v is id v + offset (None where absent)."""
    if not path.is_file():
        raise FileNotFoundError(f"root: no {path}")
    names = {}
    for line in path.read_text().splitlines():
        if ":" in line:
            key, name = line.split(":", 1)
            names[int(key)] = name.strip()
    return [names.get(v + offset) for v in range(max(names) + 1 - offset)]


def ade20k_classes(root: Path) -> list:
    path = root / "objectInfo150.csv"
    if not path.is_file():
        raise FileNotFoundError(f"root: no {path} (ADEChallengeData2016 ships it)")
    with open(path, newline="") as f:
        return [row["Name"].split(";")[0].strip() for row in csv.DictReader(f)]


def _pairs(images: Path, labels: Path, image_glob: str, label_of) -> list:
    if not images.is_dir() or not labels.is_dir():
        raise FileNotFoundError(f"root: expected {images} and {labels}")
    pairs = [(p, label_of(p)) for p in sorted(images.glob(image_glob))]
    missing = [str(lbl) for _, lbl in pairs if not lbl.is_file()]
    if missing:
        raise FileNotFoundError(f"root: {len(missing)} label maps are missing, e.g. {missing[0]}")
    return pairs


def read_label_maps(format: str, root, split: str) -> LabelMaps:
    """The pairs and class names of `format` under `root` for split train or eval."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    if not root:
        raise ValueError(f"root is required for format={format!r}")
    root, train = Path(root), split == "train"
    if format == "ade20k":
        sub = "training" if train else "validation"
        images, labels = root / "images" / sub, root / "annotations" / sub
        pairs = _pairs(images, labels, "*.jpg", lambda p: labels / (p.stem + ".png"))
        classes = ade20k_classes(root)
    elif format == "cocostuff":
        sub = "train2017" if train else "val2017"
        images, labels = root / "images" / sub, root / "stuffthingmaps_trainval2017" / sub
        pairs = _pairs(images, labels, "*.jpg", lambda p: labels / (p.stem + ".png"))
        classes = _names_file(root / "labels.txt", offset=1)
    elif format == "mapillary":
        import json

        sub = "training" if train else "validation"
        images, labels = root / sub / "images", root / sub / "v2.0" / "labels"
        pairs = _pairs(images, labels, "*.jpg", lambda p: labels / (p.stem + ".png"))
        config = root / "config_v2.0.json"
        if not config.is_file():
            raise FileNotFoundError(f"root: no {config} (Mapillary Vistas v2.0 ships it)")
        classes = [x["readable"].lower() for x in json.loads(config.read_text())["labels"]]
    elif format == "cityscapes":
        sub = "train" if train else "val"
        images, labels = root / "leftImg8bit" / sub, root / "gtFine" / sub

        def label_of(p):
            return labels / p.parent.name / p.name.replace("_leftImg8bit.png", "_gtFine_labelIds.png")

        pairs = _pairs(images, labels, "*/*_leftImg8bit.png", label_of)
        classes = list(CITYSCAPES.values())
    else:
        sub = "training" if train else "validation"
        base, folder, suffix = {
            "pascal-context-59": ("pascal_ctx_d2", "annotations_ctx59", ".png"),
            "pascal-context-459": ("pascal_ctx_d2", "annotations_ctx459", ".tif"),
            "pascal-voc-20": ("pascal_voc_d2", "annotations_pascal20", ".png"),
        }[format]
        images, labels = root / base / "images" / sub, root / base / folder / sub
        pairs = _pairs(images, labels, "*.jpg", lambda p: labels / (p.stem + suffix))
        classes = {
            "pascal-context-59": PASCAL_CONTEXT_59,
            "pascal-voc-20": PASCAL_VOC_20,
        }.get(format) or _names_file(root / base / "labels.txt", offset=1)
    if not pairs:
        raise ValueError(f"no {format} images for split {split!r} under {root}")
    return LabelMaps(format, pairs, list(classes))


# The layouts these readers expect (segfast.data.layout: `segfast data check`, docs/data.md).
LABEL_READERS = ("semantic-queries",)  # the dataset that reads every label-map format
CONVERSATION_READERS = (*LABEL_READERS, "sem-seg-conversations")  # ade20k, cocostuff and mapillary
LISA_READERS = (*CONVERSATION_READERS, "referring", "multiround")  # ade20k and cocostuff: LISA's sem_seg part
# (mapillary: the conversation readers and LLM-Seg's referring)


def _pairs_index(format: str, train: str):
    """The reader's pairs of a split (`train`: the folder word of the training split)."""

    def index(root: Path, split: str, options: dict) -> Index:
        maps = read_label_maps(format, root, "train" if split == train else "eval")
        return Index({"image and label map pairs": len(maps.pairs), "class names": len(maps.classes)})

    return index


def _classes(read):
    return lambda path: f"{sum(n is not None for n in read(Path(path).parent))} class names"


def _label_layout(format, title, download, needs, splits, published=None, source="", readers=LABEL_READERS):
    return Layout(
        name=format,
        title=title,
        download=download,
        readers={name: {"format": format} for name in readers},
        needs=needs,
        splits={s: s for s in splits},
        index=_pairs_index(format, splits[0]),
        published={s: {need.path: n for need in needs if need.files} for s, n in (published or {}).items()},
        source=source,
    )


def _images(path: str, files: str = "*.jpg") -> Need:
    return Need(path, "the images", files=files, sample=image_size)


def _labels(path: str, what: str, top: int, ignore=(IGNORE,), files: str = "*.png") -> Need:
    return Need(path, what, files=files, sample=label_values(top, ignore))


_D2 = "the detectron2 layout written by ODISE / SAN / OVSeg's datasets/prepare_pascal_*.py"
declare(
    _label_layout(
        "ade20k",
        "ADE20K (ADEChallengeData2016, SceneParsing 150 classes)",
        "http://sceneparsing.csail.mit.edu (ADEChallengeData2016.zip)",
        (
            Need("objectInfo150.csv", "the class names (Name column)", sample=_classes(ade20k_classes)),
            _images("images/{split}"),
            _labels("annotations/{split}", "a label map <name>.png per image (0 other, 1-150)", 150, ()),
        ),
        ("training", "validation"),
        {"training": 20210, "validation": 2000},
        "the SceneParsing benchmark page: 20,210 training and 2,000 validation images",
        readers=LISA_READERS,
    ),
    _label_layout(
        "cocostuff",
        "COCO-Stuff 164k (171 classes)",
        "https://github.com/nightrome/cocostuff (stuffthingmaps_trainval2017.zip and labels.txt); images: COCO 2017 "
        "train/val (https://cocodataset.org/#download)",
        (
            Need(
                "labels.txt",
                "the cocostuff repo's '<id>: <name>' class list",
                sample=_classes(lambda root: _names_file(root / "labels.txt", offset=1)),
            ),
            _images("images/{split}"),
            _labels("stuffthingmaps_trainval2017/{split}", "a label map <name>.png (0-181, 255 unlabeled)", 181),
        ),
        ("train2017", "val2017"),
        {"train2017": 118287, "val2017": 5000},
        "COCO 2017 (cocodataset.org): 118,287 train and 5,000 val images, each with a stuffthingmap",
        readers=LISA_READERS,
    ),
    _label_layout(
        "mapillary",
        "Mapillary Vistas v2.0",
        "https://www.mapillary.com/dataset/vistas (v2.0)",
        (
            Need("config_v2.0.json", "the label list (labels[].readable)"),
            _images("{split}/images"),
            Need("{split}/v2.0/labels", "a label map <name>.png per image indexing that list", files="*.png"),
        ),
        ("training", "validation"),
        {"training": 18000, "validation": 2000},
        "the Mapillary Vistas page: 18,000 training and 2,000 validation images",
        readers=(*CONVERSATION_READERS, "referring"),
    ),
    _label_layout(
        "cityscapes",
        "Cityscapes (gtFine, the 19 evaluated classes)",
        "https://www.cityscapes-dataset.com (leftImg8bit_trainvaltest.zip, gtFine_trainvaltest.zip)",
        (
            _images("leftImg8bit/{split}", "*/*_leftImg8bit.png"),
            _labels("gtFine/{split}", "<city>/<name>_gtFine_labelIds.png per image", 33, (), "*/*_gtFine_labelIds.png"),
        ),
        ("train", "val"),
        {"train": 2975, "val": 500},
        "the Cityscapes page: 2,975 train and 500 val images with fine annotations",
    ),
    _label_layout(
        "pascal-context-59",
        "PASCAL-Context, 59 classes (open-vocabulary benchmark)",
        "https://cs.stanford.edu/~roozbeh/pascal-context/ with VOC 2010 images, converted by " + _D2,
        (
            _images("pascal_ctx_d2/images/{split}"),
            _labels("pascal_ctx_d2/annotations_ctx59/{split}", "a label map <name>.png (0-58, 255 ignored)", 58),
        ),
        ("training", "validation"),
        {"training": 4998, "validation": 5105},
        "PASCAL-Context (Mottaghi et al., CVPR 2014): 4,998 train and 5,105 val images",
    ),
    _label_layout(
        "pascal-context-459",
        "PASCAL-Context, 459 classes (open-vocabulary benchmark)",
        "https://cs.stanford.edu/~roozbeh/pascal-context/ with VOC 2010 images, converted by " + _D2,
        (
            Need("pascal_ctx_d2/labels.txt", "the release's '<id>: <name>' list of the 459 classes"),
            _images("pascal_ctx_d2/images/{split}"),
            _labels(
                "pascal_ctx_d2/annotations_ctx459/{split}",
                "a uint16 label map <name>.tif (0-458, 65535 ignored)",
                458,
                (65535,),
                "*.tif",
            ),
        ),
        ("training", "validation"),
        {"training": 4998, "validation": 5105},
        "PASCAL-Context (Mottaghi et al., CVPR 2014): 4,998 train and 5,105 val images",
    ),
    _label_layout(
        "pascal-voc-20",
        "PASCAL VOC 2012, 20 classes (open-vocabulary benchmark)",
        "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/, converted by " + _D2,
        (
            _images("pascal_voc_d2/images/{split}"),
            _labels("pascal_voc_d2/annotations_pascal20/{split}", "a label map <name>.png (0-19; 255 ignored)", 19),
        ),
        ("training", "validation"),
        {"training": 1464, "validation": 1449},
        "VOC 2012 segmentation: 1,464 train and 1,449 val images",
    ),
)
