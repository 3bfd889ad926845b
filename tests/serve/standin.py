"""A stand-in for segfast.load's predictor, quick to make, whose masks a test can foretell: round
k of a conversation segments the pixels whose red channel exceeds 40 * k, so each round's mask
differs and shows whether the earlier rounds were kept. remembers=False: a system without a
conversation memory (every round is round 1)."""

import numpy as np
import torch

from segfast.inference import Prediction
from segfast.inference.predictor import as_image


def expected_mask(image: np.ndarray, round_: int) -> np.ndarray:
    return image[:, :, 0] > 40 * round_


class StandInConversation:
    def __init__(self, remembers: bool):
        self.remembers = remembers
        self.reset()

    def reset(self):
        self.image, self.rounds = None, 0

    def ask(self, image, query: str) -> Prediction:
        array = as_image(image)
        if self.image is None or not np.array_equal(self.image, array):
            self.reset()
            self.image = array
        round_ = self.rounds + 1
        self.rounds = round_ if self.remembers else 0
        mask = torch.from_numpy(expected_mask(array, round_))[None]
        return Prediction(masks=mask, text=f"round {round_}: {query} [SEG]", image=array, query=query)


class StandInPredictor:
    def __init__(self, system: str = "segllm", remembers: bool = True):
        self.system, self.remembers = system, remembers

    def chat(self) -> StandInConversation:
        return StandInConversation(self.remembers)
