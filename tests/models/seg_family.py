"""Shared helpers of the [SEG]-token family tests: tiny models built from configs, saved, and
loaded back through the real paths (model.path, sam_checkpoint, clip_path)."""

import numpy as np
import torch

from segfast.config import LoraConfig, ModelConfig
from segfast.data import collate
from segfast.models import MODELS
from segfast.text.lisa import vocabulary

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
    return {
        n: p.grad is not None and bool(p.grad.abs().sum() > 0) for n, p in model.named_parameters() if p.requires_grad
    }


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


def train_tiny(output_dir, model: dict, data: dict, steps: int = 2) -> list:
    """A short CPU run through segfast.train with a checkpoint and an evaluation at the last step;
    checks every loss is finite and returns the metrics.jsonl records."""
    import json

    import segfast

    result = segfast.train(
        {
            "model": {"lora": {"r": 4, "alpha": 8}, **model},
            "data": data,
            "optim": {"lr": 1e-3, "warmup_steps": 0},
            "run": {
                "output_dir": str(output_dir),
                "total_steps": steps,
                "global_batch_size": 2,
                "micro_batch_size": 2,
                "save_every": steps,
                "eval_every": steps,
                "eval_batches": 1,
                "device": "cpu",
            },
        }
    )
    assert result["step"] == steps and len(result["losses"]) == steps
    assert all(np.isfinite(v) for v in result["losses"])
    assert (output_dir / "checkpoints" / f"step-{steps:06d}" / "adapter").is_dir()
    return [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


def learning_curve(output_dir, name: str, data: dict, steps: int) -> dict:
    """A constant-lr run of `steps` on a tiny task; the means of each logged loss over its first
    and its last three steps: {key: (first, last)}."""
    import json

    import segfast

    segfast.train(
        {
            "model": {"name": name, "lora": {"r": 4, "alpha": 8}},
            "data": data,
            "optim": {"lr": 2e-3, "warmup_steps": 0, "schedule": "constant"},
            "run": {
                "output_dir": str(output_dir),
                "total_steps": steps,
                "global_batch_size": 2,
                "micro_batch_size": 2,
                "save_every": 10 * steps,
                "device": "cpu",
            },
        }
    )
    records = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
    return {k: (np.mean([r[k] for r in records[:3]]), np.mean([r[k] for r in records[-3:]])) for k in records[0]}


def write_refer(
    root,
    image: np.ndarray,
    refs: list,
    annotations: list,
    categories: list = (),
    dataset: str = "refcoco",
    images: str = "train2014",
) -> None:
    """A refCOCO-style folder (the refer toolkit layout) with one image c.jpg (image id 1) under
    images/<images> (refCLEF's are in saiapr_tc-12)."""
    import json
    import pickle

    from PIL import Image

    (root / dataset).mkdir(parents=True)
    (root / "images" / images).mkdir(parents=True)
    Image.fromarray(image).save(root / "images" / images / "c.jpg")
    with open(root / dataset / "refs(unc).p", "wb") as f:
        pickle.dump(refs, f)
    (root / dataset / "instances.json").write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "c.jpg", "height": image.shape[0], "width": image.shape[1]}],
                "annotations": annotations,
                "categories": list(categories),
            }
        )
    )
