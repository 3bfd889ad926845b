"""A stand-in for segfast.load's predictor with the interface the page uses, and masks a test can
predict: round k of a conversation segments the pixels whose red channel exceeds 40 * k, so each
round's mask differs and shows whether the rounds were kept."""

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image


class StandInPrediction:
    def __init__(self, image: np.ndarray, masks: torch.Tensor, text: str):
        self.image, self.masks, self.text = image, masks, text

    def overlay(self):
        out = self.image.copy()
        out[self.masks.any(0).numpy()] = (255, 0, 0)
        return Image.fromarray(out)

    def save(self, out_dir, stem: str) -> dict:
        out = Path(out_dir)
        masks = []
        for i, mask in enumerate(self.masks.numpy()):
            masks.append(out / f"{stem}_mask{i}.png")
            Image.fromarray(mask.astype(np.uint8) * 255).save(masks[-1])
        (out / f"{stem}.json").write_text(json.dumps({"text": self.text}))
        return {"masks": masks, "json": out / f"{stem}.json", "overlay": None}


def expected_mask(image: np.ndarray, round_: int) -> np.ndarray:
    return image[:, :, 0] > 40 * round_


class StandInConversation:
    def __init__(self, remembers: bool):
        self.remembers = remembers
        self.reset()

    def reset(self):
        self.image, self.rounds = None, 0

    def ask(self, image, query: str) -> StandInPrediction:
        array = np.array(image.convert("RGB")) if isinstance(image, Image.Image) else image
        if self.image is None or not np.array_equal(self.image, array):
            self.reset()
            self.image = array
        round_ = self.rounds + 1
        if self.remembers:
            self.rounds = round_
        mask = torch.from_numpy(expected_mask(array, round_))[None]
        return StandInPrediction(array, mask, f"round {round_}: {query} [SEG]")


class StandInPredictor:
    def __init__(self, system: str = "segllm", remembers: bool = True):
        self.system, self.remembers = system, remembers

    def chat(self) -> StandInConversation:
        return StandInConversation(self.remembers)
