"""Data loaders for the engine: DistributedSampler with per-epoch seeding, seeded workers, and a
start offset so a resumed run continues from the exact sample it stopped at. An iterable
dataset shards itself; one with start_at(batch, micro_batch, rank, world) is told where to start."""

import random

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, IterableDataset, Sampler

from segfast.data.collate import collate


class _Skip(Sampler):
    def __init__(self, sampler, skip: int):
        self.sampler, self.skip = sampler, skip

    def __iter__(self):
        it = iter(self.sampler)
        for _ in range(self.skip):
            next(it, None)
        yield from it

    def __len__(self):
        return max(0, len(self.sampler) - self.skip)


def seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_loader(dataset, micro_batch: int, rank: int, world: int, seed: int, epoch: int, skip_batches: int = 0,
                num_workers: int = 0) -> DataLoader:
    """Batches of one epoch for this rank, starting after `skip_batches` batches."""
    common = dict(batch_size=micro_batch, collate_fn=collate, num_workers=num_workers, worker_init_fn=seed_worker,
                  generator=torch.Generator().manual_seed(seed + epoch))
    if isinstance(dataset, IterableDataset):  # the dataset shards and seeds itself
        if hasattr(dataset, "start_at"):
            dataset.start_at(skip_batches, micro_batch, rank, world)
        return DataLoader(dataset, **common)
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True)
    sampler.set_epoch(epoch)
    if len(sampler) < micro_batch:
        raise ValueError(f"the dataset gives {len(sampler)} samples per process per epoch, fewer than one "
                         f"micro-batch of {micro_batch}")
    return DataLoader(dataset, sampler=_Skip(sampler, skip_batches * micro_batch), drop_last=True, **common)
