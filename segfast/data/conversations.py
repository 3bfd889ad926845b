"""LISA's referring and reasoning data (utils/refer_seg_dataset.py, utils/reason_seg_dataset.py):
one single-round conversation per sampled sentence, each with the image, whose answer holds
one [SEG] (LaSagnA's data: its <SEG>, `seg_token`).

Layouts read (local paths; the readers of segfast.data.referring and segfast.data.grefcoco):
  reasonseg   ReasonSeg (<root>/<split>/*.jpg + *.json); LISA's explanatory answers from
              <root>/explanatory/train.json ([{"image": "<name>.jpg", "query": str, "outputs": str}],
              shipped with ReasonSeg) unless explanatory = -1
  refcoco     refCLEF / refCOCO / refCOCO+ / refCOCOg in the refer layout (`dataset`, `split_by`)
  grefcoco    gRefCOCO (evaluation: expressions with several or no targets)
  synthetic   generated boxes (the built-in default)

Training, as LISA draws it anew on every access (here: every epoch, segfast.data.rng): an image,
then up to sentences_per_image (LISA's num_classes_per_sample, 3) of its sentences without
replacement, each its own conversation: refCOCO expressions and short ReasonSeg queries
(is_sentence false) with LISA's SHORT_QUESTION templates, ReasonSeg sentences with its
LONG_QUESTION ones, every answer from its ANSWER_LIST. ReasonSeg images that have an explanation
draw once per use: with probability `explanatory` (LISA's 0.1) every sentence is answered by the
explanation alone (no mask), else with even odds plain answers or "{ANSWER} {explanation}" to
the question "{sentence} Please output segmentation mask and explain why." (or its variants).

Evaluation (the engine's "eval" split, reading the files' eval_split): LISA's ValDataset, every
benchmark query (segfast.data.referring.benchmark_queries) its own conversation with the fixed
question VAL_SHORT (VAL_LONG for a sentence) and the answer VAL_ANSWER teacher-forced; gRefCOCO's
samples say generate=True: scored on the generated answer, since a query may have no target
(segfast.models.lisa LISA.evaluate; the teacher-forced answer still gives the evaluation loss).

Samples: the frames of segfast.frames, conversations (one per sentence), masks (n, S, S) bool in
SAM's frame and original_masks (n, H, W) at the image's resolution, one per [SEG] in order;
evaluation samples also carry original_ignore (H, W) (ReasonSeg's "ignore" shapes) and generate.
"""

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from segfast.data.grefcoco import read_grefcoco, union_mask
from segfast.data.referring import annotation_masks, benchmark_queries, file_split, read_entries
from segfast.data.rng import EpochChoices, content_rng
from segfast.data.scenes import synthetic_scene
from segfast.frames import frame_masks, model_inputs, read_rgb
from segfast.registry import dataset
from segfast.text.lisa import ask, benchmark_round, explained
from segfast.text.tokens import SEG

FORMATS = ("reasonseg", "refcoco", "grefcoco", "synthetic")


def target_masks(entry: dict, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(target, ignore) (H, W) bool of any reader's entry (gRefCOCO: the union of its objects)."""
    if "segmentations" in entry:
        target = union_mask(entry["segmentations"], height, width)
        return target, torch.zeros_like(target)
    return annotation_masks(entry, height, width)


def read_explanations(root: str) -> dict:
    """ReasonSeg's explanatory answers: image file name -> explanation ("outputs")."""
    path = Path(root) / "explanatory" / "train.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"explanatory: no {path} (ReasonSeg ships it; LISA trains 10% explanatory answers); set "
            "explanatory=-1 to train without them"
        )
    return {item["image"]: item["outputs"] for item in json.loads(path.read_text())}


def sample(image: np.ndarray, conversations: list, masks: torch.Tensor, size: int, clip_size: int) -> dict:
    """A training sample of the [SEG] family: the frames, its conversations and their targets
    (n, H, W) at the image's resolution and in SAM's frame."""
    return {
        **model_inputs(image, size, clip_size),
        "conversations": conversations,
        "masks": frame_masks(masks, size),
        "original_masks": masks,
    }


@dataset("seg-conversations")
class SegConversations(EpochChoices, torch.utils.data.Dataset):
    """Training: images, sentences, templates and explanations drawn anew every epoch
    (segfast.data.rng); evaluation: LISA's ValDataset protocol (see the module doc)."""

    def __init__(
        self,
        format: str = "synthetic",
        root: str = "",
        split: str = "train",
        image_size: int = 64,
        clip_size: int = 32,
        sentences_per_image: int = 3,
        explanatory: float = 0.1,
        seg_token: str = SEG,
        seed: int = 0,
        length: int = 256,
        dataset: str = "refcoco",
        split_by: str = "unc",
        eval_split: str = "val",
    ):
        if format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
        if sentences_per_image < 1:
            raise ValueError(f"sentences_per_image must be >= 1, got {sentences_per_image}")
        if not (explanatory == -1 or 0 <= explanatory <= 1):
            raise ValueError(f"explanatory must be a probability or -1 (off), got {explanatory}")
        self.format, self.split, self.seed, self.seg_token = format, split, seed, seg_token
        self.size, self.clip_size, self.per_image = int(image_size), int(clip_size), int(sentences_per_image)
        self.explanatory, self.explanations = float(explanatory), {}
        if format == "synthetic":
            self.items = list(range(int(length)))
            return
        if format == "grefcoco":
            if not root:
                raise ValueError("root is required for format='grefcoco'")
            entries = read_grefcoco(Path(root), file_split(split, eval_split), split_by)
            if not entries:
                raise ValueError(f"no grefcoco samples for split {file_split(split, eval_split)!r} under {root}")
        else:
            entries = read_entries(format, root, split, eval_split, dataset, split_by)
        if split == "eval":
            self.items = benchmark_queries(entries)
            return
        by_image = defaultdict(list)  # LISA samples an image, then sentences among all of its referents
        for e in entries:
            by_image[e["image"]].append(e)
        self.items = list(by_image.values())
        if format == "reasonseg" and self.explanatory != -1:
            self.explanations = read_explanations(root)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        if self.split == "eval":
            return self._benchmark_sample(i)
        rng = self.rng(i)
        if self.format == "synthetic":
            image, instances = synthetic_scene(content_rng(self.seed, self.split, i))
            chosen = rng.sample(instances, min(self.per_image, len(instances)))
            conversations = [ask(rng, name=inst["category"], seg_token=self.seg_token) for inst in chosen]
            return sample(
                image,
                conversations,
                torch.from_numpy(np.stack([inst["mask"] for inst in chosen])),
                self.size,
                self.clip_size,
            )
        entries = self.items[i]
        image = read_rgb(entries[0]["image"])
        h, w = image.shape[:2]
        sentences = [(e, q) for e in entries for q in e["queries"]]
        chosen = rng.sample(sentences, min(self.per_image, len(sentences)))
        explanation = self.explanations.get(Path(entries[0]["image"]).name)
        if explanation is not None:  # LISA draws one choice per image: 2 (text only) at `explanatory`, else 0 or 1
            choice = 2 if rng.random() < self.explanatory else rng.randint(0, 1)
            if choice:
                conversations = [
                    explained(rng, q, explanation, with_mask=choice == 1, seg_token=self.seg_token) for _, q in chosen
                ]
                masks = [target_masks(e, h, w)[0] for e, _ in chosen] if choice == 1 else []
                return sample(image, conversations, _stack(masks, h, w), self.size, self.clip_size)
        conversations = [
            ask(rng, sentence=q, seg_token=self.seg_token)
            if e["is_sentence"]
            else ask(rng, name=q, seg_token=self.seg_token)
            for e, q in chosen
        ]
        masks = [target_masks(e, h, w)[0] for e, _ in chosen]  # ReasonSeg's ignored pixels train as background
        return sample(image, conversations, _stack(masks, h, w), self.size, self.clip_size)

    def _benchmark_sample(self, i: int) -> dict:
        if self.format == "synthetic":
            rng = content_rng(self.seed, self.split, i)
            image, instances = synthetic_scene(rng)
            target = rng.choice(instances)
            query, is_sentence, mask = target["category"], False, torch.from_numpy(target["mask"])
            ignore = torch.zeros_like(mask)
        else:
            entry, q = self.items[i]
            image = read_rgb(entry["image"])
            mask, ignore = target_masks(entry, *image.shape[:2])
            query, is_sentence = entry["queries"][q], entry["is_sentence"]
        asked = [[benchmark_round(query, is_sentence, self.seg_token)]]
        return {
            **sample(image, asked, mask[None], self.size, self.clip_size),
            "original_ignore": ignore,
            "generate": self.format == "grefcoco",  # scored on the generated answer: a query may have no target
        }


def _stack(masks: list, height: int, width: int) -> torch.Tensor:
    return torch.stack(masks) if masks else torch.zeros(0, height, width, dtype=torch.bool)
