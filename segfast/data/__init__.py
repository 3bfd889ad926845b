"""Datasets, collate and loaders. DATASETS maps config names to constructors
(options: dict, split: str, seed: int) -> Dataset."""

from segfast.data.collate import collate
from segfast.data.mixture import MixtureDataset


def _toy_tokens(options, split, seed):
    from segfast.data.toy import ToyTokens

    return ToyTokens(seed=seed, split=split, **options)


def _llafs_pseudo(options, split, seed):
    from segfast.data.llafs_pseudo import PseudoPairs

    return PseudoPairs(seed=seed, split=split, **options)


def _fewshot(options, split, seed):
    from segfast.data.fewshot import FewShotEpisodes

    return FewShotEpisodes(seed=seed, split="train" if split == "train" else "val", **options)


def _referring(options, split, seed):
    from segfast.data.referring import ReferringSegmentation

    return ReferringSegmentation(seed=seed, split=split, **options)


DATASETS = {"toy-tokens": _toy_tokens, "llafs-pseudo": _llafs_pseudo, "fewshot": _fewshot, "referring": _referring}

__all__ = ["DATASETS", "MixtureDataset", "collate"]
