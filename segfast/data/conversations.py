"""LISA's conversations: referring and reasoning segmentation as question/answer rounds whose
answers hold [SEG], one target mask per [SEG].

Layouts read (local paths; the readers of segfast.data.referring): reasonseg and refcoco/+/g in
the refer layout; synthetic (generated boxes, the built-in default). Training: up to
refs_per_image referring expressions of one image as rounds, a sentence (is_sentence) with
LISA's LONG_QUESTION templates, a name with its SHORT_QUESTION ones. Evaluation (the engine's
"eval" split, reading the files' eval_split: val, or test, testA, ...) follows LISA's ValDataset:
every benchmark query (segfast.data.referring.benchmark_queries) is its own single-round
conversation with the fixed question VAL_SHORT (VAL_LONG for a sentence) and answer VAL_ANSWER,
and carries original_masks (1, H, W) and original_ignore (H, W) at the image's resolution.
Samples: the frames of segfast.frames plus conversation and masks (n, S, S) bool.
"""

from collections import defaultdict

import numpy as np
import torch

from segfast.data.referring import annotation_masks, benchmark_queries, read_entries
from segfast.data.rng import EpochChoices, content_rng
from segfast.data.scenes import synthetic_scene
from segfast.frames import frame_masks, model_inputs, read_rgb
from segfast.registry import dataset
from segfast.text.lisa import ask, benchmark_round, with_image_once

FORMATS = ("reasonseg", "refcoco", "synthetic")


@dataset("seg-conversations")
class SegConversations(EpochChoices, torch.utils.data.Dataset):
    """Training: referents, sentences and templates drawn anew every epoch (segfast.data.rng);
    evaluation: LISA's ValDataset protocol (see the module doc)."""

    def __init__(
        self,
        format: str = "synthetic",
        root: str = "",
        split: str = "train",
        image_size: int = 64,
        clip_size: int = 32,
        refs_per_image: int = 3,
        seed: int = 0,
        length: int = 256,
        dataset: str = "refcoco",
        split_by: str = "unc",
        eval_split: str = "val",
    ):
        if format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
        if refs_per_image < 1:
            raise ValueError(f"refs_per_image must be >= 1, got {refs_per_image}")
        self.format, self.split, self.seed = format, split, seed
        self.size, self.clip_size, self.refs = int(image_size), int(clip_size), int(refs_per_image)
        if format == "synthetic":
            self.items = list(range(int(length)))
            return
        entries = read_entries(format, root, split, eval_split, dataset, split_by)
        if split == "eval":
            self.items = benchmark_queries(entries)
        else:  # the annotations of one image become rounds of one conversation
            by_image = defaultdict(list)
            for e in entries:
                by_image[e["image"]].append(e)
            self.items = list(by_image.values())

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        if self.split == "eval":
            return self._benchmark_sample(i)
        rng = self.rng(i)
        if self.format == "synthetic":
            image, instances = synthetic_scene(content_rng(self.seed, self.split, i))
            chosen = rng.sample(instances, min(self.refs, len(instances)))
            rounds = [ask(rng, name=inst["category"]) for inst in chosen]
            masks = torch.from_numpy(np.stack([inst["mask"] for inst in chosen]))
        else:
            entries = self.items[i]
            image = read_rgb(entries[0]["image"])
            chosen = rng.sample(entries, min(self.refs, len(entries)))
            rounds = [
                ask(rng, sentence=q) if e["is_sentence"] else ask(rng, name=q.lower())
                for e, q in ((e, rng.choice(e["queries"])) for e in chosen)
            ]
            h, w = image.shape[:2]
            masks = torch.stack([annotation_masks(e, h, w)[0] for e in chosen])  # LISA trains on the target only
        return {
            **model_inputs(image, self.size, self.clip_size),
            "conversation": with_image_once(rounds),
            "masks": frame_masks(masks, self.size),
        }

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
            mask, ignore = annotation_masks(entry, *image.shape[:2])
            query, is_sentence = entry["queries"][q], entry["is_sentence"]
        return {
            **model_inputs(image, self.size, self.clip_size),
            "conversation": [benchmark_round(query, is_sentence)],
            "masks": frame_masks(mask[None], self.size),
            "original_masks": mask[None],
            "original_ignore": ignore,
        }
