"""Files that are either complete or absent: write to a temporary name beside the target, then
rename (atomic on POSIX), so a crash never leaves a half-written checkpoint or record."""

import json
import os
from collections.abc import Callable
from pathlib import Path

import torch


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Calls write(tmp_path) and renames tmp_path to path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def save_torch(obj, path: str | Path) -> Path:
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def save_json(obj, path: str | Path) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj)))
