"""Random streams that are the same in every process, loader worker and rerun.

A dataset's random *choices* (which sentence, which referents, which template, which classes)
are drawn anew every epoch, as the authors' loaders draw them on every access: sample_rng
depends on the epoch. What a generated sample *is* (a synthetic scene) stays fixed per index:
content_rng. The loader tells a dataset its epoch through set_epoch (EpochChoices)."""

import random


def sample_rng(seed: int, split: str, index: int, epoch: int) -> random.Random:
    """The random choices of sample `index` in `epoch`. Seeded from a string, not
    hash((seed, split, index)): Python salts str hashes per process (PYTHONHASHSEED), so ranks,
    loader workers and reruns drew different samples for one index; random.seed hashes a str
    seed with SHA-512, the same everywhere."""
    return random.Random(f"{seed}/{split}/{index}/epoch{epoch}")


def content_rng(seed: int, split: str, index: int) -> random.Random:
    """The content of generated sample `index` (its synthetic scene): the same every epoch."""
    return random.Random(f"{seed}/{split}/{index}")


class EpochChoices:
    """Mixin of the map-style datasets: set_epoch (called by segfast.data.loader.make_loader
    before an epoch's workers start) and the epoch's stream of sample i, rng(i). Needs
    self.seed and self.split."""

    epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def rng(self, index: int) -> random.Random:
        return sample_rng(self.seed, self.split, index, self.epoch)
