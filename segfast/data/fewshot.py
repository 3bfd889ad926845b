"""Few-shot segmentation episodes in the PASCAL-5i and COCO-20i layouts (LLaFS's benchmarks).

PASCAL-5i (root = VOC2012 with SBD's augmented masks, as HSNet / PFENet use it; VOC from
host.robots.ox.ac.uk, SegmentationClassAug from the SBD conversion HSNet's README links):
    root/JPEGImages/<name>.jpg
    root/SegmentationClassAug/<name>.png     class index per pixel: 0 background, 1-20, 255 ignore
    root/splits/pascal/{trn,val}/fold<i>.txt HSNet's lists (data/splits in its repository), one
                                             "<name>__<class>" per line; trn/fold<i> holds fold i's
                                             own classes, so training reads the other three folds'
    root/ImageSets/Segmentation/val.txt      without HSNet's lists: VOC's 1449 val images are the
                                             test images, every other mask is a training image
COCO-20i (COCO 2014 from cocodataset.org): training reads train2014, testing val2014
    root/annotations/instances_{train2014,val2014}.json
    root/{train2014,val2014}/<file_name>
    category ids map to classes 1-80 in ascending id order; polygon annotations are rasterized
    by segfast (pycocotools' rule), RLE ones (crowds) are decoded with pycocotools.

Folds: PASCAL fold i tests classes 5i+1 .. 5i+5; COCO fold i tests classes 4k + i + 1,
k = 0..19 (the interleaved split of HSNet / PFENet's use_split_coco). The "train" split samples
queries of the other classes, "val" those of the fold.

Training: one epoch is every (image, class) pair of the split once as the query (HSNet's), its
`shots` supports drawn anew every epoch, and the augmentation of LLaFS Supp B (random resize,
noise padding, random crop that never cuts a support's foreground, horizontal flip), drawn anew
every epoch too (segfast.data.rng).

Evaluation: `episodes` episodes per run and `seeds` runs (BAM: 1000 x 5), the query drawn per
(image, class) pair ("pairs", HSNet's PASCAL) or class first ("classes", HSNet's COCO-20i: every
class equally often); `min_class_pixels` drops pairs whose class covers fewer pixels of the
original label (PFENet / BAM: 2 * 32 * 32; HSNet: 0). An episode carries the query's label at its
original size (original_mask, original_ignore: PASCAL's 255) for scoring there
(segfast.models.llafs.scoring): per class, intersections and unions summed over its episodes,
IoU_c = I_c / U_c, the mean over the fold's classes, averaged over the runs.

Masks are the class's pixels after resizing to size x size (nearest; images bilinear with
antialiasing). The query's objects are the COCO instances, or for PASCAL the mask's 8-connected
components; objects smaller than min_object_area pixels are left out of the polygons (never out of
the mask). Polygons are polar num_vertices-gons (segfast.ops.mask_to_polar_polygons; the paper's
16, Fig. 5 ablates the number, and model.options.num_vertices must match).

Fine-grained instruction inputs: `attributes` (a JSON {class name: [phrases]}) gives each episode
its class's attributes; `tables` (the JSON lines of `segfast llafs-tables`) gives each support
image its region-attribute table, the regions' polygons carried through the same resizing and
augmentation as the image, and the attributes the table was built with.
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
from segfast.ops import object_polygons
from segfast.registry import dataset
from segfast.text.fewshot import PASCAL_CLASSES

IGNORE = 255
SCALES = (0.8, 1.25)  # ours: LLaFS's random resize range is not given (PFENet's is 0.9-1.1)


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


def _resize_mask(mask: torch.Tensor, size) -> torch.Tensor:
    size = (size, size) if isinstance(size, int) else tuple(size)
    return F.interpolate(mask[None, None].float(), size=size, mode="nearest")[0, 0] > 0.5


def _read_list(path: Path) -> list:
    pairs = []
    for line in path.read_text().split():
        name, cls = line.rsplit("__", 1)
        pairs.append((name, int(cls)))
    return pairs


class _Pascal:
    def __init__(self, root: Path, split: str, fold: int):
        self.root = root
        self.names = {c: PASCAL_CLASSES[c - 1] for c in range(1, 21)}
        wanted = set(fold_classes("pascal", fold))
        if split == "train":
            wanted = set(range(1, 21)) - wanted
        lists = root / "splits" / "pascal"
        if lists.is_dir():  # HSNet: train on the other folds' trn lists, test on val/fold<i>
            folds = [f for f in range(4) if f != fold] if split == "train" else [fold]
            sub = "trn" if split == "train" else "val"
            files = [lists / sub / f"fold{f}.txt" for f in folds]
            missing = [str(f) for f in files if not f.exists()]
            if missing:
                raise FileNotFoundError(f"HSNet split lists missing: {', '.join(missing)} (see segfast.data.fewshot)")
            pairs = [p for f in files for p in _read_list(f)]
        else:
            pairs = self._scan(split)
        self.pairs = [(n, c) for n, c in pairs if c in wanted]

    def _scan(self, split):
        from tqdm import tqdm

        val_list = self.root / "ImageSets" / "Segmentation" / "val.txt"
        if not val_list.exists():
            raise FileNotFoundError(
                f"{self.root}: neither HSNet's splits/pascal lists nor VOC's ImageSets/Segmentation/val.txt, "
                "so training and test images cannot be told apart (see segfast.data.fewshot)"
            )
        val = set(val_list.read_text().split())
        files = sorted((self.root / "SegmentationClassAug").glob("*.png"))
        files = [f for f in files if (f.stem in val) == (split == "val")]
        if not files:
            raise FileNotFoundError(f"{self.root}: no SegmentationClassAug/*.png masks for the {split} split")
        pairs = []
        for f in tqdm(files, desc="indexing masks", disable=len(files) < 500):
            labels = _load_labels(f)
            pairs += [(f.stem, int(c)) for c in labels.unique().tolist() if 1 <= c <= 20]
        return pairs

    def image(self, name):
        return _load_rgb(self.root / "JPEGImages" / f"{name}.jpg")

    def masks(self, name, cls):
        """(class mask, ignore mask, object masks or None) at the image's size."""
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


def _read_tables(path) -> dict:
    """`segfast llafs-tables` output: one JSON object per line, keyed by "<image>__<class>"."""
    tables = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            tables[row["key"]] = row
    return tables


class FewShotEpisodes(EpochChoices, Dataset):
    """Episodes of a fold (see the module doc); samples match llafs-pseudo's keys plus class_ids,
    class_names, query_ignore, episode_run / episode_runs, (val) original_mask / original_ignore,
    and with attributes or tables: attributes, support_tables."""

    def __init__(
        self,
        root,
        dataset: str = "pascal",
        fold: int = 0,
        shots: int = 1,
        split: str = "val",
        size: int = 384,
        episodes: int = 1000,
        seed: int = 0,
        min_object_area: int = 64,
        attributes: str | None = None,
        tables: str | None = None,
        seeds: int = 1,
        sampling: str | None = None,
        min_class_pixels: int = 0,
        augment: bool = True,
        num_vertices: int = 16,
    ):
        if num_vertices < 3:
            raise ValueError(f"num_vertices must be >= 3, got {num_vertices}")
        if shots < 1:
            raise ValueError(f"shots must be >= 1, got {shots}")
        if split not in ("train", "val"):
            raise ValueError(f"split must be train or val, got {split!r}")
        if seeds < 1 or episodes < 1:
            raise ValueError(f"episodes and seeds must be >= 1, got {episodes} and {seeds}")
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"root {root} is not a directory")
        if dataset not in ("pascal", "coco"):
            raise ValueError(f"dataset must be pascal or coco, got {dataset!r}")
        sampling = sampling or ("classes" if dataset == "coco" else "pairs")
        if sampling not in ("pairs", "classes"):
            raise ValueError(f"sampling must be pairs or classes, got {sampling!r}")
        self.source = (_Pascal if dataset == "pascal" else _Coco)(root, split, fold)
        if min_class_pixels:
            self.source.pairs = [
                p for p in self.source.pairs if int(self.source.masks(*p)[0].sum()) >= min_class_pixels
            ]
        if not self.source.pairs:
            raise ValueError(f"{dataset} fold {fold} {split}: no (image, class) pairs")
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
        self.shots, self.size, self.seed, self.split, self.sampling = shots, size, seed, split, sampling
        self.episodes, self.seeds = episodes, seeds
        self.min_object_area, self.augment = min_object_area, augment and split == "train"
        self.num_vertices = num_vertices
        self.attributes = json.loads(Path(attributes).read_text()) if attributes else None
        self.tables = _read_tables(tables) if tables else None

    def __len__(self) -> int:
        return len(self.source.pairs) if self.split == "train" else self.episodes * self.seeds

    def _view(self, key, cls, g, support: bool):
        img = _resize_image(self.source.image(key), self.size)
        mask, ignore, objects = self.source.masks(key, cls)
        original = (mask, ignore)
        scale = (self.size / mask.shape[1], self.size / mask.shape[0])
        mask, ignore = _resize_mask(mask, self.size), _resize_mask(ignore, self.size)
        objects = [_resize_mask(o, self.size) for o in objects] if objects is not None else None
        table = self._table(key, cls, scale)
        if self.augment:
            img, mask, ignore, objects, table = augment(g, img, mask, ignore, objects, table, support)
        if objects is None:
            objects = connected_components(mask)
        objects = [o for o in objects if int(o.sum()) >= self.min_object_area]
        polygons = object_polygons(objects, self.num_vertices)
        return {
            "image": img,
            "mask": mask,
            "ignore": ignore,
            "polygons": polygons,
            "table": table,
            "original": original,
        }

    def _table(self, key, cls, scale):
        if self.tables is None:
            return None
        row = self.tables.get(f"{key}__{cls}")
        if row is None:
            raise KeyError(
                f"tables: no region-attribute table for {key}__{cls} (run segfast llafs-tables on this split)"
            )
        sx, sy = scale
        regions = [
            {
                "polygon": torch.tensor(r["polygon"], dtype=torch.float64) * torch.tensor([sx, sy]),
                "attributes": r["attributes"],
            }
            for r in row["regions"]
        ]
        return {"attributes": row["attributes"], "regions": regions}

    def _query(self, g, index):
        pairs = self.source.pairs
        if self.split == "train":
            return pairs[index]
        if self.sampling == "classes":
            cls = self.classes[int(torch.randint(len(self.classes), (1,), generator=g))]
            keys = self.by_class[cls]
            return keys[int(torch.randint(len(keys), (1,), generator=g))], cls
        return pairs[int(torch.randint(len(pairs), (1,), generator=g))]

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(index)
        g = torch.Generator().manual_seed(self.rng(index).getrandbits(32))
        query_key, cls = self._query(g, index)
        others = [k for k in self.by_class[cls] if k != query_key]
        picks = torch.randperm(len(others), generator=g)[: self.shots].tolist()
        supports = [self._view(others[i], cls, g, support=True) for i in picks]
        query = self._view(query_key, cls, g, support=False)
        sample = {
            "support_images": torch.stack([s["image"] for s in supports]),
            "support_masks": torch.stack([s["mask"] for s in supports]),
            "support_polygons": [s["polygons"] for s in supports],
            "query_image": query["image"],
            "query_mask": query["mask"],
            "query_ignore": query["ignore"],
            "query_polygons": query["polygons"],
            "class_ids": cls,
            "class_names": self.source.names[cls],
            "episode_run": 0 if self.split == "train" else index // self.episodes,
            "episode_runs": self.seeds,
        }
        if self.split == "val":
            sample["original_mask"], sample["original_ignore"] = query["original"]
        if self.tables is not None:
            sample["support_tables"] = [s["table"]["regions"] for s in supports]
            merged = [a for s in supports for a in s["table"]["attributes"]]
            sample["attributes"] = list(dict.fromkeys(merged))
        elif self.attributes is not None:
            sample["attributes"] = self.attributes.get(self.source.names[cls], [])
        return sample


def augment(g, img, mask, ignore, objects, table, support: bool):
    """LLaFS Supp B: random resize, noise padding, random crop, horizontal flip, of a view at
    size x size (its masks and table polygons alike). A support's crop never cuts its
    foreground: its scale is capped so the foreground's box fits, and the crop contains it."""
    size = img.shape[-1]
    lo, hi = SCALES
    box = _box(mask)
    if support and box is not None:
        hi = max(lo, min(hi, size / max(box[2] - box[0], box[3] - box[1])))
    scale = lo + (hi - lo) * float(torch.rand(1, generator=g))
    new = max(1, round(size * scale))
    img = F.interpolate(img[None], size=(new, new), mode="bilinear", align_corners=False)[0]
    masks = [mask, ignore] + list(objects or [])
    masks = [_resize_mask(m, new) for m in masks]
    canvas = max(new, size)
    noise = torch.rand(3, canvas, canvas, generator=g)  # noise padding
    pad = [(canvas - new) // 2] * 2
    canvas_img = noise.clone()
    canvas_img[:, pad[1] : pad[1] + new, pad[0] : pad[0] + new] = img
    placed = []
    for k, m in enumerate(masks):
        c = torch.full((canvas, canvas), k == 1, dtype=torch.bool)  # padding is ignored, never foreground
        c[pad[1] : pad[1] + new, pad[0] : pad[0] + new] = m
        placed.append(c)
    x0, y0 = _crop_origin(g, canvas, size, _box(placed[0]) if support else None)
    crop = (slice(y0, y0 + size), slice(x0, x0 + size))
    img = canvas_img[:, crop[0], crop[1]]
    placed = [m[crop] for m in placed]
    flip = bool(torch.rand(1, generator=g) < 0.5)
    if flip:
        img, placed = img.flip(-1), [m.flip(-1) for m in placed]
    if table is not None:
        ratio = new / size

        def move(p):
            p = p * ratio + torch.tensor([pad[0] - x0, pad[1] - y0], dtype=p.dtype)
            return torch.stack([size - p[:, 0], p[:, 1]], 1) if flip else p

        table = {**table, "regions": [{**r, "polygon": move(r["polygon"])} for r in table["regions"]]}
    objects = placed[2:] if objects is not None else None
    return img, placed[0], placed[1], objects, table


def _box(mask: torch.Tensor):
    """(x0, y0, x1, y1) of a mask's pixels (exclusive end), None if empty."""
    ys, xs = torch.nonzero(mask, as_tuple=True)
    if len(xs) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _crop_origin(g, canvas: int, size: int, keep) -> tuple[int, int]:
    """A random crop origin; with `keep` (a box), one whose crop contains the box."""
    room = canvas - size
    lo, hi = [0, 0], [room, room]
    if keep is not None:
        for axis in (0, 1):
            lo[axis] = max(0, min(room, keep[axis + 2] - size))
            hi[axis] = max(lo[axis], min(room, keep[axis]))
    return tuple(lo[a] + int(torch.randint(hi[a] - lo[a] + 1, (1,), generator=g)) for a in (0, 1))


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
