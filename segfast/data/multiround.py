"""SegLLM's MRSeg conversations (§4.1, §A.5): built from public annotations anew every epoch, or
read from the authors' released files (format mrseg, segfast.data.mrseg).

Builders (segfast.text.segllm holds the words; the training split draws from the training
templates, the eval split from the disjoint validation ones):
  positional     (refcoco, lvis, coco): 2-18 annotations of an image in random order; round 1
                 asks for its object, every later one asks for its own object with probability 1/3,
                 else for it by its position (9 cells, segfast.text.segllm.position) relative to a
                 random earlier round's output. RefCOCO may pick one object under two captions ("the
                 same as"); LVIS keeps classes with at most two instances, naming a pair "on the
                 left/right" (the paper also leaves out LVIS's COCO classes: not done here, as LVIS
                 names no COCO mapping).
  hierarchical   (paco; pascal_part, segfast.data.panoptic_parts; coco with parent_id): 1-4 objects
                 with parts, each followed by 1-4 of its parts referring to the object's round.
  interactional  (vg): a Visual Genome relationship as two rounds, the subject, then the object by
                 the predicate ("the umbrella that instance 1 is holding"); up to 4 relationships of
                 an image, each its own conversation.
  hard           (refcoco_hard): two objects X, Y of one class in an image: "[ENCODE X] Please
                 segment the other <class>" -> Y, X given with the question.
  single round   ade20k / cocostuff (a class present in the image) and reasonseg (its query).
A later round names the earlier output by its caption with probability 1/2, else as "instance i"
or "the output of round i" (1/4 each), and always carries that output's encoding in its
"<mask> <box>" slots (the authors' [MASK-ENCODE][BOX-ENCODE] in front of the question).

Lengths: up to 18 positional rounds, up to 4 x (1 + 4) hierarchical ones (Table A1: 18 and 19);
max_rounds > 0 cuts conversations (released ones too) to their first rounds (the authors train with
--limit_rounds 6; configs/segllm.yaml does).

Evaluation (split "eval"): refcoco scores every sentence of eval_split's referents as one round
(LISA's queries) with a validation template (question_set "segllm"; "lisa" uses LISA's question,
Table 7's columns); mrseg reads the released validation conversations; the other builders draw
their validation conversations with epoch 0's stream. Eval samples say which memory the
evaluation uses ("memory": eval_memory, "own" masks or "ground_truth").

Samples: the frames of segfast.frames; conversation (rounds {question, answer, encode}); masks
(n, S, S) one per round; refs (n,) the reference of each round in masks ++ given, or -1; given
(k, S, S) masks that are no round's target.
"""

import random
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from segfast.data.instances import instance_mask, read_coco, read_refer
from segfast.data.referring import annotation_masks, read_reasonseg
from segfast.data.rng import EpochChoices, content_rng, sample_rng
from segfast.data.scenes import synthetic_scene
from segfast.frames import frame_masks, model_inputs, read_rgb
from segfast.registry import dataset
from segfast.text.lisa import VAL_SHORT
from segfast.text.segllm import ANSWER, BY_INDEX, REF_ANSWER, TEMPLATE_SETS, position, with_slots
from segfast.text.tokens import IMAGE

FORMATS = (
    "synthetic",
    "coco",
    "refcoco",
    "refcoco_hard",
    "lvis",
    "paco",
    "pascal_part",
    "vg",
    "ade20k",
    "cocostuff",
    "reasonseg",
    "mrseg",
)
POSITIONAL_ROUNDS = (2, 18)  # §A.5.2: 2 to 18 annotations per image
OBJECTS, PARTS = 4, 4  # §A.5.2: 1-4 instances, 1-4 parts each
VG_RELATIONS = 4  # §A.5.2: up to four relationships per image


# ---- conversation builders (pure: instances and a random stream in, rounds out) ----------------------
def refer_to(rng: random.Random, rounds: list, r: int) -> str:
    """How a question names round r's output: its caption (1/2), or by index (1/4 each)."""
    if rng.random() < 0.5:
        return "the " + rounds[r]["caption"]
    return rng.choice(BY_INDEX).format(i=r + 1)


def _round(question: str, target, caption: str, ref=None) -> dict:
    return {
        "question": with_slots(question) if ref is not None else question,
        "answer": ANSWER if ref is None else REF_ANSWER,
        "target": target,
        "caption": caption,
        "ref": ref,
        "encode": [] if ref is None else [ref],
    }


def direct(rng, t, target, caption: str) -> dict:
    return _round(rng.choice(t["direct"]).format(name=caption), target, caption)


def positional(instances: list, rng: random.Random, t: dict, lengths=POSITIONAL_ROUNDS) -> list:
    """Rounds over 2-18 annotations (§A.5.2); targets index `instances`."""
    if not instances:
        return []
    lo, hi = lengths
    k = rng.randint(min(lo, len(instances)), min(hi, len(instances)))
    order = rng.sample(range(len(instances)), k)
    rounds = []
    for j, i in enumerate(order):
        inst = instances[i]
        caption = rng.choice(inst["captions"])
        if j == 0 or rng.random() < 1 / 3:
            rounds.append(direct(rng, t, i, caption))
            continue
        r = rng.randrange(j)
        ref = instances[rounds[r]["target"]]
        where = position(inst["box"], ref["box"], inst["instance"] == ref["instance"])
        question = rng.choice(t["positional"]).format(name=caption, where=where, ref=refer_to(rng, rounds, r))
        rounds.append(_round(question, i, caption, r))
    return rounds


def hierarchical(instances: list, rng: random.Random, t: dict) -> list:
    """1-4 objects with parts, each followed by 1-4 of its parts (§A.5.2)."""
    parts = defaultdict(list)
    for i, inst in enumerate(instances):
        if inst["parent"] is not None:
            parts[inst["parent"]].append(i)
    wholes = [i for i, inst in enumerate(instances) if inst["parent"] is None and parts[inst["id"]]]
    if not wholes:
        return []
    rounds = []
    for w in rng.sample(wholes, rng.randint(1, min(OBJECTS, len(wholes)))):
        r = len(rounds)
        rounds.append(direct(rng, t, w, rng.choice(instances[w]["captions"])))
        mine = parts[instances[w]["id"]]
        for p in rng.sample(mine, rng.randint(1, min(PARTS, len(mine)))):
            name = instances[p]["category"]
            question = rng.choice(t["hierarchical"]).format(part=name, ref=refer_to(rng, rounds, r))
            rounds.append(_round(question, p, f"{name} of the {rounds[r]['caption']}", r))
    return rounds


def interactional(subject: int, verb: str, obj: int, instances: list, rng: random.Random, t: dict) -> list:
    """Two rounds (§A.5.2): the subject, then the object by its relationship to the subject."""
    rounds = [direct(rng, t, subject, instances[subject]["category"])]
    name = instances[obj]["category"]
    question = rng.choice(t["interactional"]).format(name=name, verb=verb, ref=refer_to(rng, rounds, 0))
    return rounds + [_round(question, obj, name, 0)]


def hard(given: int, target: int, instances: list, rng: random.Random, t: dict) -> list:
    """MRSeg-hard (§A.5.2): the other object of a class, the one given as an encoding."""
    question = IMAGE + " " + with_slots(rng.choice(t["hard"]).format(name=instances[target]["category"]))
    return [{"question": question, "answer": REF_ANSWER, "target": target, "caption": "", "ref": "given", "encode": []}]


def same_class_pairs(instances: list) -> list:
    """(X, Y) ordered pairs of distinct objects of one class, each pair once per direction."""
    by_class = defaultdict(dict)
    for i, inst in enumerate(instances):
        by_class[inst["category"]].setdefault(inst["instance"], i)
    pairs = []
    for objects in by_class.values():
        if len(objects) == 2:  # §A.5.2: images with two instances of the class
            x, y = objects.values()
            pairs += [(x, y), (y, x)]
    return pairs


def lvis_instances(instances: list) -> list:
    """Classes with one or two instances; a pair named on the left / on the right (§A.5.2)."""
    by_class = defaultdict(list)
    for inst in instances:
        by_class[inst["category"]].append(inst)
    out = []
    for name, group in by_class.items():
        if len(group) == 1:
            out += group
        elif len(group) == 2:
            left, right = sorted(group, key=lambda g: g["box"][0] + g["box"][2])
            out += [{**left, "captions": [f"{name} on the left"]}, {**right, "captions": [f"{name} on the right"]}]
    return out


def limited(rounds: list, max_rounds: int) -> list:
    return rounds[:max_rounds] if max_rounds > 0 else rounds


# ---- the dataset ------------------------------------------------------------------------------------
@dataset("multiround")
class MultiRoundConversations(EpochChoices, torch.utils.data.Dataset):
    """A conversation per item, drawn anew every epoch (segfast.data.rng); see the module doc.
    Options: format, root, annotations and images (coco, lvis, paco; pascal_part: the dataset
    spec, default ppp_datasetspec.yaml, and the VOC image folder), dataset / split_by /
    eval_split (refcoco*, reasonseg, semantic), conversations / eval_conversations (mrseg), masks
    / box_masks (vg), max_rounds, question_set, eval_memory, image_size, clip_size, length
    (synthetic)."""

    def __init__(
        self,
        format: str = "synthetic",
        root: str = "",
        annotations: str = "",
        images: str = "",
        split: str = "train",
        max_rounds: int = 0,
        image_size: int = 64,
        clip_size: int = 32,
        seed: int = 0,
        length: int = 256,
        dataset: str = "refcoco",
        split_by: str = "unc",
        eval_split: str = "val",
        conversations: str = "",
        eval_conversations: str = "",
        masks: str = "",
        box_masks: bool = False,
        question_set: str = "segllm",
        eval_memory: str = "own",
    ):
        if format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
        if max_rounds < 0:
            raise ValueError(f"max_rounds must be >= 0 (0: the paper's lengths), got {max_rounds}")
        if question_set not in ("segllm", "lisa"):
            raise ValueError(f"question_set must be 'segllm' or 'lisa', got {question_set!r}")
        if eval_memory not in ("own", "ground_truth"):
            raise ValueError(f"eval_memory must be 'own' or 'ground_truth', got {eval_memory!r}")
        self.format, self.split, self.seed, self.max_rounds = format, split, seed, int(max_rounds)
        self.size, self.clip_size, self.question_set, self.eval_memory = (
            int(image_size),
            int(clip_size),
            question_set,
            eval_memory,
        )
        self.templates = TEMPLATE_SETS["train" if split == "train" else "val"]
        self.items = self._read(locals())
        if not self.items:
            raise ValueError(f"no {format} conversations for split {split!r} under {root!r}")

    def _read(self, o: dict) -> list:
        fmt, root, evaluating = o["format"], Path(o["root"]), o["split"] != "train"
        split = o["eval_split"] if evaluating else "train"
        if fmt == "synthetic":
            return list(range(int(o["length"])))
        if not o["root"]:
            raise ValueError(f"root is required for format={fmt!r}")
        if fmt in ("coco", "lvis", "paco"):
            if not (o["annotations"] and o["images"]):
                raise ValueError(f"annotations and images are required for format={fmt!r}")
            return read_coco(root, o["annotations"], o["images"])
        if fmt == "pascal_part":
            from segfast.data.panoptic_parts import read_panoptic_parts, read_spec

            if not o["images"]:
                raise ValueError("images (the VOC2010 JPEGImages folder) is required for format='pascal_part'")
            self.part_spec = read_spec(root / (o["annotations"] or "ppp_datasetspec.yaml"))
            return read_panoptic_parts(root, o["images"], "eval" if evaluating else "train")
        if fmt == "refcoco":
            images = read_refer(root, o["dataset"], o["split_by"], split)
            if evaluating:  # every sentence of every referent, one round each (LISA's queries)
                return [(path, h, w, [inst]) for path, h, w, insts in images for inst in insts]
            return images
        if fmt == "refcoco_hard":
            images = read_refer(root, o["dataset"], o["split_by"], split)
            return [(path, h, w, insts, pair) for path, h, w, insts in images for pair in same_class_pairs(insts)]
        if fmt == "vg":
            from segfast.data.visual_genome import read_visual_genome

            images = read_visual_genome(root, o["masks"], bool(o["box_masks"]))
            return [(path, h, w, rels, k) for path, h, w, rels in images for k in range(min(VG_RELATIONS, len(rels)))]
        if fmt in ("ade20k", "cocostuff"):
            from segfast.data.label_maps import read_label_maps

            self.label_maps = read_label_maps(fmt, root, "eval" if evaluating else "train")
            self.classes = self.label_maps.classes
            return self.label_maps.pairs
        if fmt == "reasonseg":
            return read_reasonseg(root, split)
        from segfast.data.mrseg import read_conversations

        self.source = read_conversations(root, o["eval_conversations"] if evaluating else o["conversations"])
        return list(range(len(self.source)))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        if self.format == "mrseg":
            sample = self.source.sample(self.items[i], self.split != "train", self.max_rounds)
            image, masks, given, conversation, refs = sample
        else:
            image, masks, given, conversation, refs = self._built(i)
        out = {
            **model_inputs(image, self.size, self.clip_size),
            "conversation": conversation,
            "masks": frame_masks(masks, self.size),
            "given": frame_masks(given, self.size),
            "refs": torch.tensor(refs, dtype=torch.long),
        }
        if self.split != "train":
            out["memory"] = self.eval_memory
        return out

    def _built(self, i: int) -> tuple:
        """(image, target masks (n, H, W), given masks (k, H, W), conversation, refs)."""
        rng, t = self.rng(i), self.templates
        given = []
        if self.format == "synthetic":
            image, instances = synthetic_scene(content_rng(self.seed, self.split, i))
            instances = [{**x, "captions": [x["category"]], "instance": x["id"]} for x in instances]
            rounds = self._mixed(instances, rng, t)
        elif self.format == "vg":
            path, _, _, relations, k = self.items[i]
            image = read_rgb(path)
            order = list(range(len(relations)))  # the image's relationships shuffled once per epoch, shared by its k
            sample_rng(self.seed, f"{self.split}/vg", str(path), self.epoch).shuffle(order)
            subject, verb, obj = relations[order[k]]
            instances = [subject, obj]
            rounds = interactional(0, verb, 1, instances, rng, t)
        elif self.format in ("ade20k", "cocostuff"):
            return self._semantic(i, rng)
        elif self.format == "pascal_part":
            from segfast.data.panoptic_parts import object_instances

            image_path, label_path = self.items[i]
            image, instances = read_rgb(image_path), object_instances(label_path, *self.part_spec)
            rounds = hierarchical(instances, rng, t)
        elif self.format == "reasonseg":
            entry = self.items[i]
            image = read_rgb(entry["image"])
            query = entry["queries"][0] if self.split != "train" else rng.choice(entry["queries"])
            mask, _ = annotation_masks(entry, *image.shape[:2])
            text = query if entry["is_sentence"] else rng.choice(t["direct"]).format(name=query)
            return image, mask[None], mask[None][:0], [self._first({"question": text, "answer": ANSWER})], [-1]
        else:
            path, _, _, instances, *pair = self.items[i]
            image = read_rgb(path)
            if self.format == "refcoco_hard":
                rounds = hard(pair[0][0], pair[0][1], instances, rng, t)
                given = [pair[0][0]]
            elif self.format == "refcoco" and self.split != "train":
                rounds = [self._benchmark_round(instances[0], f"{path.name}/{instances[0]['id']}")]
            elif self.format == "paco":
                rounds = hierarchical(instances, rng, t)
            elif self.format == "lvis":
                instances = lvis_instances(instances)
                rounds = positional(instances, rng, t)
            elif self.format == "refcoco":
                rounds = positional(instances, rng, t)
            else:
                rounds = self._mixed(instances, rng, t)
        rounds = limited(rounds, self.max_rounds)
        if not rounds:
            raise ValueError(f"{self.format} item {i}: no conversation can be built from its annotations")
        h, w = image.shape[:2]
        masks = torch.stack([instance_mask(instances[r["target"]], h, w) for r in rounds])
        given_masks = torch.stack([instance_mask(instances[g], h, w) for g in given]) if given else masks[:0]
        refs = [len(rounds) if r["ref"] == "given" else -1 if r["ref"] is None else r["ref"] for r in rounds]
        conversation = [{"question": r["question"], "answer": r["answer"], "encode": list(r["encode"])} for r in rounds]
        if given:
            conversation[0]["encode"] = [len(rounds)]
        return image, masks, given_masks, [self._first(conversation[0])] + conversation[1:], refs

    def _first(self, turn: dict) -> dict:
        return turn if turn["question"].startswith(IMAGE) else {**turn, "question": f"{IMAGE} {turn['question']}"}

    def _mixed(self, instances: list, rng: random.Random, t: dict) -> list:
        """Generic instance files (coco, synthetic): a relation drawn among those the image has."""
        kinds = ["positional"]
        if any(x["parent"] is not None for x in instances):
            kinds.append("hierarchical")
        index = {x["id"]: k for k, x in enumerate(instances)}
        relations = [(k, v, index[o]) for k, x in enumerate(instances) for v, o in x["interactions"] if o in index]
        if relations:
            kinds.append("interactional")
        kind = rng.choice(kinds)
        if kind == "hierarchical":
            return hierarchical(instances, rng, t)
        if kind == "interactional":
            subject, verb, obj = rng.choice(relations)  # the subject <verb> the object
            return interactional(subject, verb, obj, instances, rng, t)
        return positional([x for x in instances if x["parent"] is None], rng, t)

    def _benchmark_round(self, inst: dict, key: str) -> dict:
        """One referring query: a validation template chosen by the sample (fixed across runs),
        or LISA's validation question."""
        sentence = inst["captions"][0]
        if self.question_set == "lisa":
            return {
                "question": VAL_SHORT.format(name=sentence),
                "answer": ANSWER,
                "target": 0,
                "ref": None,
                "encode": [],
            }
        template = random.Random(key).choice(self.templates["direct"])
        return {"question": template.format(name=sentence), "answer": ANSWER, "target": 0, "ref": None, "encode": []}

    def _semantic(self, i: int, rng: random.Random) -> tuple:
        """A single round asking for one class present in the image (§4.1)."""
        from segfast.data.label_maps import IGNORE

        image_path, label_path = self.items[i]
        image, label = read_rgb(image_path), self.label_maps.load(label_path)
        present = [int(c) for c in np.unique(label) if c != IGNORE and c < len(self.classes) and self.classes[c]]
        if not present:
            raise ValueError(f"{label_path}: no labelled class to ask about")
        c = rng.choice(present)
        mask = torch.from_numpy(label == c)
        turn = {"question": rng.choice(self.templates["direct"]).format(name=self.classes[c]), "answer": ANSWER}
        return image, mask[None], mask[None][:0], [self._first(turn)], [-1]
