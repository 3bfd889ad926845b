"""One-line inference: `segfast.load(checkpoint).predict(image, query)`.

A checkpoint is any segfast checkpoint (a training run's checkpoints/step-*, its run directory, or
what `segfast convert` wrote from the authors' released weights). Relative paths in its
config.yaml (model.path, model.options.*_path / sam_checkpoint) and in its inference.json are
read relative to the checkpoint, so a converted checkpoint can be moved. The optional
inference.json beside it holds the system's inference settings (the question template that wraps
a query, LLaVASeg's query kind, LLM-Seg's proposal SAM, ...); keyword arguments of `load` override
them.

On CUDA the language model runs in bf16 (dtype) with the attention segfast.models.llm picks
(flash_attention_2 when flash_attn imports, else PyTorch SDPA), everything else in fp32 under
autocast; on a CPU everything runs in fp32 unless dtype says otherwise.
"""

import contextlib
import json
from pathlib import Path

import numpy as np
import torch
import yaml

from segfast.inference.prediction import Prediction
from segfast.train.checkpoint import MANIFEST, CheckpointError, load_trained, newest_valid_checkpoint

SETTINGS = "inference.json"


def as_image(image) -> np.ndarray:
    """(H, W, 3) uint8 RGB from a path, a PIL image or an array (grey and RGBA converted)."""
    from PIL import Image

    if isinstance(image, (str, Path)):
        from segfast.frames import read_rgb

        if not Path(image).is_file():
            raise FileNotFoundError(f"image: no file at {image}")
        return read_rgb(image)
    if isinstance(image, Image.Image):
        return np.array(image.convert("RGB"))
    if isinstance(image, torch.Tensor):
        image = image.cpu().numpy()
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise ValueError(f"image: arrays must be uint8 (H, W, 3), got {image.dtype}")
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        if image.ndim != 3 or image.shape[2] not in (3, 4) or min(image.shape[:2]) == 0:
            raise ValueError(f"image: expected an (H, W, 3) array, got shape {image.shape}")
        return np.ascontiguousarray(image[:, :, :3])
    raise TypeError(f"image: expected a path, a PIL.Image or an (H, W, 3) uint8 array, got {type(image).__name__}")


def checkpoint_dir(checkpoint) -> Path:
    """The checkpoint itself, or a run directory's newest valid one."""
    path = Path(checkpoint)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint: {path} is not a directory")
    if (path / MANIFEST).exists():
        return path
    found = newest_valid_checkpoint(path)
    if found is None:
        raise CheckpointError(f"checkpoint: {path} is neither a segfast checkpoint nor a run directory with one")
    return found


def local_path(directory: Path, value):
    """`value` resolved against the checkpoint when it is a relative path of something there."""
    if isinstance(value, str) and value and not Path(value).is_absolute() and (directory / value).exists():
        return str((directory / value).resolve())
    return value


def local_paths(directory: Path, model: dict) -> list:
    """Dotted overrides that make relative paths of the model config absolute (relative to the
    checkpoint) where such a file or folder exists there."""
    candidates = [("model.path", model.get("path"))] + [
        (f"model.options.{k}", v) for k, v in (model.get("options") or {}).items()
    ]
    return [f"{key}={local_path(directory, v)}" for key, v in candidates if local_path(directory, v) != v]


def load(checkpoint, device=None, dtype=None, **settings) -> "Predictor":
    """A Predictor for the model of `checkpoint` on `device` (default: a GPU when there is one).
    dtype: the language model's (default bf16 on CUDA, fp32 on a CPU). settings override the
    checkpoint's inference.json (see segfast.inference.systems for each system's)."""
    from segfast.inference.systems import runner

    directory = checkpoint_dir(checkpoint)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, str):
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
    config = yaml.safe_load((directory / "config.yaml").read_text())
    model = load_trained(directory, device, local_paths(directory, config["model"]))
    saved = json.loads((directory / SETTINGS).read_text()) if (directory / SETTINGS).is_file() else {}
    saved = {k: local_path(directory, v) for k, v in saved.items()}  # LLM-Seg's sam_checkpoint
    system = config["model"]["name"]
    return Predictor(model, system, runner(system, model, {**saved, **settings}), device, dtype)


class Predictor:
    """A loaded model and the way its system turns (image, query) into masks and text."""

    def __init__(self, model, system: str, runner, device: torch.device, dtype: torch.dtype):
        self.model, self.system, self.runner, self.device, self.dtype = model, system, runner, device, dtype
        if runner.lm is not None:  # the large part (a release may load in its bf16); the rest stays fp32
            runner.lm.to(dtype)

    def _autocast(self):
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    @torch.no_grad()
    def predict_batch(self, images: list, queries: list, *, classes=None, supports=None) -> list:
        """Predictions for (image, query) pairs, as one batch. classes: one class list for every
        pair (LaSagnA); supports: per pair a list of (image, mask) pairs (LLaFS)."""
        if len(images) != len(queries):
            raise ValueError(f"images and queries differ in length ({len(images)} vs {len(queries)})")
        if not images:
            return []
        arrays = [as_image(i) for i in images]
        queries = [str(q) for q in queries]
        with self._autocast():
            outputs = self.runner.predict(arrays, queries, classes=classes, supports=supports)
        return [
            Prediction(masks=masks.cpu(), text=text, image=image, query=query, labels=labels)
            for image, query, (masks, text, labels) in zip(arrays, queries, outputs)
        ]

    def predict(self, image, query: str, *, classes=None, support=None) -> Prediction:
        """The model's masks and answer for one image and query. classes: LaSagnA's class list
        (each present class gets a mask, labelled); support: LLaFS's (image, mask) pairs."""
        return self.predict_batch([image], [query], classes=classes, supports=[support])[0]

    def chat(self) -> "Conversation":
        return Conversation(self)


class Conversation:
    """Rounds about one image. SegLLM keeps its rounds and mask memory (a later query may refer
    to an earlier target); other systems answer each round on its own. Asking about another
    image starts a new conversation."""

    def __init__(self, predictor: Predictor):
        self.predictor = predictor
        self.reset()

    def reset(self) -> None:
        self.image, self.state = None, None

    @torch.no_grad()
    def ask(self, image, query: str) -> Prediction:
        array = as_image(image)
        if self.image is None or self.image.shape != array.shape or not np.array_equal(self.image, array):
            self.reset()
            self.image = array
        runner = self.predictor.runner
        if not hasattr(runner, "chat_round"):
            return self.predictor.predict(array, query)
        with self.predictor._autocast():
            (masks, text, labels), self.state = runner.chat_round(self.state, array, str(query))
        return Prediction(masks=masks.cpu(), text=text, image=array, query=str(query), labels=labels)

    @property
    def rounds(self) -> int:
        """Rounds the model remembers (always 0 for systems without a conversation memory)."""
        return 0 if self.state is None else len(self.state["rounds"])
