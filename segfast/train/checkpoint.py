"""Checkpoints that survive a crash at any moment and are never trusted when damaged.

    <output_dir>/checkpoints/step-000100/
        trainable.safetensors   every trainable parameter (full, unsharded)
        adapter/                LoRA in peft's format (PeftModel.from_pretrained loads it)
        state.pt                optimizer, scheduler, step, data position, process count
        rng-<rank>.pt           each process's RNG states
        config.yaml             the run's configuration
        manifest.json           size and SHA-256 of every file above, written last

A checkpoint is written into a hidden temporary directory and renamed into place only when
complete, so a crash never leaves a partial "step-*" directory; the newest `keep_last` are kept.
Every reader verifies the manifest first (verify_checkpoint); resuming falls back to the newest
valid checkpoint with a warning that names what was wrong with the newer ones. Model and
optimizer state go through torch.distributed.checkpoint's state-dict API, which gathers DDP and
FSDP2 models alike.
"""

import hashlib
import json
import logging
import os
import re
import shutil
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from segfast import registry
from segfast.train.distributed import DistEnv, barrier, broadcast_object
from segfast.train.rng import rng_state, seed_everything, set_rng_state

FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)
MANIFEST = "manifest.json"
NAME = re.compile(r"step-(\d+)(-nonfinite)?")
log = logging.getLogger("segfast")


class CheckpointError(RuntimeError):
    """A checkpoint that is missing files, damaged, or does not fit this run; names what is wrong."""


def checkpoint_root(output_dir) -> Path:
    return Path(output_dir) / "checkpoints"


def checkpoints(output_dir) -> list:
    """Checkpoint directories, oldest first (by step; at one step a regular checkpoint is newer
    than a non-finite stop's, which holds the same state)."""
    found = [(NAME.fullmatch(p.name), p) for p in checkpoint_root(output_dir).glob("step-*") if p.is_dir()]
    return [p for m, p in sorted(((m, p) for m, p in found if m), key=lambda mp: (int(mp[0][1]), not mp[0][2]))]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _files(directory: Path) -> list:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(directory: Path) -> None:
    files = {str(p.relative_to(directory)): {"size": p.stat().st_size, "sha256": _sha256(p)} for p in _files(directory)}
    (directory / MANIFEST).write_text(json.dumps({"files": files}, indent=1))


def verify_checkpoint(directory) -> Path:
    """The directory, after checking every file against its manifest; CheckpointError naming
    the first problem otherwise."""
    directory = Path(directory)
    manifest = directory / MANIFEST
    if not manifest.is_file():
        raise CheckpointError(f"{directory}: no {MANIFEST} (not a complete segfast checkpoint)")
    try:
        files = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError) as exc:
        raise CheckpointError(f"{directory}: {MANIFEST} is unreadable ({exc})") from None
    for name, expected in files.items():
        path = directory / name
        if not path.is_file():
            raise CheckpointError(f"{directory}: {name} is missing")
        size = path.stat().st_size
        if size != expected["size"]:
            raise CheckpointError(
                f"{directory}: {name} has {size} bytes, the manifest says {expected['size']} (truncated or overwritten)"
            )
        if _sha256(path) != expected["sha256"]:
            raise CheckpointError(f"{directory}: {name} does not match its checksum (corrupted bytes)")
    extra = {str(p.relative_to(directory)) for p in _files(directory)} - set(files)
    if extra:
        raise CheckpointError(f"{directory}: files not in the manifest: {sorted(extra)}")
    return directory


def newest_valid_checkpoint(output_dir) -> Path | None:
    """The newest checkpoint that passes verify_checkpoint, warning for each newer one that does
    not (and why); None when there is none at all; CheckpointError when every one is damaged."""
    problems = []
    for path in reversed(checkpoints(output_dir)):
        try:
            return verify_checkpoint(path)
        except CheckpointError as exc:
            log.warning("segfast: skipping damaged checkpoint: %s", exc)
            problems.append(str(exc))
    if problems:
        raise CheckpointError("no valid checkpoint to resume from:\n  " + "\n  ".join(problems))
    return None


def resume_checkpoint(output_dir, env: DistEnv) -> Path | None:
    """newest_valid_checkpoint, chosen by rank 0 (which reads the files once) for every rank."""
    choice = None
    if env.is_main:
        try:
            choice = newest_valid_checkpoint(output_dir)
        except CheckpointError as exc:
            choice = exc
    choice = broadcast_object(choice, env)
    if isinstance(choice, CheckpointError):
        raise choice
    return choice


def _trainable_names(model) -> set:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(
    name: str,
    model,
    inner,
    optimizer,
    scheduler,
    state: dict,
    config: dict,
    env: DistEnv,
    output_dir,
    keep_last: int,
    rng: dict | None = None,
) -> Path:
    """Collective: every rank calls it. `model` is the (possibly wrapped) training module,
    `inner` the unwrapped one; `rng`: this rank's RNG state to store (default: the current one)."""
    root = checkpoint_root(output_dir)
    final, tmp = root / name, root / f".tmp-{name}"
    model_sd = get_model_state_dict(model, options=FULL)
    optim_sd = get_optimizer_state_dict(model, optimizer, options=FULL)
    if env.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier(env)
    torch.save(rng or rng_state(), tmp / f"rng-{env.rank}.pt")
    if env.is_main:
        trainable = _trainable_names(inner)
        weights = {k: v.detach().clone() for k, v in model_sd.items() if k in trainable}  # no shared storage
        save_file(weights, str(tmp / "trainable.safetensors"))
        peft_model = getattr(inner, "peft_model", None)
        if peft_model is not None:
            _save_adapter(peft_model, inner, model_sd, tmp / "adapter")
        torch.save(
            {"optimizer": optim_sd, "scheduler": scheduler.state_dict(), "world_size": env.world_size, **state},
            tmp / "state.pt",
        )
        (tmp / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    barrier(env)
    if env.is_main:
        write_manifest(tmp)  # last: a checkpoint without one was never finished
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in checkpoints(output_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    barrier(env)
    return final


def _save_adapter(peft_model, inner, full_sd: dict, directory: Path) -> None:
    """The adapter exactly as PeftModel.save_pretrained writes it, from the gathered weights."""
    from peft import get_peft_model_state_dict

    names = [name for name, module in inner.named_modules() if module is peft_model]
    prefix = f"{names[0]}." if names and names[0] else ""
    sub = {k[len(prefix) :]: v for k, v in full_sd.items() if k.startswith(prefix)}
    adapter = get_peft_model_state_dict(peft_model, state_dict=sub)
    directory.mkdir(parents=True)
    save_file({k: v.detach().clone() for k, v in adapter.items()}, str(directory / "adapter_model.safetensors"))
    peft_model.peft_config["default"].save_pretrained(str(directory))


def load_checkpoint(path: Path, model, optimizer, scheduler, env: DistEnv, seed: int = 0) -> dict:
    """Collective: restores trainable weights, optimizer, scheduler and this rank's RNG from a
    verified checkpoint; returns the saved training state (step, data position, ...). On the
    process count it was written with, every rank's RNG file must be there; on another count the
    data position still continues exactly (segfast.data.loader), but the RNG streams cannot, so
    each rank is seeded afresh from (seed, rank, step) with a warning."""
    weights = load_file(str(path / "trainable.safetensors"))
    set_model_state_dict(model, weights, options=StateDictOptions(full_state_dict=True, strict=False))
    state = torch.load(path / "state.pt", weights_only=False)
    set_optimizer_state_dict(model, optimizer, state.pop("optimizer"), options=StateDictOptions(full_state_dict=True))
    scheduler.load_state_dict(state.pop("scheduler"))
    if "position" not in state:
        raise CheckpointError(
            f"{path} was written by an older segfast (no global data position); resume it with "
            "the version that wrote it"
        )
    written = state["world_size"]
    if written == env.world_size:
        rng = path / f"rng-{env.rank}.pt"
        if not rng.is_file():
            raise CheckpointError(
                f"{path}: {rng.name} is missing; process {env.rank}'s random state cannot be "
                "restored, so the run would not continue exactly"
            )
        set_rng_state(torch.load(rng, weights_only=False))
    else:
        if env.is_main:
            log.warning(
                "segfast: %s was written by %d process(es), resumed on %d: the data continues exactly "
                "(re-sharded), the random streams (dropout) start afresh",
                path,
                written,
                env.world_size,
            )
        seed_everything(seed + 1_000_003 * state["step"] + env.rank)
    return state


def load_weights(source, model, strict: bool = True) -> Path:
    """Loads the trainable weights of a checkpoint (the LoRA adapter's included) into an unwrapped
    `model`; returns the checkpoint. `source` is a checkpoint or a run directory (its newest
    valid checkpoint). Strict: every saved tensor must exist in the model with its shape, and
    every trainable parameter of the model must be saved; otherwise a CheckpointError lists the
    missing, unexpected and mismatched keys. Not strict: what matches loads, the lists are a
    warning."""
    source = Path(source)
    path = verify_checkpoint(source) if (source / MANIFEST).exists() else newest_valid_checkpoint(source)
    if path is None:
        raise CheckpointError(f"{source}: neither a checkpoint nor a run directory with checkpoints")
    weights = load_file(str(path / "trainable.safetensors"))
    own = model.state_dict()
    unexpected = sorted(k for k in weights if k not in own)
    mismatched = sorted(
        f"{k} {tuple(weights[k].shape)} vs {tuple(own[k].shape)}"
        for k in weights
        if k in own and weights[k].shape != own[k].shape
    )
    missing = sorted(_trainable_names(model) - set(weights))
    if unexpected or mismatched or missing:
        listing = "; ".join(
            f"{what} ({len(keys)}): {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}"
            for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched))
            if keys
        )
        if strict:
            raise CheckpointError(f"{path} does not fit this model: {listing}")
        log.warning("segfast: loading what fits from %s: %s", path, listing)
    model.load_state_dict({k: v for k, v in weights.items() if k in own and v.shape == own[k].shape}, strict=False)
    return path


def load_trained(directory, device="cpu", overrides=()):
    """The trained model of a checkpoint directory, for inference: rebuilt from its config.yaml
    (plus dotted `overrides`, e.g. model.path on another machine) with the run's seed (so frozen
    random-init parts match), then its trainable weights loaded (strictly)."""
    from segfast.config import load_config

    directory = verify_checkpoint(directory)
    cfg = load_config(base=yaml.safe_load((directory / "config.yaml").read_text()), overrides=overrides)
    torch.manual_seed(cfg.run.seed)  # as the engine does before building the model
    model = registry.system(cfg.model.name).model(cfg.model, torch.device(device))
    load_weights(directory, model)
    return model.to(device).eval()


def save_trained(model, config: dict, directory) -> Path:
    """A checkpoint that load_trained reads back into `model`: its trainable weights, the config
    it is rebuilt from, and the manifest over every file already in `directory` (a converter puts
    the base weights there first); no training state, so it starts a run (run.init_from) but
    cannot be resumed."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    trainable = _trainable_names(model)
    weights = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items() if k in trainable}
    save_file(weights, str(directory / "trainable.safetensors"))
    (directory / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    write_manifest(directory)
    return directory
