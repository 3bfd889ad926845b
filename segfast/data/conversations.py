"""LISA's training conversations: referring and reasoning segmentation as question/answer rounds
whose answers hold [SEG], one target mask per [SEG].

Layouts read (local paths; the readers of segfast.data.referring): reasonseg (a long query, LISA's
LONG_QUESTION templates) and refcoco/+/g in the refer layout (up to refs_per_image referring
expressions of one image as rounds, LISA's SHORT_QUESTION templates); synthetic (generated
boxes, the built-in default). The engine's "eval" split reads the files' eval_split (val, or
test, testA, ...). Samples: the frames of segfast.data.frames plus conversation and masks
(n, S, S) bool.
"""

import random
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from segfast.data.coco_masks import segmentation_mask
from segfast.data.frames import frame_masks, model_inputs, read_rgb
from segfast.data.rng import EpochChoices, content_rng
from segfast.data.scenes import SCENE_WORDS, synthetic_scene

IMAGE = "<image>"
SHORT_QUESTIONS = [IMAGE + " Can you segment the {name} in this image?",
                   IMAGE + " Please segment the {name} in this image.",
                   IMAGE + " What is {name} in this image? Please respond with segmentation mask.",
                   IMAGE + " What is {name} in this image? Please output segmentation mask."]
LONG_QUESTIONS = [IMAGE + " {sentence} Please respond with segmentation mask.",
                  IMAGE + " {sentence} Please output segmentation mask."]
ANSWERS = ["It is [SEG].", "Sure, [SEG].", "Sure, it is [SEG].", "Sure, the segmentation result is [SEG].", "[SEG]."]
FORMATS = ("reasonseg", "refcoco", "synthetic")


def vocabulary() -> list:
    """The words of every [SEG]-model template and generated scene: the tiny tokenizer's
    vocabulary (placeholders and the special tokens themselves left out)."""
    from segfast.data.multiround import TEMPLATES
    from segfast.models.lasagna.sequence import QUESTION

    text = " ".join(SHORT_QUESTIONS + LONG_QUESTIONS + ANSWERS + TEMPLATES + [QUESTION])
    text = re.sub(r"\{\w+\}|\[\w+\]|<\w+>|[.,?]", " ", text)
    frame = {"USER", "ASSISTANT", ":", ".", ",", "?"}  # segfast.models.lisa.conversation.round_text
    return sorted(set(text.split()) | set(SCENE_WORDS) | frame)


def ask(rng: random.Random, name: str | None = None, sentence: str | None = None) -> dict:
    """One round: a short question about `name` or a long one around `sentence`, a [SEG] answer."""
    question = rng.choice(SHORT_QUESTIONS).format(name=name) if sentence is None else \
        rng.choice(LONG_QUESTIONS).format(sentence=sentence)
    return {"question": question, "answer": rng.choice(ANSWERS)}


def with_image_once(rounds: list) -> list:
    """LLaVA shows the image once: only the first question keeps <image>."""
    return [rounds[0]] + [{**r, "question": r["question"].replace(IMAGE + " ", "")} for r in rounds[1:]]


class SegConversations(EpochChoices, torch.utils.data.Dataset):
    """Referents, sentences and templates are drawn anew every epoch (segfast.data.rng)."""

    def __init__(self, format: str = "synthetic", root: str = "", split: str = "train", image_size: int = 64,
                 clip_size: int = 32, refs_per_image: int = 3, seed: int = 0, length: int = 256,
                 dataset: str = "refcoco", split_by: str = "unc", eval_split: str = "val"):
        if format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
        if refs_per_image < 1:
            raise ValueError(f"refs_per_image must be >= 1, got {refs_per_image}")
        self.format, self.split, self.seed = format, split, seed
        self.size, self.clip_size, self.refs = int(image_size), int(clip_size), int(refs_per_image)
        if format == "synthetic":
            self.items = list(range(int(length)))
            return
        if not root:
            raise ValueError(f"root is required for format={format!r}")
        from segfast.data.referring import file_split, read_reasonseg, read_refcoco

        split = file_split(split, eval_split)
        if format == "reasonseg":
            self.items = [[s] for s in read_reasonseg(Path(root), split)]
        else:  # refer: the expressions of one image become rounds of one conversation
            by_image = defaultdict(list)
            for s in read_refcoco(Path(root), split, dataset, split_by):
                by_image[s["image"]].append(s)
            self.items = list(by_image.values())
        if not self.items:
            raise ValueError(f"no {format} samples for split {split!r} under {root}")

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
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
            long = self.format == "reasonseg"
            rounds = [ask(rng, sentence=rng.choice(e["queries"])) if long else ask(rng, name=rng.choice(e["queries"]))
                      for e in chosen]
            h, w = image.shape[:2]
            masks = torch.stack([segmentation_mask(e["segmentation"], h, w) for e in chosen])
        return {**model_inputs(image, self.size, self.clip_size), "conversation": with_image_once(rounds),
                "masks": frame_masks(masks, self.size)}
