"""Sampling several datasets at given rates, as LISA mixes sem_seg||refer_seg||reason_seg at
9,3,1: item i picks a dataset with probability proportional to its rate and a random item in it,
deterministically from (seed, i), so it works with DistributedSampler and resumes exactly."""

import torch
from torch.utils.data import Dataset


class MixtureDataset(Dataset):
    def __init__(self, datasets: list, rates: list, length: int, seed: int = 0):
        if len(datasets) != len(rates) or not datasets:
            raise ValueError(f"datasets and rates must be non-empty and the same length, got {len(datasets)} and {len(rates)}")
        if any(r < 0 for r in rates) or sum(rates) <= 0:
            raise ValueError(f"rates must be >= 0 with a positive sum, got {rates}")
        if any(len(d) == 0 for d in datasets):
            raise ValueError("every dataset of a mixture needs at least one item")
        self.datasets, self.length, self.seed = datasets, length, seed
        self.probs = torch.tensor(rates, dtype=torch.float64) / sum(rates)

    def __len__(self) -> int:
        return self.length

    def choose(self, index: int) -> tuple[int, int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        which = int(torch.multinomial(self.probs, 1, generator=g))
        return which, int(torch.randint(len(self.datasets[which]), (1,), generator=g))

    def __getitem__(self, index: int):
        which, item = self.choose(index)
        sample = self.datasets[which][item]
        return {**sample, "source": which} if isinstance(sample, dict) else sample
