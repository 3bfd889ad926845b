"""LLaVASeg's chain-of-thought answers generated once and kept on disk (the files:
segfast.data.cot_cache). The frozen MLLM answers greedily, so a cached record is exactly what
inference would produce.

    segfast cot-cache --config configs/llavaseg.yaml [--splits train eval] [overrides]
    torchrun --nproc-per-node 8 -m segfast cot-cache --config ...     # samples sharded by rank
"""

import torch
from tqdm import tqdm

from segfast import registry
from segfast.config import load_config
from segfast.data.cot_cache import CacheWriter, read_cache
from segfast.models.llavaseg.model import LLaVASeg
from segfast.registry import Job, register_job
from segfast.train.distributed import barrier, init_distributed, shutdown


def leaf_datasets(dataset) -> list:
    """The datasets under a mixture (or the dataset itself)."""
    if hasattr(dataset, "datasets"):
        return [leaf for d in dataset.datasets for leaf in leaf_datasets(d)]
    return [dataset]


def cache_chain_of_thought(cfg, splits=("train", "eval"), batch_size: int = 8, workers: int = 2) -> dict:
    """Fills each dataset's cot_cache with the answers of the config's frozen MLLM for every
    sample of `splits` not cached yet (this rank's share under torchrun). Returns counts."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    env = init_distributed(cfg.run.device)
    try:
        chain = LLaVASeg.build_chain(cfg.model, env.device).to(env.device)
        done = skipped = parsed = 0
        for split in splits:
            for dataset in leaf_datasets(registry.build_dataset(cfg.data.name, cfg.data.options, split, cfg.run.seed)):
                if not getattr(dataset, "cot_cache", ""):
                    raise ValueError(
                        f"data options: set cot_cache (a directory) for the {split} split's "
                        f"{type(dataset).__name__} to cache its chain of thought"
                    )
                cached = read_cache(dataset.cot_cache, warn=False)  # torn lines are redone here
                requests = dataset.requests()
                mine = requests[env.rank :: env.world_size]
                # one answer per key: the same image and query text (two refs, one sentence) share it
                todo = list({r["key"]: r for r in mine if r["key"] not in cached}.values())
                skipped += sum(r["key"] in cached for r in mine)
                if not todo:
                    continue
                writer = CacheWriter(dataset.cot_cache, env.rank)
                loader = torch.utils.data.DataLoader(
                    [r["index"] for r in todo],
                    batch_size=batch_size,
                    num_workers=workers,
                    collate_fn=dataset.clip_batch,
                )
                bar = tqdm(
                    total=len(todo),
                    desc=f"chain of thought {split} rank {env.rank}",
                    unit="query",
                    disable=not env.is_main,
                )
                for start, clips in zip(range(0, len(todo), batch_size), loader):
                    batch = todo[start : start + batch_size]
                    records = chain.run(
                        clips.to(env.device),
                        [r["query"] for r in batch],
                        [r["kind"] for r in batch],
                        [r["key"] for r in batch],
                    )
                    writer.append(
                        [{**{k: r[k] for k in ("key", "query", "kind")}, **rec} for r, rec in zip(batch, records)]
                    )
                    done += len(batch)
                    parsed += sum(rec["parsed"] for rec in records)
                    bar.update(len(batch))
                    bar.set_postfix(parsed=f"{parsed / done:.0%}")
                bar.close()
        barrier(env)
        return {
            "rank": env.rank,
            "generated": done,
            "already_cached": skipped,
            "parsed": parsed / done if done else None,
        }
    finally:
        shutdown(env)


def arguments(p) -> None:
    p.add_argument("--config", required=True, help="YAML file of the LLaVASeg run (model and data)")
    p.add_argument("--splits", nargs="+", default=["train", "eval"], choices=["train", "eval"])
    p.add_argument("--batch-size", type=int, default=8, help="queries per generation batch")
    p.add_argument("--workers", type=int, default=2, help="image-decoding worker processes")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. model.path=/weights/llava-1.5-7b-hf")


def run(args) -> int:
    result = cache_chain_of_thought(
        load_config(args.config, args.overrides), args.splits, args.batch_size, args.workers
    )
    parsed = "" if result["parsed"] is None else f", target and attributes parsed in {result['parsed']:.1%}"
    print(
        f"rank {result['rank']}: {result['generated']} answers generated, {result['already_cached']} already "
        f"cached{parsed}"
    )
    return 0


register_job(
    Job(
        "cot-cache",
        arguments,
        run,
        "LLaVASeg: generate and cache the frozen MLLM's chain-of-thought answers "
        "for a config's data (resumable; torchrun shards by rank)",
    )
)
