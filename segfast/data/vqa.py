"""LLaVA-Instruct-150k conversations (LISA's utils/vqa_dataset.py): visual question answering,
trained on text only (no [SEG], no mask).

Layout (local paths, https://huggingface.co/datasets/liuhaotian/LLaVA-Instruct-150K):
  <root>/<file> (llava_instruct_150k.json): a list of {"id", "image": "<COCO file name>",
      "conversations": [{"from": "human" | "gpt", "value": str}, ...]}
  <images>/<image>: the COCO train2017 images
A sample is one whole multi-round conversation, as LISA keeps it: the <image> placeholder moved
to the front of the first human turn ("<image>\\n{text}"), a leading gpt turn dropped, rounds
of (human question, gpt answer). LISA draws a random conversation on every access; here a
mixture (segfast.data.mixture) draws the item anew every epoch.
"""

import json
from pathlib import Path

import torch

from segfast.data.conversations import sample
from segfast.data.layout import Index, Layout, Need, declare
from segfast.frames import read_rgb
from segfast.registry import dataset
from segfast.text.tokens import IMAGE


def llava_rounds(turns: list) -> list:
    """LLaVA turns -> rounds {"question", "answer"}, the image first in the first question."""
    turns = turns[1:] if turns and turns[0]["from"] != "human" else turns
    if len(turns) < 2 or len(turns) % 2:
        raise ValueError(f"conversation: expected human/gpt pairs, got {[t['from'] for t in turns]}")
    rounds = []
    for k in range(0, len(turns), 2):
        human, gpt = turns[k], turns[k + 1]
        if human["from"] != "human" or gpt["from"] != "gpt":
            raise ValueError(f"conversation: turn {k} is {human['from']}/{gpt['from']}, expected human/gpt")
        question = human["value"]
        if IMAGE in question:  # LISA's preprocess_multimodal
            question = IMAGE + "\n" + question.replace(IMAGE, "").strip()
        rounds.append({"question": question, "answer": gpt["value"]})
    if IMAGE not in rounds[0]["question"]:
        rounds[0]["question"] = IMAGE + "\n" + rounds[0]["question"]
    return rounds


@dataset("vqa-conversations")
class VQAConversations(torch.utils.data.Dataset):
    """One LLaVA-Instruct conversation per sample, with the image and no mask (see the module doc)."""

    def __init__(
        self,
        root: str = "",
        images: str = "",
        file: str = "llava_instruct_150k.json",
        split: str = "train",
        image_size: int = 64,
        clip_size: int = 32,
        seed: int = 0,
    ):
        if not root or not images:
            raise ValueError("root (the folder of the LLaVA-Instruct json) and images (COCO train2017) are required")
        path = Path(root) / file
        if not path.is_file():
            raise FileNotFoundError(f"root: no {path}")
        self.items = json.loads(path.read_text())
        if not self.items:
            raise ValueError(f"{path} holds no conversations")
        self.images, self.split, self.seed = Path(images), split, seed
        self.size, self.clip_size = int(image_size), int(clip_size)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        item = self.items[i]
        image = read_rgb(self.images / item["image"])
        empty = torch.zeros(0, *image.shape[:2], dtype=torch.bool)
        return sample(image, [llava_rounds(item["conversations"])], empty, self.size, self.clip_size)


# The layout this reader expects (segfast.data.layout: `segfast data check`, docs/data.md).
def _llava_index(root: Path, split: str, options: dict) -> Index:
    items = json.loads((root / options["file"]).read_text())
    images = root / options["images"]
    return Index({"conversations": len(items)}, tuple(sorted({str(images / i["image"]) for i in items})))


def _has_conversations(path: Path) -> str:
    items = json.loads(Path(path).read_text())
    llava_rounds(items[0]["conversations"])
    return f"{len(items)} conversations"


declare(
    Layout(
        name="llava-instruct",
        title="LLaVA-Instruct-150K (LISA's VQA data)",
        download="https://huggingface.co/datasets/liuhaotian/LLaVA-Instruct-150K; images: COCO train2017",
        readers={"vqa-conversations": {"file": "{file}", "images": "{images}"}},
        needs=(
            Need("{file}", "a list of {id, image, conversations}", sample=_has_conversations),
            Need("{images}/", "the COCO train2017 images the conversations name"),
        ),
        options={"file": "llava_instruct_150k.json", "images": "train2017"},
        index=_llava_index,
        notes="The reader takes images as a path of its own (give it absolutely); the check takes a relative "
        "images under the root.",
    ),
)
