"""Loaders: PyTorch datasets over a zoo-twins store, weight views, transforms, download and cache."""

from . import transforms
from .cache import cache_dir
from .datasets import ZooTrajectoryDataset, ZooTwinDataset
from .items import ITEM_SCHEMA, collate_shared
from .resolve import open_store
from .splits import normalize_split
from .transforms import (
    CanonicalNeuronOrder,
    Compose,
    GaussianNoise,
    LayerStandardization,
    NeuronPermuter,
    RandomErasing,
    RandomNeuronPermutation,
    Standardize,
)
from .views import VIEWS, make_view

__all__ = [
    "ITEM_SCHEMA",
    "VIEWS",
    "CanonicalNeuronOrder",
    "Compose",
    "GaussianNoise",
    "LayerStandardization",
    "NeuronPermuter",
    "RandomErasing",
    "RandomNeuronPermutation",
    "Standardize",
    "ZooTrajectoryDataset",
    "ZooTwinDataset",
    "cache_dir",
    "collate_shared",
    "make_view",
    "normalize_split",
    "open_store",
    "transforms",
]
