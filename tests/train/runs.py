"""Helpers of the engine tests: small toy-llm configs, their logged losses, torchrun launches."""

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def base_config(out, **run):
    return {
        "model": {"name": "toy-llm", "lora": {"dropout": 0.0, "r": 8}},
        "data": {"name": "toy-tokens", "options": {"seq_len": 16, "min_len": 16, "vocab_size": 64, "size": 512}},
        "optim": {"lr": 5e-3, "warmup_steps": 2},
        "run": {
            "output_dir": str(out),
            "total_steps": 8,
            "global_batch_size": 8,
            "micro_batch_size": 2,
            "save_every": 4,
            "log_every": 1,
            "device": "cpu",
            **run,
        },  # CPU even on GPU machines: exact comparisons
    }


def losses_by_step(out) -> dict:
    """The logged loss of every step; a step logged twice is an error."""
    by_step = {}
    for line in (Path(out) / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "loss" in record:
            assert record["step"] not in by_step, f"step {record['step']} is logged twice"
            by_step[record["step"]] = record["loss"]
    return by_step


def torchrun(config: dict, path: Path, nproc: int = 2, *args) -> str:
    """Runs `segfast train --config path` (config written there) under torchrun; its output."""
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "segfast",
        "train",
        "--config",
        str(path),
        *args,
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


def epochs_config(out, **run):
    """base_config over 20 variable-length samples: 10 steps of 8 read 4 epochs, each drawing its
    lengths anew."""
    cfg = base_config(out, **run)
    cfg["data"]["options"].update(size=20, min_len=6)
    return cfg
