"""Datasets (each registers itself with @segfast.registry.dataset), their readers of the public
layouts, generated samples, collate and loaders. DATASETS is a view of the registered datasets:
name -> factory(options: dict, split: str, seed: int) -> Dataset."""

from segfast.data.collate import collate
from segfast.data.mixture import MixtureDataset
from segfast.registry import DatasetFactories

DATASETS = DatasetFactories()

__all__ = ["DATASETS", "MixtureDataset", "collate"]
