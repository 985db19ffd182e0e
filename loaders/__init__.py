"""Loaders: PyTorch datasets over a zoo-twins store, weight views, download and cache."""

from .cache import cache_dir
from .datasets import ZooTrajectoryDataset, ZooTwinDataset
from .items import ITEM_SCHEMA, collate_shared
from .resolve import open_store
from .views import VIEWS, make_view

__all__ = [
    "ITEM_SCHEMA",
    "VIEWS",
    "ZooTrajectoryDataset",
    "ZooTwinDataset",
    "cache_dir",
    "collate_shared",
    "make_view",
    "open_store",
]
