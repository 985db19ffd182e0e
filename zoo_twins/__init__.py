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
_PUBLIC = (
    "ITEM_SCHEMA", "VIEWS", "CanonicalNeuronOrder", "Compose", "GaussianNoise", "LayerStandardization",
    "NeuronPermuter", "RandomErasing", "RandomNeuronPermutation", "Standardize", "ZooTrajectoryDataset",
    "ZooTwinDataset", "cache_dir", "collate_shared", "make_view", "open_store",
)
globals().update({name: getattr(_loaders, name) for name in _PUBLIC})
transforms = _loaders.transforms
sys.modules[f"{__name__}.transforms"] = transforms  # `from zoo_twins.transforms import ...` works too


def __getattr__(name: str) -> object:
    """``download_zoo`` on first use: the network clients load only when a download is asked for."""
    if name == "download_zoo":
        return importlib.import_module(f"{_loaders.__name__}.download").download_zoo
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    *_PUBLIC,
    "ZooSpec",
    "ZooStore",
    "download_zoo",
    "get_spec",
    "load_specs",
    "methods",
    "transforms",
]
