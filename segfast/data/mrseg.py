"""The released MRSeg conversations (SegLLM's authors' dataset on the Hugging Face hub,
Marlo-Z/SegLLM_dataset), read in their own format.

Layout (the authors' DATASET.md; local paths under `root`):
  conversations_folder/all_data_mix_train/<name>.json   training (mr_refcoco_train.json, ...)
  conversations_folder/all_data_mix_val/<name>.json     validation (mr_refcoco_val.json, ...)
  images_folder/...                                      images: coco/train2014, vg/VG_100K, ...
  annotations_folder/<dataset>/...                       the masks the conversations name
A conversation file is a JSON list of {"image": path under images_folder (optional),
"conversations": [{"from": "human" | "gpt", "value": str}, ...], ...}. Bracketed tags stand for
images and masks:
  human  [IMAGE256:<image>]                       the image (becomes <image>)
         [MASK-ENCODE:<image>|<dataset>|<id>]     a mask's encoding in the question; with the
         [BOX-ENCODE:<image>|<dataset>|<id>]      box encoding of the same mask: one "<mask> <box>"
  gpt    [MASK-DECODE:<task>:<ref id>:<id>:<image>:<dataset>]   the target <id>, decoded with the
         [MASK-DECODE:<image>|<dataset>|<id>]                   reference <ref id> ("none": none)
A decoded tag becomes "[SEG]" ("[REF] [SEG]" with a reference). An encoded mask that an earlier
round decoded is that round's output; any other (MRSeg-hard's X) is a given mask.

Masks by dataset name (annotations_folder paths of the authors' annotation configs; the
validation files where the authors keep separate ones):
  refcoco, refcoco+, refcocog   <name>/instances.json, id = COCO annotation id
  lvis, paco_lvis               lvis/lvis_v1_{train,val}.json, paco_lvis/annotations/paco_lvis_v1_{train,val}.json
  visual_genome, pascal         visual_genome/vg_masks_train_new.json, pascal/pascal_labels{,_val}.json:
                                {id: COCO RLE}
  description_based_coco        description_based_coco/seg_mask_per_instance.json:
                                {id: {"segmentation", "image_dim": [h, w]}}
  reason_seg                    reason_seg/annotations/{train,val,test}/<image>.json (LISA's polygons)
  ade20k                        ade20k/annotations/training/<image>.png, id = class (label - 1)
  cocostuff                     cocostuff/train2017/<image>.png, id = label value
Image paths follow the authors' fallbacks: val2014 -> train2014, a "new_" prefix dropped,
VG_100K under vg/.
"""

import json
import re
from pathlib import Path

import numpy as np
import torch

from segfast.data.coco_masks import segmentation_mask
from segfast.data.layout import Index, Layout, Need, declare
from segfast.frames import read_rgb
from segfast.text.segllm import ENCODE
from segfast.text.tokens import IMAGE

COCO_FILES = {
    "refcoco": ("refcoco/instances.json", None),
    "refcoco+": ("refcoco+/instances.json", None),
    "refcocog": ("refcocog/instances.json", None),
    "lvis": ("lvis/lvis_v1_train.json", "lvis/lvis_v1_val.json"),
    "paco_lvis": ("paco_lvis/annotations/paco_lvis_v1_train.json", "paco_lvis/annotations/paco_lvis_v1_val.json"),
}
RLE_FILES = {
    "visual_genome": ("visual_genome/vg_masks_train_new.json", None),
    "pascal": ("pascal/pascal_labels.json", "pascal/pascal_labels_val.json"),
    "description_based_coco": ("description_based_coco/seg_mask_per_instance.json", None),
}
TAG = re.compile(r"\[(IMAGE256|MASK-ENCODE|BOX-ENCODE|MASK-DECODE):([^\]]*)\]")


def parse_decode(body: str) -> tuple:
    """(dataset, target id, reference id or None) of a MASK-DECODE tag's body."""
    if "|" in body:
        _, name, target = body.split("|")
        return name, target, None
    parts = body.split(":")
    if len(parts) not in (5, 6):
        raise ValueError(f"MASK-DECODE: cannot read {body!r}")
    ref, target, name = parts[1], parts[-3], parts[-1]
    return name, target, None if ref in ("", "none", "None") else ref


def parse_conversation(entry: dict) -> dict:
    """{"image", "rounds": [{"question", "answer", "target": (dataset, id), "ref": (dataset, id) |
    None, "encode": [(dataset, id)]}]} of one released conversation."""
    turns = entry["conversations"]
    if len(turns) % 2 or any(t["from"] != w for t, w in zip(turns, ["human", "gpt"] * len(turns))):
        raise ValueError("conversations: turns must alternate human, gpt")
    image, rounds = entry.get("image"), []
    for human, gpt in zip(turns[::2], turns[1::2]):
        pieces, encode, last, at = [], [], None, 0
        for m in TAG.finditer(human["value"]):
            pieces.append(human["value"][at : m.start()])
            at, (kind, body) = m.end(), m.groups()
            if kind == "IMAGE256":
                image = image or body
                pieces.append(f" {IMAGE} ")
                continue
            key = tuple(body.split("|")[1:])
            if kind == "MASK-ENCODE" or last != key:  # a BOX-ENCODE completes its MASK-ENCODE's slot
                encode.append(key)
                pieces.append(f" {ENCODE} ")
            last = key if kind == "MASK-ENCODE" else None
        question = " ".join(("".join(pieces) + human["value"][at:]).split())
        decodes = [parse_decode(b) for k, b in TAG.findall(gpt["value"]) if k == "MASK-DECODE"]
        if len(decodes) != 1:
            raise ValueError(f"conversations: each answer must decode one mask, got {gpt['value']!r}")
        name, target, ref = decodes[0]
        answer = TAG.sub("[REF] [SEG]" if ref else "[SEG]", gpt["value"])
        answer = " ".join(answer.split()) or "[SEG]"
        rounds.append(
            {
                "question": question,
                "answer": answer,
                "target": (name, target),
                "ref": None if ref is None else (name, ref),
                "encode": encode,
            }
        )
    if not image:
        raise ValueError("conversations: no image (neither an 'image' field nor an [IMAGE256:...] tag)")
    return {"image": image, "rounds": rounds}


class Conversations:
    """The released conversations of one file and the masks they name."""

    def __init__(self, root: Path, entries: list):
        self.root, self.entries, self._files = root, entries, {}

    def __len__(self):
        return len(self.entries)

    def _json(self, relative: str):
        if relative not in self._files:
            path = self.root / "annotations_folder" / relative
            if not path.is_file():
                raise FileNotFoundError(f"root: no annotation file {path} (see segfast.data.mrseg)")
            data = json.loads(path.read_text())
            if "annotations" in data:  # COCO-style: by annotation id
                data = {str(a["id"]): a for a in data["annotations"]}
            self._files[relative] = data
        return self._files[relative]

    def image_path(self, image: str) -> Path:
        folder = self.root / "images_folder"
        for candidate in (image, image.replace("val2014", "train2014"), image.replace("new_", "")):
            if (folder / candidate).is_file():
                return folder / candidate
            if "VG_100K" in candidate and (folder / "vg" / candidate).is_file():
                return folder / "vg" / candidate
        raise FileNotFoundError(f"root: no image {folder / image}")

    def mask(self, name: str, mask_id: str, image: str, height: int, width: int, evaluating: bool) -> torch.Tensor:
        """(H, W) bool mask `mask_id` of dataset `name` on `image`."""
        stem = Path(image).stem
        if name in COCO_FILES or name in RLE_FILES:
            train, val = {**COCO_FILES, **RLE_FILES}[name]
            entry = self._json(val if evaluating and val else train)[str(mask_id)]
            if name == "description_based_coco":
                return segmentation_mask(entry["segmentation"], *entry["image_dim"])
            return segmentation_mask(entry.get("segmentation", entry), height, width)
        if name in ("reason_seg", "reason_seg_eval"):
            from segfast.data.referring import annotation_masks

            split = next((s for s in ("train", "val", "test") if f"/{s}/" in f"/{image}"), "train")
            path = self.root / "annotations_folder" / "reason_seg" / "annotations" / split / f"{stem}.json"
            if not path.is_file():
                raise FileNotFoundError(f"root: no ReasonSeg annotation {path}")
            return annotation_masks({"shapes": json.loads(path.read_text())["shapes"]}, height, width)[0]
        if name in ("ade20k", "cocostuff"):
            from PIL import Image

            folder = "ade20k/annotations/training" if name == "ade20k" else "cocostuff/train2017"
            with Image.open(self.root / "annotations_folder" / folder / f"{stem}.png") as im:
                label = np.asarray(im).astype(np.int64)
            if name == "ade20k":
                label = np.where(label == 0, 255, label - 1)
            return torch.from_numpy(label == int(mask_id))
        raise ValueError(f"conversations: unknown mask dataset {name!r}")

    def sample(self, index: int, evaluating: bool, max_rounds: int = 0) -> tuple:
        """(image (H, W, 3), target masks (n, H, W), given masks (k, H, W), conversation, refs);
        max_rounds > 0 keeps the first rounds only (the authors' --limit_rounds)."""
        parsed = parse_conversation(self.entries[index])
        image = read_rgb(self.image_path(parsed["image"]))
        h, w = image.shape[:2]
        rounds = parsed["rounds"][:max_rounds] if max_rounds > 0 else parsed["rounds"]
        targets = [r["target"] for r in rounds]
        given = []

        def where(key, before: int) -> int:
            """Index in masks ++ given: an earlier round's output, else a given mask."""
            earlier = [r for r in range(before) if targets[r] == key]
            if earlier:
                return earlier[-1]
            if key not in given:
                given.append(key)
            return len(rounds) + given.index(key)

        conversation, refs = [], []
        for r, turn in enumerate(rounds):
            encode = [where(k, r) for k in turn["encode"]]
            conversation.append({"question": turn["question"], "answer": turn["answer"], "encode": encode})
            refs.append(-1 if turn["ref"] is None else where(turn["ref"], r))
        load = lambda key: self.mask(key[0], key[1], parsed["image"], h, w, evaluating)  # noqa: E731
        masks = torch.stack([load(k) for k in targets])
        given_masks = torch.stack([load(k) for k in given]) if given else masks[:0]
        if not conversation[0]["question"].startswith(IMAGE):
            conversation[0]["question"] = f"{IMAGE} {conversation[0]['question']}"
        return image, masks, given_masks, conversation, refs


def read_conversations(root: Path, name: str) -> Conversations:
    """The conversations of conversations_folder/<name> (e.g. all_data_mix_val/mr_refcoco_val.json)."""
    if not name:
        raise ValueError("conversations / eval_conversations: name a file under conversations_folder")
    path = root / "conversations_folder" / name
    if not path.is_file():
        raise FileNotFoundError(f"conversations: no released MRSeg file {path}")
    return Conversations(root, json.loads(path.read_text()))


# The layout this reader expects (segfast.data.layout: `segfast data check`, docs/data.md).
def _mrseg_index(root: Path, split: str, options: dict) -> Index:
    """The conversations of one file, the images they show and the annotation files of the masks
    they name (ReasonSeg / ADE20K / COCO-Stuff masks are per image: not listed here)."""
    source = read_conversations(root, options["conversations"])
    evaluating = "val" in Path(options["conversations"]).parent.name
    files, rounds, datasets = set(), 0, set()
    for entry in source.entries:
        parsed = parse_conversation(entry)
        rounds += len(parsed["rounds"])
        datasets |= {r["target"][0] for r in parsed["rounds"]}
        try:
            files.add(str(source.image_path(parsed["image"])))
        except FileNotFoundError:
            files.add(str(root / "images_folder" / parsed["image"]))
    for name in datasets & {*COCO_FILES, *RLE_FILES}:
        train, val = {**COCO_FILES, **RLE_FILES}[name]
        files.add(str(root / "annotations_folder" / (val if evaluating and val else train)))
    return Index({"conversations": len(source), "rounds": rounds}, tuple(sorted(files)))


def _conversations(path: Path) -> str:
    entries = json.loads(Path(path).read_text())
    parse_conversation(entries[0])
    return f"{len(entries)} conversations"


declare(
    Layout(
        name="mrseg",
        title="MRSeg, the released conversations (SegLLM)",
        download="https://huggingface.co/datasets/Marlo-Z/SegLLM_dataset (the authors' DATASET.md layout)",
        readers={"multiround": {"format": "mrseg", "conversations": "{conversations}"}},
        needs=(
            Need("conversations_folder/{conversations}", "a released conversation file", sample=_conversations),
            Need("images_folder/", "the images the conversations show (coco/train2014, vg/VG_100K, ...)"),
            Need("annotations_folder/", "the masks the conversations name, per dataset"),
        ),
        options={"conversations": "all_data_mix_val/mr_refcoco_val.json"},
        index=_mrseg_index,
        notes="Set the training file as conversations and the validation file as eval_conversations in "
        "data.options; check each with conversations=<file under conversations_folder>.",
    ),
)
