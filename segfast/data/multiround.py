"""SegLLM's multi-round conversations, built from instance annotations.

Round 0 asks for an instance whose category is unique in the image. Every later round refers to
an earlier round's target (the reference, which the model sees as mask memory) through one of
SegLLM's relations, chosen only when it singles out exactly one instance:

  positional     "Segment the {name} to the left of / to the right of / above / below the {ref}."
                 (boxes disjoint along that axis)
  hierarchical   "Segment the {part} of the {ref}."            (the part's parent is the reference)
  interactional  "Segment the {name} that is {verb} the {ref}." (an annotated interaction)

Answers: "It is [SEG]." without a reference, "Relative to [REF], it is [SEG]." with one. When
no relation applies, the round asks for another unique instance directly.

Layouts (local paths):
  coco       a COCO instances JSON (`annotations`, relative to root) and its image folder
             (`images`); optional annotation fields `parent_id` (the annotation this one is a part
             of, e.g. PACO parts) and `interactions` [{"verb": str, "object_id": annotation id}]
             (e.g. converted HOI labels). Crowd annotations are skipped.
  synthetic  generated scenes (segfast.data.scenes), the built-in default.

Samples: the frames of segfast.frames, conversation, masks (one per round, in order) and
refs (per round the referenced round, or -1).
"""

import json
import random
from collections import defaultdict
from pathlib import Path

import torch

from segfast.data.coco_masks import segmentation_mask
from segfast.data.layout import Index, Layout, Need, declare
from segfast.data.rng import EpochChoices, content_rng
from segfast.data.scenes import synthetic_scene
from segfast.frames import frame_masks, model_inputs, read_rgb
from segfast.registry import dataset
from segfast.text.segllm import (
    ANSWER,
    DIRECT,
    FIRST,
    HIERARCHICAL,
    INTERACTIONAL,
    POSITIONAL,
    REF_ANSWER,
    RELATIONS,
    WHERE,
)


def _options(instances: list, target_ids: set, ref: dict, relations) -> list:
    """(target, question, relation) triples that single out one instance relative to `ref`."""
    out = []
    by_id = {inst["id"]: inst for inst in instances}
    free = [t for t in instances if t["id"] not in target_ids and t["id"] != ref["id"]]
    if "positional" in relations:
        for where, holds in WHERE.items():
            for t in free:
                same = [
                    u
                    for u in instances
                    if u["category"] == t["category"] and u["id"] != ref["id"] and holds(u["box"], ref["box"])
                ]
                if t["parent"] is None and len(same) == 1 and same[0] is t:
                    out.append(
                        (t, POSITIONAL.format(name=t["category"], where=where, ref=ref["category"]), "positional")
                    )
    if "hierarchical" in relations:
        for t in free:
            siblings = [u for u in instances if u["parent"] == ref["id"] and u["category"] == t["category"]]
            if t["parent"] == ref["id"] and len(siblings) == 1:
                out.append((t, HIERARCHICAL.format(name=t["category"], ref=ref["category"]), "hierarchical"))
    if "interactional" in relations:
        for t in free:
            for verb, obj in t["interactions"]:
                same = [
                    u for u in instances if u["category"] == t["category"] and (verb, ref["id"]) in u["interactions"]
                ]
                if obj == ref["id"] and obj in by_id and len(same) == 1:
                    out.append(
                        (t, INTERACTIONAL.format(name=t["category"], verb=verb, ref=ref["category"]), "interactional")
                    )
    return out


def build_rounds(instances: list, rng: random.Random, num_rounds: int = 3, relations=RELATIONS) -> list:
    """[{question, answer, target (index into instances), ref (earlier round or None), relation}]."""
    unknown = set(relations) - set(RELATIONS)
    if unknown:
        raise ValueError(f"relations must be among {RELATIONS}, got {sorted(unknown)}")
    counts = defaultdict(int)
    for inst in instances:
        counts[inst["category"]] += 1
    unique = [i for i, inst in enumerate(instances) if counts[inst["category"]] == 1 and inst["parent"] is None]
    if not unique:
        return []
    index = {id(inst): i for i, inst in enumerate(instances)}
    first = rng.choice(unique)
    rounds = [
        {
            "question": FIRST.format(name=instances[first]["category"]),
            "answer": ANSWER,
            "target": first,
            "ref": None,
            "relation": None,
        }
    ]
    while len(rounds) < num_rounds:
        taken = {instances[r["target"]]["id"] for r in rounds}
        choices = [
            (r, *option)
            for r, rd in enumerate(rounds)
            for option in _options(instances, taken, instances[rd["target"]], relations)
        ]
        if choices:
            ref, target, q, relation = rng.choice(choices)
            rounds.append(
                {"question": q, "answer": REF_ANSWER, "target": index[id(target)], "ref": ref, "relation": relation}
            )
            continue
        rest = [i for i in unique if instances[i]["id"] not in taken]
        if not rest:
            break
        target = rng.choice(rest)
        rounds.append(
            {
                "question": DIRECT.format(name=instances[target]["category"]),
                "answer": ANSWER,
                "target": target,
                "ref": None,
                "relation": None,
            }
        )
    return rounds


def read_coco_instances(root: Path, annotations: str, images: str) -> list:
    """[(image path, height, width, [annotation])] from a COCO instances file."""
    path = root / annotations
    if not path.is_file():
        raise FileNotFoundError(f"annotations: no COCO instances file {path}")
    data = json.loads(path.read_text())
    names = {c["id"]: c["name"] for c in data["categories"]}
    per_image = defaultdict(list)
    for ann in data["annotations"]:
        if not ann.get("iscrowd", 0):
            per_image[ann["image_id"]].append({**ann, "category": names[ann["category_id"]]})
    return [
        (root / images / info["file_name"], info["height"], info["width"], per_image[info["id"]])
        for info in data["images"]
        if per_image[info["id"]]
    ]


def coco_instances(anns: list, height: int, width: int) -> list:
    out = []
    for a in anns:
        x, y, w, h = a["bbox"]
        out.append(
            {
                "id": a["id"],
                "category": a["category"],
                "box": (x, y, x + w, y + h),
                "mask": segmentation_mask(a["segmentation"], height, width),
                "parent": a.get("parent_id"),
                "interactions": [(i["verb"], i["object_id"]) for i in a.get("interactions", [])],
            }
        )
    return out


@dataset("multiround")
class MultiRoundConversations(EpochChoices, torch.utils.data.Dataset):
    """The conversation of an image is drawn anew every epoch (segfast.data.rng)."""

    def __init__(
        self,
        format: str = "synthetic",
        root: str = "",
        annotations: str = "",
        images: str = "",
        split: str = "train",
        num_rounds: int = 3,
        relations=RELATIONS,
        image_size: int = 64,
        clip_size: int = 32,
        seed: int = 0,
        length: int = 256,
    ):
        if format not in ("coco", "synthetic"):
            raise ValueError(f"format must be coco or synthetic, got {format!r}")
        if num_rounds < 1:
            raise ValueError(f"num_rounds must be >= 1, got {num_rounds}")
        self.format, self.split, self.seed, self.rounds = format, split, seed, int(num_rounds)
        self.relations, self.size, self.clip_size = tuple(relations), int(image_size), int(clip_size)
        if format == "synthetic":
            self.items = list(range(int(length)))
            return
        if not (root and annotations and images):
            raise ValueError("root, annotations and images are required for format='coco'")
        self.items = read_coco_instances(Path(root), annotations, images)
        if not self.items:
            raise ValueError(f"no annotated images in {Path(root) / annotations}")

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        rng, scenes = self.rng(i), content_rng(self.seed, self.split, i)
        for attempt in range(len(self.items)):  # an image without a unique instance gives the next one
            if self.format == "synthetic":
                image, instances = synthetic_scene(scenes)
            else:
                path, height, width, anns = self.items[(i + attempt) % len(self.items)]
                image = read_rgb(path)
                instances = coco_instances(anns, height, width)
            rounds = build_rounds(instances, rng, self.rounds, self.relations)
            if rounds:
                break
        else:
            raise ValueError("no image has an instance of a unique category to start a conversation")
        masks = torch.stack([torch.as_tensor(instances[r["target"]]["mask"]) for r in rounds])
        return {
            **model_inputs(image, self.size, self.clip_size),
            "conversation": [{"question": r["question"], "answer": r["answer"]} for r in rounds],
            "masks": frame_masks(masks, self.size),
            "refs": torch.tensor([-1 if r["ref"] is None else r["ref"] for r in rounds]),
        }


# The layout this reader expects (segfast.data.layout: `segfast data check`, docs/data.md).
def _coco_instances_index(root: Path, split: str, options: dict) -> Index:
    items = read_coco_instances(root, options["annotations"], options["images"])
    counts = {"annotated images": len(items), "instances": sum(len(anns) for *_, anns in items)}
    return Index(counts, tuple(str(path) for path, *_ in items))


declare(
    Layout(
        name="coco-instances",
        title="COCO-format instance annotations (SegLLM's multi-round conversations)",
        download="https://cocodataset.org/#download, or any COCO-format instances file (e.g. PACO parts)",
        readers={"multiround": {"format": "coco", "annotations": "{annotations}", "images": "{images}"}},
        needs=(
            Need("{annotations}", "a COCO instances JSON; optional parent_id and interactions fields"),
            Need("{images}/", "the images the annotations name"),
        ),
        options={"annotations": "annotations/instances_train2017.json", "images": "train2017"},
        index=_coco_instances_index,
    ),
)
