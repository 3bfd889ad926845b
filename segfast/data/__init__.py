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


def _seg_conversations(options, split, seed):
    from segfast.data.conversations import SegConversations

    return SegConversations(seed=seed, split=split, **options)


def _semantic_queries(options, split, seed):
    from segfast.data.semantic import SemanticQueries

    return SemanticQueries(seed=seed, split=split, **options)


def _multiround(options, split, seed):
    from segfast.data.multiround import MultiRoundConversations

    return MultiRoundConversations(seed=seed, split=split, **options)


def _seg_queries(options, split, seed):
    from segfast.data.queries import SegQueries

    return SegQueries(seed=seed, split=split, **options)


def _mixture(options, split, seed):
    """options: {datasets: [{name, options}], rates: [..], length}: LISA-style sampling at rates."""
    parts = options.get("datasets") or []
    unknown = [p.get("name") for p in parts if p.get("name") not in DATASETS or p.get("name") == "mixture"]
    if unknown:
        raise ValueError(f"data.options.datasets: unknown dataset names {unknown}; known: {sorted(set(DATASETS) - {'mixture'})}")
    datasets = [DATASETS[p["name"]](p.get("options", {}), split, seed) for p in parts]
    return MixtureDataset(datasets, list(options.get("rates", [1] * len(parts))), int(options.get("length", 10000)), seed)


DATASETS = {"toy-tokens": _toy_tokens, "llafs-pseudo": _llafs_pseudo, "fewshot": _fewshot, "referring": _referring,
            "seg-conversations": _seg_conversations, "semantic-queries": _semantic_queries,
            "multiround": _multiround, "seg-queries": _seg_queries, "mixture": _mixture}

__all__ = ["DATASETS", "MixtureDataset", "collate"]
