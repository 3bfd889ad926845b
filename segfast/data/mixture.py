"""Sampling several datasets at given rates, as LISA mixes sem_seg||refer_seg||reason_seg at
9,3,3,1: item i picks a dataset with probability proportional to its rate and a random item in it,
drawn anew every epoch and deterministically from (seed, epoch, i), so every process, worker and
rerun draws the same and a resumed run continues exactly. The item's own random choices (which
sentences, which class list) are keyed by the draw i too: an item drawn twice is used twice."""

from torch.utils.data import Dataset

from segfast import registry
from segfast.data.rng import EpochChoices


class MixtureDataset(EpochChoices, Dataset):
    def __init__(self, datasets: list, rates: list, length: int, seed: int = 0):
        if len(datasets) != len(rates) or not datasets:
            raise ValueError(
                f"datasets and rates must be non-empty and the same length, got {len(datasets)} and {len(rates)}"
            )
        if any(r < 0 for r in rates) or sum(rates) <= 0:
            raise ValueError(f"rates must be >= 0 with a positive sum, got {rates}")
        if any(len(d) == 0 for d in datasets):
            raise ValueError("every dataset of a mixture needs at least one item")
        self.datasets, self.length, self.seed, self.split = datasets, length, seed, "mixture"
        self.rates = [float(r) for r in rates]

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        for d in self.datasets:
            if hasattr(d, "set_epoch"):
                d.set_epoch(epoch)

    def __len__(self) -> int:
        return self.length

    def choose(self, index: int) -> tuple[int, int]:
        rng = self.rng(index)
        which = rng.choices(range(len(self.datasets)), weights=self.rates)[0]
        return which, rng.randrange(len(self.datasets[which]))

    def __getitem__(self, index: int):
        which, item = self.choose(index)
        member = self.datasets[which]
        if isinstance(member, EpochChoices):  # each draw of an item is a new use: its choices drawn anew
            member.draw = index
        try:
            sample = member[item]
        finally:
            if isinstance(member, EpochChoices):
                member.draw = None
        return {**sample, "source": which} if isinstance(sample, dict) else sample


@registry.dataset("mixture")
def mixture(options: dict, split: str, seed: int) -> MixtureDataset:
    """options: {datasets: [{name, options}], rates: [..], length}: LISA-style sampling at rates."""
    parts = options.get("datasets") or []
    known = set(registry.datasets()) - {"mixture"}
    unknown = [p.get("name") for p in parts if p.get("name") not in known]
    if unknown:
        raise ValueError(f"data.options.datasets: unknown dataset names {unknown}; known: {sorted(known)}")
    datasets = [registry.build_dataset(p["name"], p.get("options", {}), split, seed) for p in parts]
    return MixtureDataset(
        datasets, list(options.get("rates", [1] * len(parts))), int(options.get("length", 10000)), seed
    )
