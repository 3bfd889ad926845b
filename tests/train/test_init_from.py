"""A later training stage starts from an earlier stage's weights (run.init_from), strictly by
default, and never from scratch by accident."""

import logging

import pytest
import torch
from safetensors.torch import load_file

import segfast
from segfast.train.checkpoint import CheckpointError, load_trained
from tests.train.runs import base_config


def _stage1(tmp_path):
    segfast.train(base_config(tmp_path / "stage1", total_steps=4))
    return tmp_path / "stage1" / "checkpoints" / "step-000004"


def _weights(ckpt):
    return load_file(str(ckpt / "trainable.safetensors"))


def test_stage_two_starts_from_stage_one_weights(tmp_path, capsys):
    source = _stage1(tmp_path)
    # a learning rate so small that one step leaves the weights where they started
    tiny_step = {"optim": {"lr": 1e-12, "warmup_steps": 0}}
    segfast.train(
        {
            **base_config(tmp_path / "stage2", total_steps=1, save_every=1, init_from=str(tmp_path / "stage1")),
            **tiny_step,
        }
    )
    assert f"initialised from {source}" in capsys.readouterr().out  # a run directory: its newest checkpoint
    segfast.train({**base_config(tmp_path / "scratch", total_steps=1, save_every=1), **tiny_step})
    before, after = _weights(source), _weights(tmp_path / "stage2" / "checkpoints" / "step-000001")
    scratch = _weights(tmp_path / "scratch" / "checkpoints" / "step-000001")
    assert set(before) == set(after) and any("lora_B" in k for k in before)  # the adapter is handed over too
    for k in before:
        torch.testing.assert_close(after[k], before[k], atol=1e-9, rtol=0)
    assert any(not torch.allclose(scratch[k], before[k]) for k in before)  # not what a fresh start gives


def test_a_checkpoint_that_does_not_fit_is_refused_listing_the_keys(tmp_path, caplog):
    source = _stage1(tmp_path)
    cfg = base_config(tmp_path / "stage2", total_steps=1, init_from=str(source))
    cfg["model"]["lora"]["r"] = 4
    with pytest.raises(
        CheckpointError, match=r"does not fit this model: shape mismatch \(\d+\): .*lora_A.*\(8, 64\) vs \(4, 64\)"
    ):
        segfast.train(cfg)
    cfg["model"]["lora"] = {"enabled": False}
    with pytest.raises(CheckpointError, match=r"missing \(\d+\): .*embed_tokens.*; unexpected \(\d+\): .*lora_"):
        segfast.train(cfg)
    cfg["run"]["init_strict"] = False
    with caplog.at_level(logging.WARNING, logger="segfast"):
        segfast.train(cfg)
    assert "loading what fits" in caplog.text and "unexpected" in caplog.text


def test_a_resumed_stage_keeps_its_own_weights_and_damaged_sources_are_refused(tmp_path, capsys):
    source = _stage1(tmp_path)
    segfast.train(base_config(tmp_path / "stage2", total_steps=2, save_every=2, init_from=str(source)))
    capsys.readouterr()
    segfast.train(base_config(tmp_path / "stage2", total_steps=4, save_every=2, init_from=str(source), resume=True))
    assert "resumed from" in capsys.readouterr().out  # its own step 2, not stage 1 again
    data = bytearray((source / "trainable.safetensors").read_bytes())
    data[-1] ^= 1
    (source / "trainable.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum"):
        segfast.train(base_config(tmp_path / "stage3", total_steps=1, init_from=str(source)))
    with pytest.raises(CheckpointError, match="neither a checkpoint nor a run directory"):
        segfast.train(base_config(tmp_path / "stage4", total_steps=1, init_from=str(tmp_path / "nothing")))


def test_load_trained_is_strict(tmp_path):
    source = _stage1(tmp_path)
    model = load_trained(source)
    saved = _weights(source)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())
