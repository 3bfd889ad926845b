"""Evaluation: every sample of the eval split scored exactly once, on any number of processes.

Process r scores samples r, r + world, r + 2 world, ... (no shuffling, nothing dropped), padded
to the same number of micro-batches on every process so that the collectives of DDP and FSDP
stay in step; padding is never scored: a partly padded batch is cut to its real samples, a
batch of padding only runs with its meter updates undone. Meters hold exact integer counts and
are summed over processes, so 1, 2 or 3 processes give identical metrics.

evaluate_checkpoint (`segfast evaluate`) runs a saved checkpoint on its config's eval split or
on a named benchmark protocol (segfast.train.protocols).
"""

import torch
from torch.utils.data import DataLoader, IterableDataset

from segfast import registry
from segfast.config import TrainConfig
from segfast.data import collate
from segfast.data.collate import to_device
from segfast.data.loader import make_loader
from segfast.train.distributed import DistEnv, sum_across
from segfast.train.precision import autocast


def eval_slots(size: int, rank: int, world: int) -> list:
    """The sample indices process `rank` scores, padded with None to ceil(size / world)."""
    return [i if i < size else None for i in range(rank, -(-size // world) * world, world)]


def take(batch: dict, keep: list) -> dict:
    """The samples of a collated batch whose `keep` is true (per-sample tensors and lists)."""
    idx = [i for i, k in enumerate(keep) if k]
    n = len(keep)

    def cut(v):
        if isinstance(v, torch.Tensor) and v.dim() and v.shape[0] == n:
            return v[idx]
        return [v[i] for i in idx] if isinstance(v, list) and len(v) == n else v

    return {k: cut(v) for k, v in batch.items()}


def _batches(dataset, cfg: TrainConfig, env: DistEnv, batches: int):
    """(batch, which samples count) pairs of this process: the shard of a map-style split; the
    first `batches` micro-batches of an endless stream (sharded as in training)."""
    m = cfg.run.micro_batch_size
    if isinstance(dataset, IterableDataset):
        if not batches:
            raise ValueError("an endless (iterable) eval split has no end: set run.eval_batches > 0")
        loader = make_loader(dataset, m, env.rank, env.world_size, cfg.run.seed, epoch=0)
        yield from ((batch, [True] * m) for _, batch in zip(range(batches), loader))
        return
    slots = eval_slots(len(dataset), env.rank, env.world_size)
    slots = slots[: batches * m] if batches else slots
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(0)
    fill = next((s for s in slots if s is not None), 0)
    loader = DataLoader(
        dataset,
        batch_size=m,
        sampler=[fill if s is None else s for s in slots],
        collate_fn=collate,
        num_workers=cfg.data.num_workers,
    )
    for k, batch in enumerate(loader):
        yield batch, [s is not None for s in slots[k * m : (k + 1) * m]]


@torch.no_grad()
def evaluate(model, inner, dataset, cfg: TrainConfig, env: DistEnv, precision: str, batches: int | None = None) -> dict:
    """Mean of each named loss and the segfast.metrics meters that a model's evaluate(batch,
    meters) hook updates (gIoU/cIoU in "iou"; models add mIoU, per-round or per-class meters),
    merged over processes, over the whole eval split, or its first `batches` micro-batches per
    process (default: run.eval_batches; 0 = all). eval/samples counts what was scored."""
    from segfast.metrics import IoUMeter

    batches = cfg.run.eval_batches if batches is None else batches
    was_training = model.training
    model.eval()
    totals, meters = {}, {"iou": IoUMeter()}
    scored = torch.zeros((), dtype=torch.float64, device=env.device)
    for batch, keep in _batches(dataset, cfg, env, batches):
        if any(keep) and not all(keep):
            batch = take(batch, keep)
        batch = to_device(batch, env.device)
        before = {name: meter.state.clone() for name, meter in meters.items()}
        with autocast(precision, env.device):
            named = model(batch)
            if hasattr(inner, "evaluate"):
                inner.evaluate(batch, meters)
        n = sum(keep)
        if not n:  # padding only: run for the collectives' sake, count nothing (a meter created here stays empty)
            for name, meter in meters.items():
                meter.state = before[name] if name in before else torch.zeros_like(meter.state)
        for key, v in named.items():
            totals[key] = totals.get(key, 0.0) + v.detach().double() * n
        scored += n
    model.train(was_training)
    total = sum_across(scored, env)
    out = {f"eval/{k}": (sum_across(v, env) / total.clamp(min=1)).item() for k, v in sorted(totals.items())}
    out["eval/samples"] = int(total.item())
    _same_meters(meters, env)
    for name in sorted(meters):  # every process holds the same meters, in this order
        meter = meters[name].sync()
        if bool(meter.state.any()):
            out.update({f"eval/{name}/{k}": v for k, v in meter.compute().items() if isinstance(v, (int, float))})
    return out


def _same_meters(meters: dict, env: DistEnv) -> None:
    """Adds to `meters`, empty, the meters only other processes created (a model's meter per label
    space that this process's samples never had), so that every process syncs the same ones."""
    if not env.distributed:
        return
    import copy

    import torch.distributed as dist

    mine = {}
    for name, meter in meters.items():
        empty = copy.copy(meter)
        empty.state = torch.zeros_like(meter.state)
        mine[name] = empty
    gathered = [None] * env.world_size
    dist.all_gather_object(gathered, mine)
    for theirs in gathered:
        for name, meter in theirs.items():
            meters.setdefault(name, meter)


def evaluate_checkpoint(directory, overrides=(), batches: int = 0, benchmark: str | None = None) -> dict:
    """A saved checkpoint's losses and meters over the whole eval split of its config (data
    overrides allowed, e.g. data.options.root) or, with `benchmark`, of that protocol
    (segfast.train.protocols: its data, queries, prompt, ignore rule and metric), on every
    sample once; `batches` > 0 limits it to that many micro-batches per process. Runs under
    torchrun too."""
    import yaml

    from segfast.config import load_config
    from segfast.train import checkpoint, protocols
    from segfast.train.distributed import init_distributed, shutdown
    from segfast.train.precision import choose_precision

    directory = checkpoint.verify_checkpoint(directory)
    tree = yaml.safe_load((directory / "config.yaml").read_text())
    protocol = protocols.get(benchmark) if benchmark else None
    if protocol is not None:
        tree["data"] = protocol.data_section(tree.get("data") or {})
    cfg = load_config(base=tree, overrides=overrides)
    if protocol is not None:
        protocol.check(cfg.data)
    env = init_distributed(cfg.run.device)
    try:
        model = checkpoint.load_trained(directory, env.device, overrides)
        dataset = registry.build_dataset(cfg.data.name, cfg.data.options, "eval", cfg.run.seed)
        return evaluate(model, model, dataset, cfg, env, choose_precision(cfg.run.precision, env.device), batches)
    finally:
        shutdown(env)
