"""Referring / reasoning segmentation data for LLM-Seg: a query, a target mask and the image's
SAM proposals (from `segfast proposals`).

Layouts read (local paths):
  reasonseg   <root>/<split>/<name>.jpg + <name>.json as LISA's ReasonSeg:
              {"text": [queries], "is_sentence": bool, "shapes": [{"label": str, "points": [[x, y],
              ...]}]}, read as LISA's get_mask_from_json reads it (annotation_masks): "flag" shapes
              are skipped, the others filled largest first; a label containing "ignore" marks
              ignored pixels (255: left out of every metric), any other label is target.
  llmseg40k   <root>/<split>.json: a list of {"image": path under <root>/images, "query": str or
              [str], "segmentation": COCO polygons [[x, y, ...], ...] or COCO RLE}
              (LLM-Seg40K's fields mapped to these names; see the README).
  refcoco     <root>/<dataset>/refs(<split_by>).p and instances.json (the `refer` toolkit
              layout), images under <root>/images/train2014; every sentence of a ref in `split`.
  synthetic   generated rectangles with a coloured target named by the query; proposals are
              the rectangles, some unions and noise boxes (no files; the built-in default).

Polygons are rasterized with segfast (pycocotools' rule; LISA fills them with OpenCV, about half
a pixel fatter); the image, the target and every proposal are resized to image_size x image_size
(nearest for masks), proposals packed and padded to max_proposals with empty masks
(proposal_valid says which are real). The engine's "eval" split reads the files' eval_split (val
by default; file_split) and scores the benchmark's queries (benchmark_queries), each sample also
carrying its target, ignored pixels and proposals at the image's original resolution.
"""

import json
import pickle
import random
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from segfast.data.coco_masks import segmentation_mask
from segfast.data.layout import Index, Layout, Need, declare, image_size
from segfast.data.rng import EpochChoices, content_rng
from segfast.frames import read_rgb
from segfast.ops import pack_masks, unpack_masks
from segfast.ops.packing import packed_row_bytes
from segfast.registry import dataset
from segfast.text.synthetic import COLOUR_NAMES

FORMATS = ("reasonseg", "llmseg40k", "refcoco", "synthetic")
COLOURS = dict(
    zip(COLOUR_NAMES, [(220, 30, 30), (30, 200, 60), (40, 60, 220), (230, 220, 40), (245, 245, 245), (15, 15, 15)])
)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # DINOv2's ImageNet normalisation


def file_split(split: str, eval_split: str = "val") -> str:
    """The split to read from the files: the engine asks for "train" or "eval", and the files
    name their evaluation split val, test, testA, ... (eval_split)."""
    return eval_split if split == "eval" else split


def read_reasonseg(root: Path, split: str) -> list:
    folder = root / split
    if not folder.is_dir():
        raise FileNotFoundError(f"root: no ReasonSeg split folder {folder}")
    samples = []
    for meta in sorted(folder.glob("*.json")):
        data = json.loads(meta.read_text())
        samples.append(
            {
                "image": meta.with_suffix(".jpg"),
                "queries": list(data["text"]),
                "is_sentence": bool(data.get("is_sentence", True)),
                "shapes": list(data["shapes"]),
            }
        )
    return samples


def annotation_masks(entry: dict, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(target, ignore) (H, W) bool of a reader's entry. ReasonSeg shapes as LISA's
    get_mask_from_json paints them: "flag" shapes skipped, the rest filled largest first (a
    smaller shape wins the pixels it shares with a larger one), a label containing "ignore" paints
    ignored pixels, any other label target; other formats have no ignored pixels."""
    if "shapes" not in entry:
        target = segmentation_mask(entry["segmentation"], height, width)
        return target, torch.zeros_like(target)
    shapes = [s for s in entry["shapes"] if s.get("label", "").lower() != "flag"]
    masks = [segmentation_mask([s["points"]], height, width) for s in shapes]
    label = torch.zeros(height, width, dtype=torch.uint8)
    for k in sorted(range(len(shapes)), key=lambda k: -int(masks[k].sum())):
        label[masks[k]] = 255 if "ignore" in shapes[k].get("label", "").lower() else 1
    return label == 1, label == 255


def benchmark_queries(entries: list) -> list:
    """(entry, query index) pairs a benchmark scores, as LISA's ValDataset reads them: ReasonSeg
    the first text of each json (text[0]); refCOCO/+/g and LLM-Seg40K every query of every
    annotation."""
    return [(e, q) for e in entries for q in ([0] if "shapes" in e else range(len(e["queries"])))]


def read_llmseg40k(root: Path, split: str) -> list:
    path = root / f"{split}.json"
    if not path.is_file():
        raise FileNotFoundError(f"root: no LLM-Seg40K annotation file {path}")
    samples = []
    for rec in json.loads(path.read_text()):
        queries = rec["query"] if isinstance(rec["query"], list) else [rec["query"]]
        samples.append(
            {
                "image": root / "images" / rec["image"],
                "queries": queries,
                "is_sentence": True,
                "segmentation": rec["segmentation"],
            }
        )
    return samples


def read_refcoco(root: Path, split: str, dataset: str = "refcoco", split_by: str = "unc") -> list:
    refs_path, inst_path = root / dataset / f"refs({split_by}).p", root / dataset / "instances.json"
    for p in (refs_path, inst_path):
        if not p.is_file():
            raise FileNotFoundError(f"root: missing {p} (refer toolkit layout)")
    with open(refs_path, "rb") as f:
        refs = pickle.load(f)
    inst = json.loads(inst_path.read_text())
    anns = {a["id"]: a for a in inst["annotations"]}
    images = {i["id"]: i for i in inst["images"]}
    samples = []
    for ref in refs:
        if ref["split"] != split:
            continue
        ann, info = anns[ref["ann_id"]], images[ref["image_id"]]
        # sentences as LISA reads them (sent.strip().lower())
        samples.append(
            {
                "image": root / "images" / "train2014" / info["file_name"],
                "is_sentence": False,
                "queries": [s["sent"].strip().lower() for s in ref["sentences"]],
                "segmentation": ann["segmentation"],
            }
        )
    return samples


def read_entries(
    format: str, root: str, split: str, eval_split: str = "val", dataset: str = "refcoco", split_by: str = "unc"
) -> list:
    """The entries of a layout for the engine's split ("train" or "eval": the files' eval_split),
    an error naming the root when there are none."""
    if not root:
        raise ValueError(f"root is required for format={format!r}")
    files = file_split(split, eval_split)
    read = {
        "reasonseg": read_reasonseg,
        "llmseg40k": read_llmseg40k,
        "refcoco": lambda r, s: read_refcoco(r, s, dataset, split_by),
    }[format]
    entries = read(Path(root), files)
    if not entries:
        raise ValueError(f"no {format} samples for split {files!r} under {root}")
    return entries


def _resize_masks(masks: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(masks[:, None].float(), size=(size, size), mode="nearest")[:, 0] > 0.5


def _image_tensor(image: np.ndarray, size: int) -> torch.Tensor:
    x = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 255
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]
    return (x - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]


def _pad(packed: torch.Tensor, k: int):
    if len(packed) > k:
        raise ValueError(f"{len(packed)} proposals exceed max_proposals={k}")
    out = torch.zeros(k, *packed.shape[1:], dtype=torch.uint8)
    out[: len(packed)] = packed
    valid = torch.zeros(k, dtype=torch.bool)
    valid[: len(packed)] = True
    return out, valid


@dataset("referring")
class ReferringSegmentation(EpochChoices, torch.utils.data.Dataset):
    """Samples {image, query, proposals, proposal_valid, gt_mask} (see the module doc); in
    training the query of a real annotation is drawn anew every epoch, in evaluation every
    benchmark query is a sample, with original_masks (1, H, W), original_ignore (H, W) and
    original_proposals (K, H, 8*ceil(W/64)) packed at the image's resolution. A synthetic sample
    is fixed per index."""

    def __init__(
        self,
        format: str = "synthetic",
        root: str = "",
        split: str = "train",
        proposals: str = "",
        image_size: int = 56,
        max_proposals: int = 32,
        seed: int = 0,
        length: int = 256,
        dataset: str = "refcoco",
        split_by: str = "unc",
        eval_split: str = "val",
    ):
        if format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
        self.format, self.size, self.k, self.seed, self.split = format, int(image_size), int(max_proposals), seed, split
        if format == "synthetic":
            self.items = list(range(int(length)))
            return
        if not proposals:
            raise ValueError("proposals: the folder written by `segfast proposals` for these images is required")
        self.root, self.proposals = Path(root), Path(proposals)
        entries = read_entries(format, root, split, eval_split, dataset, split_by)
        self.items = benchmark_queries(entries) if split == "eval" else [(e, None) for e in entries]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        if self.format == "synthetic":
            return self._synthetic(content_rng(self.seed, self.split, i))
        from segfast.data.proposals import load_proposals

        entry, q = self.items[i]
        image = read_rgb(entry["image"])
        h, w = image.shape[:2]
        target, ignore = annotation_masks(entry, h, w)
        rel = Path(entry["image"]).relative_to(self.root).with_suffix(".json")
        name = self.proposals / rel
        if not name.is_file():
            name = self.proposals / Path(entry["image"]).with_suffix(".json").name
        packed, _ = load_proposals(name, top_k=self.k)

        props = (
            pack_masks(_resize_masks(unpack_masks(packed, w), self.size))
            if len(packed)
            else torch.zeros(0, self.size, packed_row_bytes(self.size), dtype=torch.uint8)
        )
        proposals, valid = _pad(props, self.k)
        query = entry["queries"][q] if q is not None else self.rng(i).choice(entry["queries"])
        sample = {
            "image": _image_tensor(image, self.size),
            "query": query,
            "proposals": proposals,
            "proposal_valid": valid,
            "gt_mask": _resize_masks(target[None], self.size)[0],
        }
        return self._with_original(sample, target, ignore, packed)

    def _with_original(self, sample: dict, target, ignore, packed) -> dict:
        """Evaluation samples also carry what the metrics read at the original resolution."""
        if self.split != "eval":
            return sample
        return {**sample, "original_masks": target[None], "original_ignore": ignore, "original_proposals": packed}

    def _synthetic(self, rng: random.Random) -> dict:
        s = self.size
        names = rng.sample(sorted(COLOURS), 4)
        image = np.full((s, s, 3), 128, np.uint8)
        boxes = []
        for name in names:
            bh, bw = rng.randint(s // 6, s // 2), rng.randint(s // 6, s // 2)
            y, x = rng.randint(0, s - bh), rng.randint(0, s - bw)
            image[y : y + bh, x : x + bw] = COLOURS[name]
            boxes.append((y, x, bh, bw))
        # later rectangles cover earlier ones: each visible region is a proposal
        label = np.full((s, s), -1)
        for j, (y, x, bh, bw) in enumerate(boxes):
            label[y : y + bh, x : x + bw] = j
        regions = [torch.from_numpy(label == j) for j in range(len(boxes)) if (label == j).any()]
        visible = [names[j] for j in range(len(boxes)) if (label == j).any()]
        target = rng.randrange(len(regions))
        extra = [regions[0] | regions[-1]]
        for _ in range(3):  # noise boxes
            y, x = rng.randint(0, s - 4), rng.randint(0, s - 4)
            m = torch.zeros(s, s, dtype=torch.bool)
            m[y : y + rng.randint(2, s // 3), x : x + rng.randint(2, s // 3)] = True
            extra.append(m)
        order = list(range(len(regions) + len(extra)))
        rng.shuffle(order)
        props = pack_masks(torch.stack(regions + extra)[order])
        proposals, valid = _pad(props, self.k)
        sample = {
            "image": _image_tensor(image, s),
            "query": f"segment the {visible[target]} box",
            "proposals": proposals,
            "proposal_valid": valid,
            "gt_mask": regions[target],
        }
        return self._with_original(sample, regions[target], torch.zeros(s, s, dtype=torch.bool), props)


# The layouts these readers expect (segfast.data.layout: `segfast data check`, docs/data.md).
def _readers(names, **options) -> dict:
    return {name: options for name in names}


LISA_FAMILY = ("seg-conversations", "seg-queries", "referring")  # the readers of reasonseg and refcoco


def _entries_index(read, entries: str, queries: str) -> callable:
    """An Index from a reader of entries: how many entries and queries (named as the dataset
    names them), and the image files they name."""

    def index(root: Path, split: str, options: dict) -> Index:
        read_entries = read(root, split, options)
        counts = {entries: len(read_entries), queries: sum(len(e["queries"]) for e in read_entries)}
        return Index(counts, tuple(sorted({str(e["image"]) for e in read_entries})))

    return index


def _json_fields(*fields):
    def sample(path: Path) -> str:
        data = json.loads(Path(path).read_text())
        first = data[0] if isinstance(data, list) and data else data
        absent = [f for f in fields if not isinstance(first, dict) or f not in first]
        if absent:
            raise ValueError(f"no field {absent[0]!r}")
        return f"{len(data)} records" if isinstance(data, list) else "fields ok"

    return sample


def _refer(name, title, dataset, split_by, splits, published=None, images="train2014", source="", notes=""):
    return Layout(
        name=name,
        title=title,
        download=(
            "annotations: https://github.com/lichengunc/refer (refs(*).p and instances.json per dataset, "
            "the `refer` toolkit's data/ folder); images: COCO train2014 (https://cocodataset.org/#download)"
        ),
        readers=_readers(LISA_FAMILY, format="refcoco", dataset=dataset, split_by=split_by),
        needs=(
            Need(f"{dataset}/refs({split_by}).p", "the referring expressions with their split (a pickle)"),
            Need(f"{dataset}/instances.json", "the COCO images and annotations the refs point to"),
            Need(f"images/{images}", "the images the instances name", files="*.jpg", sample=image_size),
        ),
        splits={s: s for s in splits},
        index=_entries_index(
            lambda root, split, o: read_refcoco(root, split, dataset, split_by), "refs", "expressions"
        ),
        published=published or {},
        source=source,
        notes=notes,
    )


_UNC = "the refer toolkit's UNC partition, refs and expressions per split (Yu et al., ECCV 2016"
declare(
    Layout(
        name="reasonseg",
        title="ReasonSeg (LISA)",
        download="https://github.com/dvlab-research/LISA#dataset (ReasonSeg, Google Drive)",
        readers=_readers(LISA_FAMILY, format="reasonseg"),
        needs=(
            Need(
                "{split}",
                "<name>.json annotations (text, is_sentence, shapes) beside their <name>.jpg images",
                files="*.json",
                sample=_json_fields("text", "shapes"),
            ),
        ),
        splits={"train": "train", "val": "val", "test": "test"},
        index=_entries_index(lambda root, split, o: read_reasonseg(root, split), "annotated images", "texts"),
        published={
            "train": {"annotated images": 239},
            "val": {"annotated images": 200},
            "test": {"annotated images": 779},
        },
        source="LISA (Lai et al., CVPR 2024) §3.2: 239 train, 200 val and 779 test images",
    ),
    Layout(
        name="llmseg40k",
        title="LLM-Seg40K (LLM-Seg)",
        download="https://github.com/wangjunchi/LLMSeg (LLM-Seg40K annotations; images from COCO and EgoObjects)",
        readers={"referring": {"format": "llmseg40k"}},
        needs=(
            Need("{split}.json", "a list of {image, query, segmentation}", sample=_json_fields("image", "query")),
            Need("images/", "the images the annotations name (any subfolders)"),
        ),
        splits={"train": "train", "val": "val", "test": "test"},
        index=_entries_index(lambda root, split, o: read_llmseg40k(root, split), "records", "questions"),
        notes=(
            "The paper (§4.3) gives rounded counts: 14K images, 11K train, 1K val and 2K test, about 3.95 "
            "questions per training image; the field names are mapped as the README says."
        ),
    ),
    _refer(
        "refcoco",
        "RefCOCO (UNC splits)",
        "refcoco",
        "unc",
        ("train", "val", "testA", "testB"),
        {
            "train": {"expressions": 120624, "refs": 42404},
            "val": {"expressions": 10834, "refs": 3811},
            "testA": {"expressions": 5657, "refs": 1975},
            "testB": {"expressions": 5095, "refs": 1810},
        },
        source=_UNC + ": 142,209 expressions for 50,000 objects in 19,994 images)",
    ),
    _refer(
        "refcoco+",
        "RefCOCO+ (UNC splits)",
        "refcoco+",
        "unc",
        ("train", "val", "testA", "testB"),
        {
            "train": {"expressions": 120191, "refs": 42278},
            "val": {"expressions": 10758, "refs": 3805},
            "testA": {"expressions": 5726, "refs": 1975},
            "testB": {"expressions": 4889, "refs": 1798},
        },
        source=_UNC + ": 141,564 expressions for 49,856 objects in 19,992 images)",
    ),
    _refer(
        "refcocog",
        "RefCOCOg (UMD splits)",
        "refcocog",
        "umd",
        ("train", "val", "test"),
        {
            "train": {"expressions": 80512, "refs": 42226},
            "val": {"expressions": 4896, "refs": 2573},
            "test": {"expressions": 9602, "refs": 5023},
        },
        source="the UMD partition of Nagaraja et al. (ECCV 2016), refs and expressions per split: 95,010 "
        "expressions for 49,822 objects",
    ),
    _refer(
        "refclef",
        "RefCLEF (ReferItGame, UNC splits; LISA trains on its train split)",
        "refclef",
        "unc",
        ("train",),
        notes="No published per-split counts are compared: the UNC partition of refCLEF is the refer "
        "toolkit's. This reader looks for the images in images/train2014 as for the COCO family.",
    ),
)
