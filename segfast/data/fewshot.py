"""Few-shot segmentation episodes in the PASCAL-5i and COCO-20i layouts (LLaFS's benchmarks).

PASCAL-5i (root = VOC2012 with SBD's augmented masks, as HSNet / PFENet use it):
    root/JPEGImages/<name>.jpg
    root/SegmentationClassAug/<name>.png     class index per pixel: 0 background, 1-20, 255 ignore
    root/splits/pascal/{trn,val}/fold<i>.txt optional HSNet lists, one "<name>__<class>" per line;
                                             without them the masks are scanned (progress bar)
COCO-20i (COCO 2014):
    root/annotations/instances_{train2014,val2014}.json
    root/{train2014,val2014}/<file_name>
    category ids map to classes 1-80 in ascending id order; polygon annotations are rasterized
    by segfast (pycocotools' rule), RLE ones (crowds) are decoded with pycocotools.

Folds: PASCAL fold i tests classes 5i+1 .. 5i+5; COCO fold i tests classes 4k + i + 1,
k = 0..19 (the interleaved split of HSNet / PFENet's use_split_coco). The "train" split samples
queries of the other classes, "val" those of the fold.

An episode is a query (image, class) and `shots` support images of the same class, drawn
deterministically from (seed, episode index, epoch): training re-draws its episodes every epoch
(set_epoch), evaluation reads epoch 0's. Masks are the class's pixels after resizing to
size x size (nearest; images bilinear with antialiasing). The query's objects are the COCO
instances, or for PASCAL the mask's 8-connected components; objects smaller than
min_object_area pixels are left out of the polygons (never out of the mask). Polygons are polar
16-gons (segfast.ops.mask_to_polar_polygons). With `attributes` (a JSON path, see
segfast.models.llafs.prompts) each episode carries its class's region attributes.

Evaluation (`FoldIoU`): per class, intersections and unions summed over its episodes (pixels
marked 255 in PASCAL's masks ignored), IoU_c = I_c / U_c, reported as the mean over the fold's
classes: the mean foreground IoU of the papers.
"""

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from segfast.data.coco_masks import segmentation_mask
from segfast.data.layout import Index, Layout, Need, declare, image_size, label_values
from segfast.data.rng import EpochChoices
from segfast.frames import read_rgb
from segfast.ops import mask_to_polar_polygons
from segfast.registry import dataset

PASCAL_CLASSES = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
IGNORE = 255


def fold_classes(dataset: str, fold: int) -> list[int]:
    """The test classes (1-based) of a fold."""
    if dataset == "pascal":
        if not 0 <= fold < 4:
            raise ValueError(f"fold must be 0-3 for pascal, got {fold}")
        return list(range(5 * fold + 1, 5 * fold + 6))
    if dataset == "coco":
        if not 0 <= fold < 4:
            raise ValueError(f"fold must be 0-3 for coco, got {fold}")
        return [4 * k + fold + 1 for k in range(20)]
    raise ValueError(f"dataset must be pascal or coco, got {dataset!r}")


def connected_components(mask: torch.Tensor) -> list[torch.Tensor]:
    """(H, W) bool -> list of (H, W) bool 8-connected components, largest first."""
    h, w = mask.shape
    if not mask.any():
        return []
    labels = torch.where(mask, torch.arange(1, h * w + 1, dtype=torch.float32).view(h, w), torch.zeros(()))
    while True:  # each component converges to its largest index
        grown = F.max_pool2d(labels[None, None], 3, stride=1, padding=1)[0, 0] * mask
        if torch.equal(grown, labels):
            break
        labels = grown
    parts = [labels == v for v in labels.unique() if v > 0]
    return sorted(parts, key=lambda m: -int(m.sum()))


def _load_rgb(path: Path) -> torch.Tensor:
    return torch.from_numpy(read_rgb(path)).permute(2, 0, 1)


def _load_labels(path: Path) -> torch.Tensor:
    from PIL import Image

    with Image.open(path) as im:  # palette PNGs keep their indices
        return torch.from_numpy(np.asarray(im).copy()).long()


def _resize_image(img: torch.Tensor, size: int) -> torch.Tensor:
    x = F.interpolate(img[None].float() / 255, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x[0].clamp(0, 1)


def _resize_mask(mask: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(mask[None, None].float(), size=(size, size), mode="nearest")[0, 0] > 0.5


class _Pascal:
    def __init__(self, root: Path, split: str, fold: int):
        self.root = root
        listing = root / "splits" / "pascal" / ("trn" if split == "train" else "val") / f"fold{fold}.txt"
        wanted = set(fold_classes("pascal", fold))
        if split == "train":
            wanted = set(range(1, 21)) - wanted
        if listing.exists():
            pairs = []
            for line in listing.read_text().split():
                name, cls = line.rsplit("__", 1)
                pairs.append((name, int(cls)))
        else:
            pairs = self._scan()
        self.pairs = [(n, c) for n, c in pairs if c in wanted]
        self.names = {c: PASCAL_CLASSES[c - 1] for c in range(1, 21)}

    def _scan(self):
        from tqdm import tqdm

        files = sorted((self.root / "SegmentationClassAug").glob("*.png"))
        if not files:
            raise FileNotFoundError(f"{self.root}: no SegmentationClassAug/*.png masks (see segfast.data.fewshot)")
        pairs = []
        for f in tqdm(files, desc="indexing masks", disable=len(files) < 500):
            labels = _load_labels(f)
            pairs += [(f.stem, int(c)) for c in labels.unique().tolist() if 1 <= c <= 20]
        return pairs

    def image(self, name):
        return _load_rgb(self.root / "JPEGImages" / f"{name}.jpg")

    def masks(self, name, cls):
        """(class mask, ignore mask, object masks) at the image's size."""
        labels = _load_labels(self.root / "SegmentationClassAug" / f"{name}.png")
        return labels == cls, labels == IGNORE, None


class _Coco:
    def __init__(self, root: Path, split: str, fold: int):
        tag = "train2014" if split == "train" else "val2014"
        path = root / "annotations" / f"instances_{tag}.json"
        if not path.exists():
            raise FileNotFoundError(f"{path} not found (see segfast.data.fewshot for the COCO-20i layout)")
        data = json.loads(path.read_text())
        self.dir = root / tag
        cats = sorted(c["id"] for c in data["categories"])
        self.to_class = {cid: i + 1 for i, cid in enumerate(cats)}
        self.names = {self.to_class[c["id"]]: c["name"] for c in data["categories"]}
        self.images = {im["id"]: im for im in data["images"]}
        self.anns: dict = {}
        for ann in data["annotations"]:
            self.anns.setdefault((ann["image_id"], self.to_class[ann["category_id"]]), []).append(ann)
        wanted = set(fold_classes("coco", fold))
        if split == "train":
            wanted = set(range(1, 81)) - wanted
        self.pairs = sorted(k for k in self.anns if k[1] in wanted)

    def image(self, image_id):
        return _load_rgb(self.dir / self.images[image_id]["file_name"])

    def masks(self, image_id, cls):
        im = self.images[image_id]
        h, w = im["height"], im["width"]
        objects = [segmentation_mask(a["segmentation"], h, w) for a in self.anns[(image_id, cls)]]
        union = torch.stack(objects).any(0)
        return union, torch.zeros_like(union), objects


class FewShotEpisodes(EpochChoices, Dataset):
    """Episodes of a fold (see the module doc); samples match llafs-pseudo's keys plus class_ids,
    class_names, query_ignore and (with attributes) attributes."""

    def __init__(
        self,
        root,
        dataset: str = "pascal",
        fold: int = 0,
        shots: int = 1,
        split: str = "val",
        size: int = 512,
        episodes: int = 1000,
        seed: int = 0,
        min_object_area: int = 64,
        attributes: str | None = None,
    ):
        if shots < 1:
            raise ValueError(f"shots must be >= 1, got {shots}")
        if split not in ("train", "val"):
            raise ValueError(f"split must be train or val, got {split!r}")
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"root {root} is not a directory")
        if dataset not in ("pascal", "coco"):
            raise ValueError(f"dataset must be pascal or coco, got {dataset!r}")
        self.source = (_Pascal if dataset == "pascal" else _Coco)(root, split, fold)
        self.classes = sorted({c for _, c in self.source.pairs})
        self.by_class: dict = {}
        for key, cls in self.source.pairs:
            self.by_class.setdefault(cls, []).append(key)
        for cls, keys in self.by_class.items():
            if len(keys) < shots + 1:
                raise ValueError(
                    f"class {cls} ({self.source.names[cls]}) has {len(keys)} images; an episode "
                    f"needs shots + 1 = {shots + 1}"
                )
        self.shots, self.size, self.episodes, self.seed, self.split = shots, size, episodes, seed, split
        self.min_object_area = min_object_area
        self.attributes = json.loads(Path(attributes).read_text()) if attributes else None

    def __len__(self) -> int:
        return self.episodes

    def _view(self, key, cls):
        img = _resize_image(self.source.image(key), self.size)
        mask, ignore, objects = self.source.masks(key, cls)
        mask, ignore = _resize_mask(mask, self.size), _resize_mask(ignore, self.size)
        objects = [_resize_mask(o, self.size) for o in objects] if objects is not None else connected_components(mask)
        objects = [o for o in objects if int(o.sum()) >= self.min_object_area]
        polygons = (
            mask_to_polar_polygons(torch.stack(objects)) if objects else torch.zeros(0, 16, 2, dtype=torch.float64)
        )
        return img, mask, ignore, polygons

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.episodes:
            raise IndexError(index)
        g = torch.Generator().manual_seed(self.rng(index).getrandbits(32))
        query_key, cls = self.source.pairs[int(torch.randint(len(self.source.pairs), (1,), generator=g))]
        others = [k for k in self.by_class[cls] if k != query_key]
        picks = torch.randperm(len(others), generator=g)[: self.shots].tolist()
        supports = [self._view(others[i], cls) for i in picks]
        q_img, q_mask, q_ignore, q_polys = self._view(query_key, cls)
        sample = {
            "support_images": torch.stack([s[0] for s in supports]),
            "support_masks": torch.stack([s[1] for s in supports]),
            "support_polygons": [s[3] for s in supports],
            "query_image": q_img,
            "query_mask": q_mask,
            "query_ignore": q_ignore,
            "query_polygons": q_polys,
            "class_ids": cls,
            "class_names": self.source.names[cls],
        }
        if self.attributes is not None:
            sample["attributes"] = self.attributes.get(self.source.names[cls], [])
        return sample


@dataset("fewshot")
def fewshot_episodes(options: dict, split: str, seed: int) -> FewShotEpisodes:
    """FewShotEpisodes of the fold: the engine's eval split reads the val lists."""
    return FewShotEpisodes(seed=seed, split="train" if split == "train" else "val", **options)


# The layouts this reader expects (segfast.data.layout: `segfast data check`, docs/data.md).
def _pascal_index(root: Path, split: str, options: dict) -> Index:
    counts, names = {}, set()
    for fold in range(4):
        pairs = _Pascal(root, "train" if split == "trn" else "val", fold).pairs
        counts[f"fold{fold} (image, class) pairs"] = len(pairs)
        names |= {n for n, _ in pairs}
    files = [root / "JPEGImages" / f"{n}.jpg" for n in names] + [
        root / "SegmentationClassAug" / f"{n}.png" for n in names
    ]
    return Index(counts, tuple(str(f) for f in sorted(files)))


def _coco_index(root: Path, split: str, options: dict) -> Index:
    source = _Coco(root, "train" if split == "train2014" else "val", 0)
    counts = {"images": len(source.images), "annotations": sum(len(a) for a in source.anns.values())}
    return Index(counts, tuple(str(source.dir / im["file_name"]) for im in source.images.values()))


declare(
    Layout(
        name="pascal5i",
        title="PASCAL-5i (VOC 2012 with SBD's augmented masks, HSNet's fold lists)",
        download=(
            "VOC 2012: http://host.robots.ox.ac.uk/pascal/VOC/voc2012/ (JPEGImages); SegmentationClassAug: "
            "the SBD-augmented masks HSNet and PFENet link (https://github.com/juhongm999/hsnet#preparing-few-shot-"
            "segmentation-datasets); fold lists: HSNet's data/splits/pascal/{trn,val}/fold<i>.txt"
        ),
        readers={"fewshot": {"dataset": "pascal"}},
        needs=(
            Need("JPEGImages", "the VOC 2012 images", files="*.jpg", sample=image_size),
            Need(
                "SegmentationClassAug",
                "a class-index mask <name>.png per image (0 background, 1-20, 255 ignore)",
                files="*.png",
                sample=label_values(20),
            ),
            *(
                Need(
                    f"splits/pascal/{{split}}/fold{i}.txt",
                    "HSNet's '<name>__<class>' list (without it the reader scans every mask, train and val alike)",
                )
                for i in range(4)
            ),
        ),
        splits={"train": "trn", "val": "val"},
        index=_pascal_index,
        published={"": {"JPEGImages": 17125, "SegmentationClassAug": 12031}},
        source="VOC 2012 (17,125 images) and SBD's augmented set (10,582 train + 1,449 val masks)",
    ),
    Layout(
        name="coco20i",
        title="COCO-20i (COCO 2014, HSNet / PFENet's interleaved folds)",
        download="https://cocodataset.org/#download (train2014.zip, val2014.zip, annotations_trainval2014.zip)",
        readers={"fewshot": {"dataset": "coco"}},
        needs=(
            Need("annotations/instances_{split}.json", "the COCO instances (polygons, RLE for crowds)"),
            Need("{split}", "the images the instances name", files="*.jpg", sample=image_size),
        ),
        splits={"train": "train2014", "val": "val2014"},
        index=_coco_index,
        published={
            "train": {"{split}": 82783, "images": 82783},
            "val": {"{split}": 40504, "images": 40504},
        },
        source="COCO 2014 (cocodataset.org): 82,783 train and 40,504 val images",
    ),
)
