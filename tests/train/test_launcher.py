"""Killing only the torchrun launcher stops its workers: no more steps, no more checkpoints."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from segfast.train.checkpoint import checkpoints, verify_checkpoint
from tests.train.runs import ROOT, base_config


def _children(pid: int) -> list:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _steps(out: Path) -> int:
    path = out / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_workers_stop_when_the_launcher_is_killed(tmp_path):
    cfg = base_config(tmp_path / "run", total_steps=100000, save_every=3)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    launcher = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "segfast",
            "train",
            "--config",
            str(tmp_path / "c.yaml"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    workers = []
    try:
        deadline = time.time() + 120
        while _steps(tmp_path / "run") < 4 and time.time() < deadline and launcher.poll() is None:
            time.sleep(0.2)
        assert _steps(tmp_path / "run") >= 4, "the run did not start"
        workers = _children(launcher.pid)
        assert len(workers) == 2
        launcher.send_signal(signal.SIGKILL)
        launcher.wait()
        deadline = time.time() + 30
        while any(_alive(w) for w in workers) and time.time() < deadline:
            time.sleep(0.2)
        assert not any(_alive(w) for w in workers), "the workers kept training after their launcher was killed"
        logged = _steps(tmp_path / "run")
        time.sleep(1.0)
        assert _steps(tmp_path / "run") == logged
        for ckpt in checkpoints(tmp_path / "run"):
            verify_checkpoint(ckpt)  # complete, never partial
        assert not list((tmp_path / "run" / "checkpoints").glob(".tmp-*"))
    finally:
        for pid in [launcher.pid, *workers]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
