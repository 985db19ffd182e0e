"""The toolkit's public import path: ``from zoo_twins import ZooTwinDataset``.

The dataset card's layout installs top-level packages named ``loaders``, ``builders`` and
``analysis``; a research repository with its own ``loaders/`` (or ``analysis/``) folder on
``sys.path`` (common) shadows ours, and ``from loaders import ...`` then fails. This package finds
the toolkit's packages where they are installed, next to it, and loads them under its own name
when the name means something else, so this import path works whatever the current folder holds.
(The loaders import each other relatively and the core as ``zoo_dataset``, which is distinctive,
so they run unchanged under either name; so does the statistics baseline of ``analysis``.)
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

_TOOLKIT = Path(__file__).resolve().parent.parent


def _toolkit_package(package: str) -> ModuleType:
    """The toolkit's top-level ``package``: the usual import when it is ours, else loaded by path."""
    folder = _TOOLKIT / package
    found = importlib.util.find_spec(package)
    if found is not None and found.origin and Path(found.origin).resolve().parent == folder:
        return importlib.import_module(package)
    name = f"{__name__}._{package}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, folder / "__init__.py", submodule_search_locations=[str(folder)]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


_loaders = _toolkit_package("loaders")
# everything the loaders export (tests/test_docs_snippets.py checks that none is missing)
ITEM_SCHEMA = _loaders.ITEM_SCHEMA
ORIGINAL_ITEM_SCHEMA = _loaders.ORIGINAL_ITEM_SCHEMA
STATE_KEYS = _loaders.STATE_KEYS
VIEWS = _loaders.VIEWS
WEIGHT_KEYS = _loaders.WEIGHT_KEYS
CanonicalNeuronOrder = _loaders.CanonicalNeuronOrder
Compose = _loaders.Compose
GaussianNoise = _loaders.GaussianNoise
LayerStandardization = _loaders.LayerStandardization
NeuronErasing = _loaders.NeuronErasing
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
erase_neurons = _loaders.erase_neurons
gaussian_noise = _loaders.gaussian_noise
item_folds = _loaders.item_folds
make_view = _loaders.make_view
model_folds = _loaders.model_folds
normalize_split = _loaders.normalize_split
open_store = _loaders.open_store
permute = _loaders.permute
pruned_zeros = _loaders.pruned_zeros
select_models = _loaders.select_models
to_hf_dataset = _loaders.to_hf_dataset
transforms = _loaders.transforms
write_parquet = _loaders.write_parquet
sys.modules[f"{__name__}.transforms"] = transforms  # `from zoo_twins.transforms import ...` works too

# loaded on first use: the network clients only when a download is asked for, scikit-learn's
# gradient boosting only for the baseline (name -> toolkit package, module in it)
_LAZY = {
    "download_zoo": ("loaders", "download"),
    "WeightStatisticsBaseline": ("analysis", "hyperrep.baseline"),
    "weight_statistics": ("analysis", "hyperrep.baseline"),
}


def __getattr__(name: str) -> object:
    if name == "bench":  # the benchmark's API, a submodule: `zoo_twins.bench` works after `import zoo_twins`
        return importlib.import_module(f"{__name__}.bench")
    if name in _LAZY:
        package, module = _LAZY[name]
        return getattr(importlib.import_module(f"{_toolkit_package(package).__name__}.{module}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CanonicalNeuronOrder",
    "Compose",
    "GaussianNoise",
    "ITEM_SCHEMA",
    "LayerStandardization",
    "NeuronErasing",
    "NeuronPermuter",
    "ORIGINAL_ITEM_SCHEMA",
    "RandomErasing",
    "RandomNeuronPermutation",
    "RandomTokenWindow",
    "STATE_KEYS",
    "Standardize",
    "VIEWS",
    "WEIGHT_KEYS",
    "WeightStatisticsBaseline",
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
    "erase_neurons",
    "gaussian_noise",
    "get_spec",
    "item_folds",
    "load_specs",
    "make_view",
    "methods",
    "model_folds",
    "normalize_split",
    "open_store",
    "permute",
    "pruned_zeros",
    "select_models",
    "to_hf_dataset",
    "transforms",
    "weight_statistics",
    "write_parquet",
]
