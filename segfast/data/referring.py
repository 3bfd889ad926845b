"""LLM-Seg's data: images with up to `questions_per_image` single-round conversations, each with
its target, and the image's SAM proposals (from `segfast proposals`) with each proposal's IoU
and IoP against each target. The readers of the public layouts here are shared: LISA's
conversations (segfast.data.conversations) and LLaVASeg's queries (segfast.data.queries) read
reasonseg and refcoco through read_entries too.

Layouts read (local paths):
  reasonseg   <root>/<split>/<name>.jpg + <name>.json as LISA's ReasonSeg:
              {"text": [queries], "is_sentence": bool, "shapes": [{"label": str, "points": [[x, y],
              ...]}]}, read as LISA's get_mask_from_json reads it (annotation_masks): "flag" shapes
              are skipped, the others drawn with OpenCV (vertices truncated to int, outline
              included) and filled largest first; a label containing "ignore" marks
              ignored pixels (255: left out of every metric), any other label is target.
  refcoco     <root>/<dataset>/refs(<split_by>).p and instances.json (the `refer` toolkit
              layout), images under <root>/images/train2014 (refclef: <root>/images/saiapr_tc-12);
              every sentence of a ref in `split`.
  llmseg40k   the released LLM-Seg40K (the Google Drive folder linked from the authors' README,
              github.com/wangjunchi/LLMSeg), in the authors' lisa_dataset layout:
                <root>/LLMSeg-40K/{train,validation,test}.json   (split "val" reads validation.json)
                <root>/coco/train2017/<image>          COCO 2017 train (LVIS's images)
                <root>/ego_objects/images/<image>      EgoObjects
              each file a dict keyed by image file name: {"from_dataset": "coco" | "ego_objects",
              "qa_pairs": [{"question": str, "answer": category, "rle_seg": COCO RLE {"size":
              [h, w], "counts": str}}]}; `image_roots` ({from_dataset: folder}, relative to root or
              absolute) moves the two image folders. Every question is its own sample (the
              authors' LLMSegDataset), asked as a sentence.
  ade20k, cocostuff, mapillary
              the semantic layouts of segfast.data.label_maps (ADEChallengeData2016; cocostuff's
              stuffthingmaps; Mapillary Vistas v2.0): LISA's sem_seg part of LLM-Seg's training
              mixture (the authors' also holds pascal_part and paco_lvis, not read here). Up to
              questions_per_image of the classes present are asked with LISA's short questions,
              the target being the class's pixels; COCO-Stuff classes whose name holds "-" are
              never asked (LISA's loader sets them to 255).
  synthetic   generated boxes; proposals are the boxes, a union and noise boxes (no files; the
              built-in default).

Proposals: `segfast proposals --images <root> --out <proposals>` writes one JSON per image at
<proposals>/<the image's path under root>.json (a flat <proposals>/<name>.json is read too).
LLM-Seg's are SAM everything mode on the image scaled to at most 1024 pixels (INTER_AREA); the
first max_proposals (50) of the file, largest first, are used. IoU and IoP targets are counted at
the proposals' resolution, the target resized there as the authors' compute_all_iou does
(skimage's order-0 resize) — the image's own resolution whenever its longer side is <= 1024.

Samples: image (3, S, S) the DINOv2 frame (longest side S = image_size, normalised, padded
bottom/right: segfast.frames.sam_frame), valid_size, clip_image (3, C, C) LLaVA's input (shorter
side C, centre crop: CLIPImageProcessor), conversations (single-round LISA conversations, one per
target), proposals (K, P, 8*ceil(P/64)) packed, padded square (P = the longer side),
proposal_size (2,) their unpadded (h, w), gt_iou and gt_iop (C, K) float. Training draws the
questions, templates and answers anew every epoch (segfast.data.rng). The engine's "eval" split
reads the files' eval_split (val by default) and scores every benchmark query once
(benchmark_queries) with LISA's fixed evaluation round, adding original_masks (C, H, W) and
original_ignore (H, W) at the image's resolution.
"""

import json
import pickle
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from segfast.data.coco_masks import segmentation_mask
from segfast.data.layout import Index, Layout, Need, declare, image_size
from segfast.data.rng import EpochChoices, content_rng
from segfast.frames import clip_input, read_rgb, sam_frame
from segfast.ops import mask_iop, mask_iou, pack_masks
from segfast.registry import dataset
from segfast.text.lisa import ask, benchmark_round
from segfast.text.synthetic import COLOUR_NAMES

SEMANTIC = ("ade20k", "cocostuff", "mapillary")
FORMATS = ("reasonseg", "llmseg40k", "refcoco", *SEMANTIC, "synthetic")
COLOURS = dict(
    zip(COLOUR_NAMES, [(220, 30, 30), (30, 200, 60), (40, 60, 220), (230, 220, 40), (245, 245, 245), (15, 15, 15)])
)
LLMSEG40K_FILES = {"val": "validation"}  # the released file names of segfast's split names
LLMSEG40K_IMAGES = {"coco": "coco/train2017", "ego_objects": "ego_objects/images"}


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
        if tuple(target.shape) != (height, width):
            raise ValueError(
                f"{entry['image']}: its segmentation is {tuple(target.shape)} but the image is {(height, width)}"
            )
        return target, torch.zeros_like(target)
    shapes = [s for s in entry["shapes"] if s.get("label", "").lower() != "flag"]
    masks = [lisa_polygon(s["points"], height, width) for s in shapes]
    label = torch.zeros(height, width, dtype=torch.uint8)
    # np.argsort(areas)[::-1]: largest first, equal areas in reverse file order
    for k in sorted(range(len(shapes)), key=lambda k: (-int(masks[k].sum()), -k)):
        label[masks[k]] = 255 if "ignore" in shapes[k].get("label", "").lower() else 1
    return label == 1, label == 255


def lisa_polygon(points, height: int, width: int) -> torch.Tensor:
    """(H, W) bool of one ReasonSeg shape as get_mask_from_json draws it: the vertices truncated to
    int32, the closed outline (1 px) and its inside filled with OpenCV (boundary pixels included)."""
    import cv2

    mask = np.zeros((height, width), np.uint8)
    polygon = np.array([points], dtype=np.int32)
    cv2.polylines(mask, polygon, True, 1, 1)
    cv2.fillPoly(mask, polygon, 1)
    return torch.from_numpy(mask.astype(bool))


def benchmark_queries(entries: list) -> list:
    """(entry, query index) pairs a benchmark scores, as LISA's ValDataset reads them: ReasonSeg
    the first text of each json (text[0]); refCOCO/+/g and LLM-Seg40K every query of every
    annotation."""
    return [(e, q) for e in entries for q in ([0] if "shapes" in e else range(len(e["queries"])))]


def read_llmseg40k(root: Path, split: str, image_roots: dict | None = None) -> list:
    """One entry per question of the released annotation file (see the module doc)."""
    path = root / "LLMSeg-40K" / f"{LLMSEG40K_FILES.get(split, split)}.json"
    if not path.is_file():
        raise FileNotFoundError(f"root: no LLM-Seg40K annotation file {path}")
    folders = {k: root / v for k, v in {**LLMSEG40K_IMAGES, **(image_roots or {})}.items()}
    samples = []
    for name, record in json.loads(path.read_text()).items():
        source = record["from_dataset"]
        if source not in folders:
            raise ValueError(f"{path}: image {name} comes from {source!r}; image_roots knows {sorted(folders)}")
        for qa in record["qa_pairs"]:
            samples.append(
                {
                    "image": folders[source] / name,
                    "queries": [qa["question"]],
                    "answer": qa["answer"],
                    "is_sentence": True,
                    "segmentation": qa["rle_seg"],
                }
            )
    return samples


IMAGE_FOLDERS = {"refclef": "saiapr_tc-12"}  # refCLEF's ImageCLEF images; the refCOCO family's are COCO train2014


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
                "image": root / "images" / IMAGE_FOLDERS.get(dataset, "train2014") / info["file_name"],
                "is_sentence": False,
                "queries": [s["sent"].strip().lower() for s in ref["sentences"]],
                "segmentation": ann["segmentation"],
            }
        )
    return samples


def read_entries(
    format: str,
    root: str,
    split: str,
    eval_split: str = "val",
    dataset: str = "refcoco",
    split_by: str = "unc",
    image_roots: dict | None = None,
) -> list:
    """The entries of a layout for the engine's split ("train" or "eval": the files' eval_split),
    an error naming the root when there are none."""
    if not root:
        raise ValueError(f"root is required for format={format!r}")
    files = file_split(split, eval_split)
    read = {
        "reasonseg": read_reasonseg,
        "llmseg40k": lambda r, s: read_llmseg40k(r, s, image_roots),
        "refcoco": lambda r, s: read_refcoco(r, s, dataset, split_by),
    }[format]
    entries = read(Path(root), files)
    if not entries:
        raise ValueError(f"no {format} samples for split {files!r} under {root}")
    return entries


def _order0_index(n_in: int, n_out: int) -> torch.Tensor:
    """Source index of each output pixel in skimage's resize(order=0) (scipy's zoom with
    grid_mode: pixel centres aligned, rounded half up), in its float64 arithmetic, ties included
    (checked against scikit-image on 300 random sizes)."""
    x = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    return torch.from_numpy(np.clip(np.floor(x + 0.5), 0, n_in - 1).astype(np.int64))


def resize_nearest(mask: torch.Tensor, size) -> torch.Tensor:
    """(H, W) -> size, as the authors' compute_all_iou resizes the target (skimage order 0)."""
    if tuple(mask.shape) == tuple(size):
        return mask
    rows, cols = _order0_index(mask.shape[0], size[0]), _order0_index(mask.shape[1], size[1])
    return mask[rows][:, cols]


def proposal_targets(proposals: torch.Tensor, width: int, targets: torch.Tensor) -> tuple:
    """(IoU, IoP) (C, K) float of K packed proposals (K, h, 8*ceil(w/64)) with C targets, each
    resized to the proposals' (h, w) first."""
    if len(proposals) == 0 or len(targets) == 0:
        return torch.zeros(len(targets), len(proposals)), torch.zeros(len(targets), len(proposals))
    size = (proposals.shape[1], width)
    gt = pack_masks(torch.stack([resize_nearest(t, size) for t in targets]))
    return mask_iou(gt, proposals).float(), mask_iop(proposals, gt).T.float()


def pad_square(packed: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Packed (K, height, row bytes of width) -> packed (K, P, row bytes of P), P = max side:
    zero rows and bits below and right (the authors' padding to a square)."""
    side = max(height, width)
    out = torch.zeros(len(packed), side, 8 * -(-side // 64), dtype=torch.uint8)
    out[:, :height, : packed.shape[-1]] = packed
    return out


@dataset("referring")
class ReferringSegmentation(EpochChoices, torch.utils.data.Dataset):
    """See the module doc. Training items: an image's annotations (reasonseg: its json; refcoco:
    its refs, their sentences pooled; semantic: its label map), or one LLM-Seg40K question;
    evaluation items: one benchmark query each. A synthetic scene is fixed per index."""

    def __init__(
        self,
        format: str = "synthetic",
        root: str = "",
        split: str = "train",
        proposals: str = "",
        image_size: int = 56,
        clip_size: int = 32,
        max_proposals: int = 50,
        questions_per_image: int = 3,
        seed: int = 0,
        length: int = 256,
        dataset: str = "refcoco",
        split_by: str = "unc",
        eval_split: str = "val",
        image_roots: dict | None = None,
    ):
        if format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
        for key, value in (("max_proposals", max_proposals), ("questions_per_image", questions_per_image)):
            if int(value) < 1:
                raise ValueError(f"{key} must be >= 1, got {value}")
        self.format, self.split, self.seed = format, split, seed
        self.size, self.clip_size = int(image_size), int(clip_size)
        self.k, self.questions = int(max_proposals), int(questions_per_image)
        if format == "synthetic":
            self.items = list(range(int(length)))
            return
        if not proposals:
            raise ValueError("proposals: the folder written by `segfast proposals` for these images is required")
        self.root, self.proposals = Path(root), Path(proposals)
        if format in SEMANTIC:
            from segfast.data.label_maps import read_label_maps

            self.label_maps = read_label_maps(format, root, "train" if split == "train" else "eval")
            self.items, self.classes = self.label_maps.pairs, self.label_maps.classes
            return
        entries = read_entries(format, root, split, eval_split, dataset, split_by, image_roots)
        if split == "eval":
            self.items = benchmark_queries(entries)
        elif format == "llmseg40k":
            self.items = [[e] for e in entries]
        else:  # the annotations of one image are one item
            by_image = defaultdict(list)
            for e in entries:
                by_image[e["image"]].append(e)
            self.items = list(by_image.values())

    def __len__(self):
        return len(self.items)

    # ---- items -------------------------------------------------------------------------------
    def __getitem__(self, i: int) -> dict:
        if self.format == "synthetic":
            return self._synthetic(i)
        if self.format in SEMANTIC:
            return self._semantic(i)
        if self.split == "eval":
            entry, q = self.items[i]
            image = read_rgb(entry["image"])
            target, ignore = annotation_masks(entry, *image.shape[:2])
            rounds = [benchmark_round(entry["queries"][q], entry["is_sentence"])]
            return self._sample(image, entry["image"], rounds, target[None], ignore)
        rng, entries = self.rng(i), self.items[i]
        image = read_rgb(entries[0]["image"])
        h, w = image.shape[:2]
        # up to questions_per_image of the image's sentences, drawn without replacement (LISA's loaders)
        pool = [(e, q) for e in entries for q in e["queries"]]
        chosen = rng.sample(pool, min(self.questions, len(pool)))
        # each question its own single-round conversation (ask returns one)
        rounds = [(ask(rng, sentence=q) if e["is_sentence"] else ask(rng, name=q))[0] for e, q in chosen]
        masks = {id(e): annotation_masks(e, h, w)[0] for e, _ in chosen}  # trained on the target only
        targets = torch.stack([masks[id(e)] for e, _ in chosen])
        return self._sample(image, entries[0]["image"], rounds, targets, torch.zeros(h, w, dtype=torch.bool))

    def _semantic(self, i: int) -> dict:
        from segfast.data.label_maps import IGNORE

        image_path, label_path = self.items[i]
        image, label = read_rgb(image_path), self.label_maps.load(label_path)
        present = [int(c) for c in np.unique(label) if c != IGNORE and c < len(self.classes)]
        asked = [c for c in present if self.classes[c] and not (self.format == "cocostuff" and "-" in self.classes[c])]
        if not asked:
            raise ValueError(f"{label_path}: no class to ask about (every pixel ignored or unnamed)")
        rng = self.rng(i)
        chosen = rng.sample(asked, min(self.questions, len(asked)))
        rounds = [ask(rng, name=self.classes[c])[0] for c in chosen]
        targets = torch.from_numpy(np.stack([label == c for c in chosen]))
        return self._sample(image, image_path, rounds, targets, torch.from_numpy(label == IGNORE))

    def _synthetic(self, i: int) -> dict:
        from segfast.data.scenes import synthetic_scene

        content = content_rng(self.seed, self.split, i)
        image, instances = synthetic_scene(content, parts=False)
        h, w = image.shape[:2]
        regions = [torch.from_numpy(inst["mask"]) for inst in instances]
        extra = [regions[0] | regions[-1]]
        for _ in range(3):  # noise boxes
            y, x = content.randint(0, h - 4), content.randint(0, w - 4)
            m = torch.zeros(h, w, dtype=torch.bool)
            m[y : y + content.randint(2, h // 3), x : x + content.randint(2, w // 3)] = True
            extra.append(m)
        order = list(range(len(regions) + len(extra)))
        content.shuffle(order)
        proposals = pack_masks(torch.stack(regions + extra)[order])
        rng = content if self.split == "eval" else self.rng(i)
        chosen = rng.sample(instances, 1 if self.split == "eval" else min(self.questions, len(instances)))
        rounds = [
            benchmark_round(inst["category"], False) if self.split == "eval" else ask(rng, name=inst["category"])[0]
            for inst in chosen
        ]
        targets = torch.stack([torch.from_numpy(inst["mask"]) for inst in chosen])
        return self._sample(image, None, rounds, targets, torch.zeros(h, w, dtype=torch.bool), proposals)

    # ---- one sample --------------------------------------------------------------------------
    def _proposal_file(self, image_path) -> Path:
        image_path = Path(image_path)
        try:
            name = self.proposals / image_path.relative_to(self.root).with_suffix(".json")
        except ValueError:  # an image outside root
            name = self.proposals / image_path.with_suffix(".json").name
        if not name.is_file():
            flat = self.proposals / image_path.with_suffix(".json").name
            if not flat.is_file():
                raise FileNotFoundError(f"proposals: no {name} (nor {flat}) for {image_path}; run `segfast proposals`")
            name = flat
        return name

    def _proposals(self, image_path, height: int, width: int) -> tuple:
        """(the image's first max_proposals proposals, packed at their own resolution, their width)."""
        from segfast.data.proposals import load_proposals

        name = self._proposal_file(image_path)
        packed, _, (h, w) = load_proposals(name, top_k=self.k)
        # SAM ran on the image or on it scaled down (aspect kept, sizes truncated): else another image
        scale = max(h, w) / max(height, width)
        if abs(h - height * scale) >= 1.5 or abs(w - width * scale) >= 1.5:
            raise ValueError(f"proposals: {name} holds {h}x{w} masks, not the size of {image_path} ({height}x{width})")
        return packed, w

    def _sample(self, image, image_path, rounds, targets, ignore, proposals=None) -> dict:
        """The sample of an image, its rounds and their targets (C, H, W) at the image's resolution."""
        height, width = image.shape[:2]
        if proposals is None:
            proposals, pw = self._proposals(image_path, height, width)
        else:
            pw = width
        ph = proposals.shape[1]
        gt_iou, gt_iop = proposal_targets(proposals, pw, targets)
        frame, valid = sam_frame(image, self.size)
        sample = {
            "image": frame,
            "valid_size": torch.tensor(valid),
            "clip_image": clip_input(image, self.clip_size),
            "conversations": [[r] for r in rounds],
            "proposals": pad_square(proposals, ph, pw),
            "proposal_size": torch.tensor([ph, pw]),
            "gt_iou": gt_iou,
            "gt_iop": gt_iop,
        }
        if self.split == "eval":
            sample.update(original_masks=targets, original_ignore=ignore)
        return sample


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


def _llmseg40k_fields(path: Path) -> str:
    data = json.loads(Path(path).read_text())
    first = next(iter(data.values()), {}) if isinstance(data, dict) else None
    absent = [f for f in ("from_dataset", "qa_pairs") if not isinstance(first, dict) or f not in first]
    if absent:
        raise ValueError(f"no field {absent[0]!r} in its first image's record")
    return f"{len(data)} images"


def _refer(name, title, dataset, split_by, splits, published=None, source="", notes=""):
    images = IMAGE_FOLDERS.get(dataset, "train2014")
    return Layout(
        name=name,
        title=title,
        download=(
            "annotations: https://github.com/lichengunc/refer (refs(*).p and instances.json per dataset, "
            "the `refer` toolkit's data/ folder); images: "
            + (
                "the ImageCLEF IAPR TC-12 images (saiapr_tc-12, linked from the refer toolkit's README)"
                if dataset == "refclef"
                else "COCO train2014 (https://cocodataset.org/#download)"
            )
        ),
        readers=_readers((*LISA_FAMILY, "multiround"), format="refcoco", dataset=dataset, split_by=split_by),
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
        readers=_readers((*LISA_FAMILY, "multiround"), format="reasonseg"),
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
        download=(
            "https://github.com/wangjunchi/LLMSeg (the LLM-Seg40K Google Drive folder its README links; "
            "images: COCO 2017 train and EgoObjects)"
        ),
        readers={"referring": {"format": "llmseg40k"}},
        needs=(
            Need(
                "LLMSeg-40K/{split}.json",
                "a dict keyed by image file name: {from_dataset, qa_pairs: [{question, answer, rle_seg}]}",
                sample=_llmseg40k_fields,
            ),
            Need("coco/train2017", "the COCO images (from_dataset coco)", files="*.jpg", sample=image_size),
            # a split whose records name no EgoObjects image reads without it (the index checks each image)
            Need("ego_objects/images", "the EgoObjects images", files="*.jpg", required=False, sample=image_size),
        ),
        splits={"train": "train", "val": "validation", "test": "test"},
        index=_entries_index(lambda root, split, o: read_llmseg40k(root, split), "questions", "queries"),
        notes=(
            "The paper (§4.3) gives rounded counts: 14K images, 11K train, 1K val and 2K test, about 3.95 "
            "questions per training image; `image_roots` moves the two image folders."
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
        notes="No published per-split counts are compared: the UNC partition of refCLEF is the refer toolkit's.",
    ),
)
