"""Loaders: PyTorch datasets over a zoo-twins store, weight views, transforms, download and cache."""

from . import transforms
from .cache import cache_dir
from .collate import collate_padded
from .datasets import ZooOriginalDataset, ZooOriginalTrajectoryDataset, ZooTrajectoryDataset, ZooTwinDataset
from .hf_export import to_hf_dataset, write_parquet
from .items import ITEM_SCHEMA, ORIGINAL_ITEM_SCHEMA, collate_shared
from .resolve import open_store
from .sane import RandomTokenWindow
from .selection import select_models
from .splits import item_folds, model_folds, normalize_split
from .transforms import (
    STATE_KEYS,
    WEIGHT_KEYS,
    CanonicalNeuronOrder,
    Compose,
    GaussianNoise,
    LayerStandardization,
    NeuronErasing,
    NeuronPermuter,
    RandomErasing,
    RandomNeuronPermutation,
    Standardize,
    erase_neurons,
    gaussian_noise,
    permute,
    pruned_zeros,
)
from .views import VIEWS, make_view

__all__ = [
    "ITEM_SCHEMA",
    "ORIGINAL_ITEM_SCHEMA",
    "STATE_KEYS",
    "VIEWS",
    "WEIGHT_KEYS",
    "CanonicalNeuronOrder",
    "Compose",
    "GaussianNoise",
    "LayerStandardization",
    "NeuronErasing",
    "NeuronPermuter",
    "RandomErasing",
    "RandomNeuronPermutation",
    "RandomTokenWindow",
    "Standardize",
    "ZooOriginalDataset",
    "ZooOriginalTrajectoryDataset",
    "ZooTrajectoryDataset",
    "ZooTwinDataset",
    "cache_dir",
    "collate_padded",
    "collate_shared",
    "erase_neurons",
    "gaussian_noise",
    "item_folds",
    "make_view",
    "model_folds",
    "normalize_split",
    "open_store",
    "permute",
    "pruned_zeros",
    "select_models",
    "to_hf_dataset",
    "transforms",
    "write_parquet",
]
