"""The on-disk store: sharded HDF5 + parquet tables + a checksummed manifest (see docs/store-format.md)."""

from .manifest import Manifest
from .reader import ZooStore
from .writer import PopulationWriter, StoreWriter

__all__ = ["Manifest", "PopulationWriter", "StoreWriter", "ZooStore"]
