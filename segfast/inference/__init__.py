"""Inference from a checkpoint: `segfast.load(checkpoint).predict(image, query)` (predictor.py),
what it returns (prediction.py), each system's way from image and query to masks (systems.py),
and converters of the authors' released checkpoints (convert/)."""

from segfast.inference.prediction import Prediction
from segfast.inference.predictor import Conversation, Predictor, load

__all__ = ["load", "Predictor", "Prediction", "Conversation"]
