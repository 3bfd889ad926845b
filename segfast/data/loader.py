"""Data loaders for the engine, with a data position that survives a change of process count.

An epoch of a map-style dataset is a permutation seeded by (seed, epoch) (DistributedSampler's),
cut to whole rounds of world x micro_batch samples. The data position is the number of samples
of that permutation the whole run has read (`start`); process `rank` reads positions
start + rank, start + rank + world, ... So a run resumed on another number of processes (or
with another micro-batch) continues with exactly the samples not read yet. An iterable dataset
positions itself (start_at(start, micro_batch, rank, world)). The dataset learns its epoch
(set_epoch) before the workers start, so its random choices are drawn anew every epoch."""

import random

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, Sampler

from segfast.data.collate import collate


class EpochSampler(Sampler):
    """The indices process `rank` reads in `epoch` from global position `start` on."""

    def __init__(self, size: int, seed: int, epoch: int, rank: int, world: int, micro_batch: int, start: int = 0):
        self.size, self.seed, self.epoch, self.rank, self.world = size, seed, epoch, rank, world
        rounds = max(0, size - start) // (world * micro_batch)
        self.start, self.end = start, start + rounds * world * micro_batch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.size, generator=g).tolist()
        yield from order[self.start + self.rank : self.end : self.world]

    def __len__(self):
        return (self.end - self.start) // self.world


def seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_loader(
    dataset, micro_batch: int, rank: int, world: int, seed: int, epoch: int, start: int = 0, num_workers: int = 0
) -> DataLoader:
    """Micro-batches of one epoch for this rank, from global sample position `start` on (empty
    when the epoch has no whole round left)."""
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)
    common = dict(
        batch_size=micro_batch,
        collate_fn=collate,
        num_workers=num_workers,
        worker_init_fn=seed_worker,
        generator=torch.Generator().manual_seed(seed + epoch),
    )
    if isinstance(dataset, IterableDataset):  # the dataset shards and seeds itself
        if hasattr(dataset, "start_at"):
            dataset.start_at(start, micro_batch, rank, world)
        return DataLoader(dataset, **common)
    if len(dataset) < world * micro_batch:
        raise ValueError(
            f"the dataset has {len(dataset)} samples, fewer than one micro-batch of {micro_batch} for "
            f"each of {world} processes"
        )
    return DataLoader(
        dataset, sampler=EpochSampler(len(dataset), seed, epoch, rank, world, micro_batch, start), **common
    )
