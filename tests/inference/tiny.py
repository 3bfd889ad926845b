"""Tiny checkpoints of every system for the inference tests: built from configs, their trainable
weights moved away from the initialisation (so a checkpoint that did not load would show), and
written with save_trained as segfast.load reads them."""

import numpy as np
import torch

from segfast.registry import system
from segfast.train.checkpoint import save_trained

LORA = {"r": 4, "alpha": 8}


def tiny_checkpoint(directory, name: str, path: str = "", lora: dict | None = None, **options):
    """(checkpoint directory, the model it holds) for system `name`, tiny unless `path`."""
    from segfast.config import load_config

    lora = LORA if lora is None else lora
    config = {"model": {"name": name, "path": path, "lora": lora, "options": options}, "run": {"seed": 0}}
    cfg = load_config(base=config)
    torch.manual_seed(0)
    model = system(name).model(cfg.model, torch.device("cpu"))
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.02)
    save_trained(model, config, directory)
    return directory, model.eval()


def picture(height: int = 45, width: int = 70, seed: int = 0) -> np.ndarray:
    """(H, W, 3) uint8: a flat background with a bright rectangle (not square, to catch H/W swaps)."""
    rng = np.random.default_rng(seed)
    image = np.full((height, width, 3), rng.integers(0, 80, 3), np.uint8)
    image[height // 4 : height // 2, width // 3 : width - 5] = rng.integers(150, 256, 3)
    return image
