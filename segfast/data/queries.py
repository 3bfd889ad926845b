"""One query, one target mask per sample: what LLaVASeg trains and is evaluated on (its §4.1
data: semantic, part, referring and reasoning segmentation).

Layouts (local paths):
  reasonseg        LISA's ReasonSeg (segfast.data.referring): long queries, step 1 generated.
  refcoco          refCOCO/+/g and refCLEF in the refer layout (dataset=refcoco | refcoco+ | refcocog |
                   refclef; refCLEF's images under <root>/images/saiapr_tc-12): short expressions.
  ade20k, cocostuff  semantic segmentation (segfast.data.semantic's layouts): a class present in the
                   image, drawn anew every epoch, is the query; its pixels are the mask.
  paco, pascal_part  part segmentation from a COCO-style JSON (`annotations` under root, images under
                   root / `images`) whose categories are "object:part" (PACO-LVIS's
                   paco_lvis_v1_train.json; PASCAL-Part as LISA reads it, VLPart's pascal_part
                   train.json): the query "the part of the object", the mask every such part in the
                   image.
  synthetic        generated boxes, the built-in default; every other sample asks a question.
Short queries have no reasoning to do: the chain of thought simulates step 1 for them (§3.4).
In training every query of every annotation is a sample; the engine's "eval" split reads the
files' eval_split (val; or test, testA, ...) and scores the benchmark's queries
(segfast.data.referring.benchmark_queries: ReasonSeg's text[0]).

exclude_eval_images names a refer root: training samples on COCO images of refCOCO, refCOCO+ and
refCOCOg's `exclude_splits` (val) are dropped (§4.1: "we exclude the COCO samples in the
refCOCO(+g) validation set to avoid data leakage"); COCO images match by their numeric id.
explanations names LISA's explanatory JSON ([{"image", "query", "outputs"}], ReasonSeg's
explanatory/<split>.json): samples of those images carry the reference explanations that the
reason step's answer is scored against (ROUGE-L, CIDEr). lisa_prompt=True also writes LISA's
conversation around the cached step-1 answer (Table 3c: LISA segments from the reason step).

Samples: the frames of segfast.frames, query, kind ("reasoning" | "short"), key (stable across
runs and machines: the image file name and the query), masks (1, S, S) bool, with cot_cache (a
directory written by `segfast cot-cache`) cot: the cached chain-of-thought record, and in
evaluation original_masks (1, H, W) and original_ignore (H, W) at the image's resolution.
"""

import json
import pickle
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from segfast.data.coco_masks import segmentation_mask
from segfast.data.referring import annotation_masks, benchmark_queries, read_entries
from segfast.data.rng import EpochChoices, content_rng
from segfast.data.scenes import synthetic_scene
from segfast.frames import clip_input, frame_masks, model_inputs, read_rgb
from segfast.registry import dataset
from segfast.text.lisa import VAL_ANSWER, VAL_LONG
from segfast.text.synthetic import SYNTHETIC_REASONING

FORMATS = ("reasonseg", "refcoco", "ade20k", "cocostuff", "paco", "pascal_part", "synthetic")
SEMANTIC, PARTS = ("ade20k", "cocostuff"), ("paco", "pascal_part")


def coco_id(path) -> int | None:
    """The COCO image id in a file name (COCO_train2014_000000123456.jpg, 000000123456.png)."""
    digits = re.findall(r"\d+", Path(path).stem)
    return int(digits[-1]) if digits else None


def refer_eval_images(root: str, splits) -> set:
    """COCO ids of the images of refCOCO, refCOCO+ and refCOCOg's `splits` (refer layout)."""
    ids = set()
    for name, split_by in (("refcoco", "unc"), ("refcoco+", "unc"), ("refcocog", "umd")):
        path = Path(root) / name / f"refs({split_by}).p"
        if not path.is_file():
            raise FileNotFoundError(f"exclude_eval_images: no {path} (refer toolkit layout)")
        with open(path, "rb") as f:
            ids |= {r["image_id"] for r in pickle.load(f) if r["split"] in splits}
    return ids


def read_parts(root: Path, annotations: str, images: str) -> list:
    """[(image path, height, width, "object:part", [segmentation])] of a COCO-style part file."""
    path = root / annotations
    if not path.is_file():
        raise FileNotFoundError(f"annotations: no part annotation file {path}")
    data = json.loads(path.read_text())
    names = {c["id"]: c["name"] for c in data["categories"]}
    info = {i["id"]: i for i in data["images"]}
    per = defaultdict(list)
    for a in data["annotations"]:
        name = names[a["category_id"]]
        if ":" in name and not a.get("iscrowd", 0):
            per[a["image_id"], name].append(a["segmentation"])
    return [
        (root / images / info[i]["file_name"], info[i]["height"], info[i]["width"], name, segs)
        for (i, name), segs in sorted(per.items(), key=lambda kv: (kv[0][0], kv[0][1]))
    ]


def part_query(name: str) -> str:
    whole, part = (x.replace("_", " ") for x in name.split(":", 1))
    return f"the {part} of the {whole}"


@dataset("seg-queries")
class SegQueries(EpochChoices, torch.utils.data.Dataset):
    def __init__(
        self,
        format: str = "synthetic",
        root: str = "",
        split: str = "train",
        image_size: int = 64,
        clip_size: int = 32,
        seed: int = 0,
        length: int = 256,
        dataset: str = "refcoco",
        split_by: str = "unc",
        eval_split: str = "val",
        cot_cache: str = "",
        annotations: str = "",
        images: str = "",
        exclude_eval_images: str = "",
        exclude_splits: tuple = ("val",),
        explanations: str = "",
        lisa_prompt: bool = False,
    ):
        if format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
        self.format, self.split, self.seed = format, split, seed
        self.size, self.clip_size, self.cot_cache = int(image_size), int(clip_size), cot_cache
        self.lisa_prompt = bool(lisa_prompt)
        if lisa_prompt and not cot_cache:
            raise ValueError("lisa_prompt: LISA's instruction is the cached reason step, so cot_cache is required")
        if format == "synthetic":
            self.items = list(range(int(length)))
        elif format in SEMANTIC:
            from segfast.data.label_maps import read_label_maps

            self.label_maps = read_label_maps(format, root, split)
            self.items, self.classes = self.label_maps.pairs, self.label_maps.classes
        elif format in PARTS:
            if not (root and annotations):
                raise ValueError(f"root and annotations are required for format={format!r}")
            self.items = read_parts(Path(root), annotations, images)
        else:
            refclef = format == "refcoco" and dataset == "refclef"
            entries = read_entries(format, root, split, eval_split, dataset, split_by)
            if refclef:  # the refer toolkit keeps refCLEF's images apart from COCO's
                entries = [
                    {**e, "image": Path(root) / "images" / "saiapr_tc-12" / Path(e["image"]).name} for e in entries
                ]
            self.items = (
                benchmark_queries(entries)
                if split == "eval"
                else [(e, q) for e in entries for q in range(len(e["queries"]))]
            )
        if exclude_eval_images and split != "eval" and format not in ("synthetic", "reasonseg", "pascal_part"):
            excluded = refer_eval_images(exclude_eval_images, set(exclude_splits))
            if not (format == "refcoco" and dataset == "refclef"):
                self.items = [it for it in self.items if coco_id(self._path(it)) not in excluded]
        self.explanations = defaultdict(list)
        if explanations:
            for e in json.loads(Path(explanations).read_text()):
                self.explanations[Path(e["image"]).name].append(e["outputs"])
        self._cot = None  # read on first use, so `segfast cot-cache` can build the dataset before the cache exists

    def _path(self, item) -> Path:
        """The image file of an item of any format."""
        if self.format in SEMANTIC or self.format in PARTS:
            return Path(item[0])
        return Path(item[0]["image"])

    def __len__(self):
        return len(self.items)

    def request(self, i: int, target: dict | None = None, name: str | None = None) -> dict:
        """{index, key, query, kind} of sample i: what the chain of thought needs (target: the
        synthetic scene's chosen instance, when the caller has drawn it already; name: the class a
        semantic sample asks about)."""
        if self.format == "synthetic":
            name, image = (target or self._scene(i)[2])["category"], f"synthetic-{self.seed}-{self.split}-{i}"
            query, kind = (SYNTHETIC_REASONING.format(name=name), "reasoning") if i % 2 else (name, "short")
        elif self.format in SEMANTIC:
            query, image, kind = name, Path(self.items[i][0]).name, "short"
        elif self.format in PARTS:
            query, image, kind = part_query(self.items[i][3]), Path(self.items[i][0]).name, "short"
        else:
            entry, q = self.items[i]
            query, image = entry["queries"][q], Path(entry["image"]).name
            kind = "reasoning" if self.format == "reasonseg" else "short"
        return {"index": i, "key": f"{image}\t{query}", "query": query, "kind": kind}

    def requests(self) -> list:
        """Every request the chain-of-thought cache must hold (a semantic image: one per class
        present, its label map read)."""
        if self.format in SEMANTIC:
            return [self.request(i, name=n) for i in range(len(self)) for n in self._present(i)[1]]
        return [self.request(i) for i in range(len(self))]

    def _present(self, i: int) -> tuple:
        """(label map, names of the classes in it) of semantic sample i."""
        from segfast.data.label_maps import IGNORE

        label = self.label_maps.load(self.items[i][1])
        ids = [int(c) for c in np.unique(label) if c != IGNORE and c < len(self.classes) and self.classes[c]]
        return label, [self.classes[c] for c in ids]

    def cot(self, key: str) -> dict:
        if self._cot is None:
            self._cot = self._read_cot()
        if key not in self._cot:
            raise ValueError(
                f"cot_cache {self.cot_cache}: no chain-of-thought answer for {key!r}; run segfast cot-cache"
            )
        return self._cot[key]

    def _read_cot(self) -> dict:
        """The cache's records, checked to cover every sample (an error at the first batch, not
        at the first uncached one)."""
        from segfast.data.cot_cache import read_cache

        cached = read_cache(self.cot_cache)
        if self.format in SEMANTIC:  # checked per sample: listing every class reads every label map
            return cached
        missing = [r["key"] for r in self.requests() if r["key"] not in cached]
        if missing:
            raise ValueError(
                f"cot_cache {self.cot_cache}: {len(missing)} of {len(self)} {self.split} samples have no "
                f"chain-of-thought answer (e.g. {missing[0]!r}); run segfast cot-cache with this config"
            )
        return cached

    def _scene(self, i: int) -> tuple:
        rng = content_rng(self.seed, self.split, i)  # the scene and its query are the sample itself
        image, instances = synthetic_scene(rng)
        return image, instances, rng.choice(instances)

    def _image(self, i: int):
        return self._scene(i)[0] if self.format == "synthetic" else read_rgb(self._path(self.items[i]))

    def clip_batch(self, indices: list) -> torch.Tensor:
        """(n, 3, C, C) CLIP inputs of samples `indices` (the chain of thought's images)."""
        return torch.stack([clip_input(self._image(i), self.clip_size) for i in indices])

    def __getitem__(self, i: int) -> dict:
        if self.format == "synthetic":
            image, _, target = self._scene(i)
            mask, request = torch.from_numpy(target["mask"][None]), self.request(i, target)
            ignore = torch.zeros_like(mask[0])
        elif self.format in SEMANTIC:
            image, (label, names) = self._image(i), self._present(i)
            if not names:
                raise ValueError(f"{self.items[i][1]}: no labelled class to ask about")
            name = self.rng(i).choice(names)
            mask = torch.from_numpy(label == self.classes.index(name))[None]
            ignore, request = torch.zeros_like(mask[0]), self.request(i, name=name)
        elif self.format in PARTS:
            image = self._image(i)
            h, w = image.shape[:2]
            mask = torch.stack([segmentation_mask(seg, h, w) for seg in self.items[i][4]]).any(0)[None]
            ignore, request = torch.zeros_like(mask[0]), self.request(i)
        else:
            image = self._image(i)
            mask, ignore = annotation_masks(self.items[i][0], *image.shape[:2])
            mask, request = mask[None], self.request(i)
        sample = {
            **model_inputs(image, self.size, self.clip_size),
            "query": request["query"],
            "kind": request["kind"],
            "key": request["key"],
            "masks": frame_masks(mask, self.size),
        }
        if self.split == "eval":
            sample.update(original_masks=mask, original_ignore=ignore)
        if self.cot_cache:
            sample["cot"] = self.cot(request["key"])
            if self.lisa_prompt:  # Table 3c: LISA segments from the reason step's answer
                question = VAL_LONG.format(sentence=sample["cot"]["reason"])
                sample.update(conversation=[{"question": question, "answer": VAL_ANSWER}])
        if self.explanations:
            name = request["key"].split("\t")[0]
            sample["explanations"] = list(self.explanations.get(name, [])) if request["kind"] == "reasoning" else []
        return sample
