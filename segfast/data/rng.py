"""Random streams that are the same in every process, loader worker and rerun.

A dataset's random *choices* (which sentence, which referents, which template, which classes)
are drawn anew every epoch, as the authors' loaders draw them on every access: sample_rng
depends on the epoch. What a generated sample *is* (a synthetic scene) stays fixed per index:
content_rng. The loader tells a dataset its epoch through set_epoch (EpochChoices)."""

import random


def sample_rng(seed: int, split: str, index: int, epoch: int, draw: int | None = None) -> random.Random:
    """The random choices of sample `index` in `epoch` (and, inside a mixture, of the mixture's
    draw `draw`: an item a mixture draws twice in an epoch is two uses of it). Seeded from a
    string, not hash((seed, split, index)): Python salts str hashes per process
    (PYTHONHASHSEED), so ranks, loader workers and reruns drew different samples for one index;
    random.seed hashes a str seed with SHA-512, the same everywhere."""
    key = f"{seed}/{split}/{index}/epoch{epoch}"
    return random.Random(key if draw is None else f"{key}/draw{draw}")


def content_rng(seed: int, split: str, index: int) -> random.Random:
    """The content of generated sample `index` (its synthetic scene): the same every epoch."""
    return random.Random(f"{seed}/{split}/{index}")


class EpochChoices:
    """Mixin of the map-style datasets: set_epoch (called by segfast.data.loader.make_loader
    before an epoch's workers start) and the epoch's stream of sample i, rng(i). Needs
    self.seed and self.split."""

    epoch = 0
    draw = None  # set by segfast.data.mixture around each of its draws

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def rng(self, index: int) -> random.Random:
        return sample_rng(self.seed, self.split, index, self.epoch, self.draw)
