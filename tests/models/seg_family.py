"""Shared helpers of the [SEG]-token family tests: tiny models built from configs, saved, and
loaded back through the real paths (model.path, sam_checkpoint, clip_path)."""

import numpy as np
import torch

from segfast.data import collate
from segfast.data.conversations import vocabulary
from segfast.models import MODELS
from segfast.train.config import LoraConfig, ModelConfig

LORA = LoraConfig(r=4, alpha=8)


def saved_weights(root) -> dict:
    """model.path and options pointing at a tiny LLaVA, SAM and CLIP written under root."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from segfast.models.llava import save_tiny_llava
    from segfast.models.sam.build import save_sam, tiny_sam
    from segfast.models.segllm.memory import TINY_CLIP

    llava = save_tiny_llava(root / "llava", vocabulary())
    sam = save_sam(tiny_sam(image_size=64), root / "sam.pth")
    CLIPVisionModel(CLIPVisionConfig(**TINY_CLIP)).save_pretrained(root / "clip")
    return {"path": str(llava), "sam_checkpoint": str(sam), "clip_path": str(root / "clip")}


def build(name: str, path: str = "", **options):
    torch.manual_seed(0)
    return MODELS[name](ModelConfig(name=name, path=path, lora=LORA, options=options))


def batch_of(dataset, n: int = 2) -> dict:
    return collate([dataset[i] for i in range(n)])


def trainable_gradients(model, losses) -> dict:
    """name -> whether its gradient is nonzero, for every trainable parameter, after backward."""
    sum(losses.values()).backward()
    return {n: p.grad is not None and bool(p.grad.abs().sum() > 0) for n, p in model.named_parameters()
            if p.requires_grad}


def assert_frozen_and_trained(model, grads: dict, trained: tuple, frozen: tuple) -> None:
    for part in trained:
        names = [n for n in grads if part in n]
        assert names and any(grads[n] for n in names), f"no gradient reaches {part}"
    for part in frozen:
        params = [p for n, p in model.named_parameters() if part in n]
        assert params and not any(p.requires_grad for p in params), f"{part} should be frozen"


def square_masks(size: int, boxes) -> torch.Tensor:
    m = np.zeros((len(boxes), size, size), bool)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        m[i, y0:y1, x0:x1] = True
    return torch.from_numpy(m)
