"""The toolkit's public import path: ``from zoo_twins import ZooTwinDataset``.

The dataset card's layout installs top-level packages named ``loaders``, ``builders`` and
``analysis``; a research repository with its own ``loaders/`` folder on ``sys.path`` (common)
shadows ours, and ``from loaders import ...`` then fails. This package finds the toolkit's
loaders where they are installed, next to it, and loads them under its own name when the
name ``loaders`` means something else, so this import path works whatever the current folder
holds. (The loaders import each other relatively and the core as ``zoo_dataset``, which is
distinctive, so they run unchanged under either name.)
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from zoo_dataset.methods import methods
from zoo_dataset.specs import ZooSpec, get_spec, load_specs
from zoo_dataset.store import ZooStore

_LOADERS = Path(__file__).resolve().parent.parent / "loaders"


def _toolkit_loaders() -> ModuleType:
    """The toolkit's ``loaders`` package: the usual import when it is ours, else loaded by path."""
    found = importlib.util.find_spec("loaders")
    if found is not None and found.origin and Path(found.origin).resolve().parent == _LOADERS:
        return importlib.import_module("loaders")
    name = f"{__name__}._loaders"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, _LOADERS / "__init__.py", submodule_search_locations=[str(_LOADERS)]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


_loaders = _toolkit_loaders()
# everything the loaders export (tests/test_public_import.py checks that none is missing)
ITEM_SCHEMA = _loaders.ITEM_SCHEMA
ORIGINAL_ITEM_SCHEMA = _loaders.ORIGINAL_ITEM_SCHEMA
VIEWS = _loaders.VIEWS
CanonicalNeuronOrder = _loaders.CanonicalNeuronOrder
Compose = _loaders.Compose
GaussianNoise = _loaders.GaussianNoise
LayerStandardization = _loaders.LayerStandardization
NeuronPermuter = _loaders.NeuronPermuter
RandomErasing = _loaders.RandomErasing
RandomNeuronPermutation = _loaders.RandomNeuronPermutation
RandomTokenWindow = _loaders.RandomTokenWindow
Standardize = _loaders.Standardize
ZooOriginalDataset = _loaders.ZooOriginalDataset
ZooOriginalTrajectoryDataset = _loaders.ZooOriginalTrajectoryDataset
ZooTrajectoryDataset = _loaders.ZooTrajectoryDataset
ZooTwinDataset = _loaders.ZooTwinDataset
cache_dir = _loaders.cache_dir
collate_padded = _loaders.collate_padded
collate_shared = _loaders.collate_shared
item_folds = _loaders.item_folds
make_view = _loaders.make_view
model_folds = _loaders.model_folds
normalize_split = _loaders.normalize_split
open_store = _loaders.open_store
select_models = _loaders.select_models
transforms = _loaders.transforms
sys.modules[f"{__name__}.transforms"] = transforms  # `from zoo_twins.transforms import ...` works too


def __getattr__(name: str) -> object:
    """``download_zoo`` on first use: the network clients load only when a download is asked for."""
    if name == "download_zoo":
        return importlib.import_module(f"{_loaders.__name__}.download").download_zoo
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CanonicalNeuronOrder",
    "Compose",
    "GaussianNoise",
    "ITEM_SCHEMA",
    "LayerStandardization",
    "NeuronPermuter",
    "ORIGINAL_ITEM_SCHEMA",
    "RandomErasing",
    "RandomNeuronPermutation",
    "RandomTokenWindow",
    "Standardize",
    "VIEWS",
    "ZooOriginalDataset",
    "ZooOriginalTrajectoryDataset",
    "ZooSpec",
    "ZooStore",
    "ZooTrajectoryDataset",
    "ZooTwinDataset",
    "cache_dir",
    "collate_padded",
    "collate_shared",
    "download_zoo",
    "get_spec",
    "item_folds",
    "load_specs",
    "make_view",
    "methods",
    "model_folds",
    "normalize_split",
    "open_store",
    "select_models",
    "transforms",
]
