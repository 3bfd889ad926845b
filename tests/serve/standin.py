"""A stand-in for segfast.load's predictor, quick to make, whose masks a test can foretell: round
k of a conversation segments the pixels whose red channel exceeds 40 * k, so each round's mask
differs and shows whether the earlier rounds were kept. remembers=False: a system without a
conversation memory (every round is round 1). predict records its calls; with classes it gives
mask i the pixels above 40 * (i + 1), labelled with class i; refuses: the ValueError every
question gets (as LLaFS without a support pair)."""

import numpy as np
import torch

from segfast.inference import Prediction
from segfast.inference.predictor import as_image


def expected_mask(image: np.ndarray, round_: int) -> np.ndarray:
    return image[:, :, 0] > 40 * round_


class StandInConversation:
    def __init__(self, remembers: bool, refuses: str | None):
        self.remembers, self.refuses = remembers, refuses
        self.reset()

    def reset(self):
        self.image, self.rounds = None, 0

    def ask(self, image, query: str) -> Prediction:
        if self.refuses:
            raise ValueError(self.refuses)
        array = as_image(image)
        if self.image is None or not np.array_equal(self.image, array):
            self.reset()
            self.image = array
        round_ = self.rounds + 1
        self.rounds = round_ if self.remembers else 0
        mask = torch.from_numpy(expected_mask(array, round_))[None]
        return Prediction(masks=mask, text=f"round {round_}: {query} [SEG]", image=array, query=query)


class StandInPredictor:
    def __init__(self, system: str = "segllm", remembers: bool = True, refuses: str | None = None):
        self.system, self.remembers, self.refuses, self.calls = system, remembers, refuses, []

    def chat(self) -> StandInConversation:
        return StandInConversation(self.remembers, self.refuses)

    def predict(self, image, query: str, *, classes=None, support=None) -> Prediction:
        self.calls.append({"query": query, "classes": classes, "support": support})
        array, names = as_image(image), classes or ["all"]
        masks = torch.stack([torch.from_numpy(expected_mask(array, i + 1)) for i in range(len(names))])
        return Prediction(masks=masks, text=f"predicted: {query}", image=array, query=query, labels=classes)
