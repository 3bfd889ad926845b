"""Chain-of-thought answers generated once and kept on disk.

    <cache>/part-00000.jsonl    one JSON record per line: key, query, kind, reason, target,
    <cache>/part-00001.jsonl    attributes, parsed, dialogue, prompting (one part per writer rank)

The frozen MLLM answers greedily, so a cached record is exactly what inference would produce.
Writers append and flush after each batch; a run killed mid-line leaves a torn last line, which
readers skip and the next writer cuts off, so a rerun resumes after the last complete record.

    segfast cot-cache --config configs/llavaseg.yaml [--splits train eval] [overrides]
    torchrun --nproc-per-node 8 -m segfast cot-cache --config ...     # samples sharded by rank
"""

import json
import os
import warnings
from pathlib import Path

import torch


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
        warnings.warn(f"chain-of-thought cache {directory}: {torn} incomplete line(s) skipped (an interrupted "
                      "writer); rerun segfast cot-cache to fill them", stacklevel=2)
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


def leaf_datasets(dataset) -> list:
    """The datasets under a mixture (or the dataset itself)."""
    if hasattr(dataset, "datasets"):
        return [leaf for d in dataset.datasets for leaf in leaf_datasets(d)]
    return [dataset]


def cache_chain_of_thought(cfg, splits=("train", "eval"), batch_size: int = 8, workers: int = 2) -> dict:
    """Fills each dataset's cot_cache with the answers of the config's frozen MLLM for every
    sample of `splits` not cached yet (this rank's share under torchrun). Returns counts."""
    from tqdm import tqdm

    from segfast.data import DATASETS
    from segfast.models.llavaseg.model import LLaVASeg
    from segfast.train.distributed import barrier, init_distributed, shutdown

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    env = init_distributed(cfg.run.device)
    try:
        chain = LLaVASeg.build_chain(cfg.model, env.device).to(env.device)
        done = skipped = parsed = 0
        for split in splits:
            for dataset in leaf_datasets(DATASETS[cfg.data.name](cfg.data.options, split, cfg.run.seed)):
                if not getattr(dataset, "cot_cache", ""):
                    raise ValueError(f"data options: set cot_cache (a directory) for the {split} split's "
                                     f"{type(dataset).__name__} to cache its chain of thought")
                cached = read_cache(dataset.cot_cache, warn=False)  # torn lines are redone here
                requests = dataset.requests()
                mine = requests[env.rank::env.world_size]
                # one answer per key: the same image and query text (two refs, one sentence) share it
                todo = list({r["key"]: r for r in mine if r["key"] not in cached}.values())
                skipped += sum(r["key"] in cached for r in mine)
                if not todo:
                    continue
                writer = CacheWriter(dataset.cot_cache, env.rank)
                loader = torch.utils.data.DataLoader([r["index"] for r in todo], batch_size=batch_size,
                                                     num_workers=workers, collate_fn=dataset.clip_batch)
                bar = tqdm(total=len(todo), desc=f"chain of thought {split} rank {env.rank}", unit="query",
                           disable=not env.is_main)
                for start, clips in zip(range(0, len(todo), batch_size), loader):
                    batch = todo[start:start + batch_size]
                    records = chain.run(clips.to(env.device), [r["query"] for r in batch], [r["kind"] for r in batch],
                                        [r["key"] for r in batch])
                    writer.append([{**{k: r[k] for k in ("key", "query", "kind")}, **rec}
                                   for r, rec in zip(batch, records)])
                    done += len(batch)
                    parsed += sum(rec["parsed"] for rec in records)
                    bar.update(len(batch))
                    bar.set_postfix(parsed=f"{parsed / done:.0%}")
                bar.close()
        barrier(env)
        return {"rank": env.rank, "generated": done, "already_cached": skipped,
                "parsed": parsed / done if done else None}
    finally:
        shutdown(env)
