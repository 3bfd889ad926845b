"""Runs survive faults without losing or silently changing what they train: a non-finite stop
replays the failing step on resume, damaged checkpoints are refused (resume falls back to the
newest valid one), a missing RNG file is refused, another process count re-shards exactly, and
metrics.jsonl holds each step once."""

import json
import logging

import pytest
import torch

import segfast
from segfast.models import MODELS
from segfast.train.checkpoint import CheckpointError, load_trained, write_manifest
from segfast.train.engine import NonFiniteLoss
from tests.train.runs import base_config, epochs_config, losses_by_step, torchrun


class Recording(torch.nn.Module):
    """Records the sum of every micro-batch it sees; returns NaN for the micro-batches of
    `explode_at` (1-based calls) when set."""

    seen, explode_at = [], ()

    def __init__(self, cfg, device=None):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))  # not 0-d: torch's full state-dict loading needs a device

    def forward(self, batch):
        Recording.seen.append(int(batch["input_ids"].sum()))
        loss = ((self.w * batch["input_ids"].float().mean() / 30 - 1) ** 2).sum()
        return {"loss": loss * (float("nan") if len(Recording.seen) in Recording.explode_at else 1.0)}


@pytest.fixture
def recording():
    MODELS["recording"] = Recording
    Recording.seen, Recording.explode_at = [], ()
    yield Recording
    del MODELS["recording"]


def _recording_config(out, **run):
    cfg = epochs_config(out, total_steps=8, **run)
    cfg["model"] = {"name": "recording"}
    return cfg


def test_a_nonfinite_stop_resumes_by_replaying_the_failing_step(tmp_path, recording):
    full = segfast.train(_recording_config(tmp_path / "full"))["losses"]
    uninterrupted = list(recording.seen)
    recording.seen, recording.explode_at = [], range(13, 17)  # step 4's four micro-batches
    with pytest.raises(NonFiniteLoss, match=r"step 4.*--resume continues from it, replaying"):
        segfast.train(_recording_config(tmp_path / "run"))
    assert (tmp_path / "run" / "checkpoints" / "step-000003-nonfinite").is_dir()
    recording.seen, recording.explode_at = [], ()
    segfast.train(_recording_config(tmp_path / "run", resume=True))
    assert recording.seen == uninterrupted[12:]  # step 4's batches again, then the rest: none skipped
    resumed = losses_by_step(tmp_path / "run")
    assert [resumed[s] for s in range(1, 9)] == full  # bit for bit


def _killed_run(out, **run):
    """epochs_config run "killed" after step 6 with checkpoints at steps 2 and 4 (keep_last 2)."""
    segfast.train(epochs_config(out, total_steps=10, stop_after=6, save_every=2, keep_last=2, **run))
    return out / "checkpoints"


def test_metrics_hold_each_step_once_after_a_resume(tmp_path):
    ckpts = _killed_run(tmp_path / "run")
    with open(tmp_path / "run" / "metrics.jsonl", "a") as f:
        f.write('{"step": 7, "loss": 0.')  # a line torn by the kill
    assert sorted(p.name for p in ckpts.iterdir()) == ["step-000004", "step-000006"]
    segfast.train(epochs_config(tmp_path / "run", total_steps=10, resume=True, save_every=2))
    assert sorted(losses_by_step(tmp_path / "run")) == list(range(1, 11))  # steps 5-6 were there twice


@pytest.mark.parametrize(
    "damage, why",
    [
        (lambda d: (d / "state.pt").write_bytes((d / "state.pt").read_bytes()[:100]), "state.pt has 100 bytes"),
        (lambda d: _flip_last_byte(d / "trainable.safetensors"), "trainable.safetensors does not match its checksum"),
        (lambda d: (d / "manifest.json").unlink(), "no manifest.json"),
        (lambda d: (d / "rng-0.pt").unlink(), "rng-0.pt is missing"),
    ],
)
def test_a_damaged_newest_checkpoint_falls_back_to_the_newest_valid_one(tmp_path, caplog, damage, why):
    full = segfast.train(epochs_config(tmp_path / "full", total_steps=10))["losses"]
    ckpts = _killed_run(tmp_path / "run")
    damage(ckpts / "step-000006")
    with caplog.at_level(logging.WARNING, logger="segfast"):
        segfast.train(epochs_config(tmp_path / "run", total_steps=10, resume=True))
    assert any("step-000006" in r.message and why in r.message for r in caplog.records), caplog.text
    resumed = losses_by_step(tmp_path / "run")
    assert [resumed[s] for s in range(1, 11)] == full  # from step 4, bit for bit


def _flip_last_byte(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x55  # inside the last tensor's data: loads fine, wrong weights
    path.write_bytes(bytes(data))


def test_every_checkpoint_damaged_is_an_error_and_readers_verify(tmp_path):
    ckpts = _killed_run(tmp_path / "run")
    for d in ckpts.iterdir():
        _flip_last_byte(d / "trainable.safetensors")
    with pytest.raises(CheckpointError, match=r"(?s)no valid checkpoint.*step-000006.*checksum.*step-000004.*checksum"):
        segfast.train(epochs_config(tmp_path / "run", total_steps=10, resume=True))
    with pytest.raises(CheckpointError, match="checksum"):
        load_trained(ckpts / "step-000006")


def test_a_missing_rng_file_is_refused(tmp_path):
    """A checkpoint whose manifest is consistent but lacks a process's RNG file (e.g. copied
    without it and re-manifested) cannot continue exactly: refused, not ignored."""
    ckpts = _killed_run(tmp_path / "run")
    for d in ckpts.iterdir():
        (d / "rng-0.pt").unlink()
        (d / "manifest.json").unlink()
        write_manifest(d)
    with pytest.raises(CheckpointError, match="rng-0.pt is missing"):
        segfast.train(epochs_config(tmp_path / "run", total_steps=10, resume=True))


def test_resuming_on_two_processes_continues_the_one_process_run_exactly(tmp_path):
    """Written by 1 process at step 4, resumed by 2: the remaining steps read the same samples as
    the uninterrupted run (fixed-length data: 1 and 2 processes agree to float rounding)."""
    full = segfast.train(base_config(tmp_path / "full", total_steps=10, save_every=2))["losses"]
    segfast.train(base_config(tmp_path / "run", total_steps=10, stop_after=4, save_every=2))
    output = torchrun(base_config(tmp_path / "run", total_steps=10, save_every=2, resume=True), tmp_path / "r.yaml")
    assert "written by 1 process(es), resumed on 2" in output
    resumed = losses_by_step(tmp_path / "run")
    for step in range(5, 11):
        assert resumed[step] == pytest.approx(full[step - 1], rel=1e-5, abs=1e-6), step
    state = torch.load(tmp_path / "run" / "checkpoints" / "step-000010" / "state.pt", weights_only=False)
    assert state["world_size"] == 2 and state["position"] == 80 % 512


def test_checkpoint_manifest_lists_every_file(tmp_path):
    segfast.train(base_config(tmp_path / "run", total_steps=2, save_every=2))
    d = tmp_path / "run" / "checkpoints" / "step-000002"
    files = json.loads((d / "manifest.json").read_text())["files"]
    assert {"trainable.safetensors", "state.pt", "rng-0.pt", "config.yaml", "adapter/adapter_model.safetensors"} <= set(
        files
    )
    assert all(v["size"] == (d / k).stat().st_size and len(v["sha256"]) == 64 for k, v in files.items())
