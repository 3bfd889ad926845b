"""toy-tokens: synthetic token sequences with structure a small LM learns in a few steps
(arithmetic progressions modulo the vocabulary). A sequence is fixed per index; how much of it a
sample shows (its length, between min_len and seq_len) is drawn anew every epoch, like a random
crop. No downloads."""

import torch
from torch.utils.data import Dataset

from segfast.data.rng import EpochChoices
from segfast.registry import dataset


@dataset("toy-tokens")
class ToyTokens(EpochChoices, Dataset):
    def __init__(
        self,
        size: int = 4096,
        seq_len: int = 32,
        vocab_size: int = 64,
        min_len: int | None = None,
        seed: int = 0,
        split: str = "train",
    ):
        self.size, self.seq_len, self.vocab_size, self.split = size, seq_len, vocab_size, split
        self.min_len = seq_len // 2 if min_len is None else min_len
        self.seed = seed + (0 if split == "train" else 10**6)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        start = int(torch.randint(1, self.vocab_size, (1,), generator=g))
        step = int(torch.randint(1, 4, (1,), generator=g))
        length = self.rng(index).randint(self.min_len, self.seq_len)
        ids = (start + step * torch.arange(length)) % (self.vocab_size - 1) + 1  # 0 is padding
        return {"input_ids": ids, "labels": ids.clone()}
