"""Generated samples are a function of (seed, split, index, epoch) alone: the same in every process
(torchrun ranks, loader workers, the chain-of-thought cache and the training that reads it),
whatever Python's per-process string-hash salt."""

import os
import subprocess
import sys

import pytest

pytest.importorskip("segment_anything")

SCRIPT = """
import hashlib
import torch
from segfast.data import DATASETS
def fingerprint(v):
    return v.numpy().tobytes() if isinstance(v, torch.Tensor) else repr(v).encode()
for name in ("referring", "seg-conversations", "semantic-queries", "multiround", "seg-queries"):
    dataset = DATASETS[name]({"length": 3} if name != "referring" else {}, "train", 0)
    for i in range(2):
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(i)  # epoch 0 and 1
        sample = dataset[i]
        digest = hashlib.sha256(b"".join(k.encode() + fingerprint(sample[k]) for k in sorted(sample)))
        print(name, i, digest.hexdigest())
"""


def _samples(hash_seed: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    return subprocess.run([sys.executable, "-c", SCRIPT], env=env, check=True, capture_output=True, text=True).stdout


def test_generated_samples_do_not_depend_on_the_process():
    first, second = _samples("1"), _samples("2")
    assert first.count("\n") == 10 and first == second
