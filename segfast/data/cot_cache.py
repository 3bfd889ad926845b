"""The chain-of-thought cache's files (written by `segfast cot-cache`, segfast.jobs.cot_cache):

    <cache>/part-00000.jsonl    one JSON record per line: key, query, kind, reason, target,
    <cache>/part-00001.jsonl    attributes, parsed, dialogue, prompting (one part per writer rank)

Writers append and flush after each batch; a run killed mid-line leaves a torn last line, which
readers skip and the next writer cuts off, so a rerun resumes after the last complete record.
"""

import json
import os
import warnings
from pathlib import Path


def read_cache(directory, warn: bool = True) -> dict:
    """key -> record of every complete line of every part (warn: about torn lines)."""
    records, torn = {}, 0
    for part in sorted(Path(directory).glob("part-*.jsonl")):
        for line in part.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                torn += 1
                continue
            records[record["key"]] = record
    if torn and warn:
        warnings.warn(
            f"chain-of-thought cache {directory}: {torn} incomplete line(s) skipped (an interrupted "
            "writer); rerun segfast cot-cache to fill them",
            stacklevel=2,
        )
    return records


class CacheWriter:
    """Appends records to one part file; a torn last line is cut off first."""

    def __init__(self, directory, rank: int = 0):
        self.path = Path(directory) / f"part-{rank:05d}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            data = self.path.read_bytes()
            if data and not data.endswith(b"\n"):
                with open(self.path, "r+b") as f:
                    f.truncate(data.rfind(b"\n") + 1)

    def append(self, records: list) -> None:
        with open(self.path, "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
            f.flush()
            os.fsync(f.fileno())
