"""Checkpoints that survive a crash at any moment.

    <output_dir>/checkpoints/step-000100/
        trainable.safetensors   every trainable parameter (full, unsharded)
        adapter/                LoRA in peft's format (PeftModel.from_pretrained loads it)
        state.pt                optimizer, scheduler, step, data position
        rng-<rank>.pt           each process's RNG states
        config.yaml             the run's configuration

A checkpoint is written into a hidden temporary directory and renamed into place only when
complete, so a crash never leaves a partial "step-*" directory; the newest `keep_last` are kept.
Model and optimizer state go through torch.distributed.checkpoint's state-dict API, which
gathers DDP and FSDP2 models alike.
"""

import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
import yaml
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict, set_model_state_dict,
                                                     set_optimizer_state_dict)

from segfast.train.distributed import DistEnv, barrier

FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def checkpoint_root(output_dir) -> Path:
    return Path(output_dir) / "checkpoints"


def latest_checkpoint(output_dir) -> Path | None:
    found = sorted(checkpoint_root(output_dir).glob("step-*"))
    return found[-1] if found else None


def _trainable_names(model) -> set:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(name: str, model, inner, optimizer, scheduler, state: dict, config: dict, env: DistEnv,
                    output_dir, keep_last: int) -> Path:
    """Collective: every rank calls it. `model` is the (possibly wrapped) training module,
    `inner` the unwrapped one."""
    root = checkpoint_root(output_dir)
    final, tmp = root / name, root / f".tmp-{name}"
    model_sd = get_model_state_dict(model, options=FULL)
    optim_sd = get_optimizer_state_dict(model, optimizer, options=FULL)
    if env.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier(env)
    torch.save(_rng_state(), tmp / f"rng-{env.rank}.pt")
    if env.is_main:
        trainable = _trainable_names(inner)
        weights = {k: v.detach().clone() for k, v in model_sd.items() if k in trainable}  # no shared storage
        save_file(weights, str(tmp / "trainable.safetensors"))
        peft_model = getattr(inner, "peft_model", None)
        if peft_model is not None:
            _save_adapter(peft_model, inner, model_sd, tmp / "adapter")
        torch.save({"optimizer": optim_sd, "scheduler": scheduler.state_dict(), **state}, tmp / "state.pt")
        (tmp / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    barrier(env)
    if env.is_main:
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in sorted(root.glob("step-*"))[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    barrier(env)
    return final


def _save_adapter(peft_model, inner, full_sd: dict, directory: Path) -> None:
    """The adapter exactly as PeftModel.save_pretrained writes it, from the gathered weights."""
    from peft import get_peft_model_state_dict

    names = [name for name, module in inner.named_modules() if module is peft_model]
    prefix = f"{names[0]}." if names and names[0] else ""
    sub = {k[len(prefix):]: v for k, v in full_sd.items() if k.startswith(prefix)}
    adapter = get_peft_model_state_dict(peft_model, state_dict=sub)
    directory.mkdir(parents=True)
    save_file({k: v.detach().clone() for k, v in adapter.items()}, str(directory / "adapter_model.safetensors"))
    peft_model.peft_config["default"].save_pretrained(str(directory))


def load_checkpoint(path: Path, model, optimizer, scheduler, env: DistEnv) -> dict:
    """Collective: restores trainable weights, optimizer, scheduler and this rank's RNG; returns
    the saved training state (step, data position, ...)."""
    weights = load_file(str(path / "trainable.safetensors"))
    set_model_state_dict(model, weights, options=StateDictOptions(full_state_dict=True, strict=False))
    state = torch.load(path / "state.pt", weights_only=False)
    set_optimizer_state_dict(model, optimizer, state.pop("optimizer"), options=StateDictOptions(full_state_dict=True))
    scheduler.load_state_dict(state.pop("scheduler"))
    rng = path / f"rng-{env.rank}.pt"
    if rng.exists():
        _set_rng_state(torch.load(rng, weights_only=False))
    return state


def load_trained(directory, device="cpu", overrides=()):
    """The trained model of a checkpoint directory, for inference: rebuilt from its config.yaml
    (plus dotted `overrides`, e.g. model.path on another machine) with the run's seed (so frozen
    random-init parts match), then its trainable weights loaded."""
    from segfast.models import MODELS
    from segfast.train.config import load_config

    directory = Path(directory)
    if not (directory / "trainable.safetensors").exists():
        raise FileNotFoundError(f"{directory} is not a segfast checkpoint (no trainable.safetensors)")
    cfg = load_config(base=yaml.safe_load((directory / "config.yaml").read_text()), overrides=overrides)
    torch.manual_seed(cfg.run.seed)  # as the engine does before building the model
    model = MODELS[cfg.model.name](cfg.model, torch.device(device))
    weights = load_file(str(directory / "trainable.safetensors"))
    missing = set(weights) - set(model.state_dict())
    if missing:
        raise ValueError(f"{directory}: weights for parameters the model does not have: {sorted(missing)[:5]}")
    model.load_state_dict(weights, strict=False)
    return model.to(device).eval()
