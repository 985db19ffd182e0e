"""Loaders: PyTorch datasets over a zoo-twins store, weight views, download and cache."""

from .cache import cache_dir
from .datasets import ZooTrajectoryDataset, ZooTwinDataset
from .resolve import open_store
from .views import VIEWS, make_view

__all__ = ["VIEWS", "ZooTrajectoryDataset", "ZooTwinDataset", "cache_dir", "make_view", "open_store"]
