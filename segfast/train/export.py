"""Export a checkpoint as a plain transformers model directory, LoRA merged into the weights."""

from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

from segfast.models import MODELS
from segfast.train.config import load_config


def export(checkpoint_dir, out_dir) -> Path:
    """Rebuilds the model from the checkpoint's config, loads its trainable weights, merges LoRA
    and saves the language model (and tokenizer, when there is one) with save_pretrained."""
    checkpoint_dir, out_dir = Path(checkpoint_dir), Path(out_dir)
    cfg = load_config(base=yaml.safe_load((checkpoint_dir / "config.yaml").read_text()))
    model = MODELS[cfg.model.name](cfg.model, torch.device("cpu"))
    missing, unexpected = model.load_state_dict(load_file(str(checkpoint_dir / "trainable.safetensors")), strict=False)
    if unexpected:
        raise ValueError(f"{checkpoint_dir}: weights that the model does not have: {unexpected[:5]}")
    lm = model.peft_model.merge_and_unload() if getattr(model, "peft_model", None) is not None else model.lm
    out_dir.mkdir(parents=True, exist_ok=True)
    lm.save_pretrained(str(out_dir))
    if getattr(model, "tokenizer", None) is not None:
        model.tokenizer.save_pretrained(str(out_dir))
    return out_dir
