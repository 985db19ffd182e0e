"""The twin benchmark from Python: ``from zoo_twins.bench import make_split, run_benchmark``.

The same code as ``zoo-bench`` (the toolkit's ``analysis.bench``), loaded by name on first use, so
``import zoo_twins`` loads neither scikit-learn, scipy nor matplotlib, and found where the toolkit
is installed, so a user's own ``analysis/`` folder does not shadow it. A model of one's own needs
only the methods of :class:`PropertyPredictor` or :class:`MaskPredictor` (docs/benchmark.md).
"""

from __future__ import annotations

import importlib

from . import _toolkit_package

_NAMES = {  # name -> module of analysis.bench
    "PROPERTIES": "samples",
    "Population": "samples",
    "Samples": "samples",
    "population_samples": "samples",
    "MaskPredictor": "predictors",
    "PropertyPredictor": "predictors",
    "Split": "splits",
    "load_split": "splits",
    "make_split": "splits",
    "save_split": "splits",
    "mask_samples": "twins",
    "twin_samples": "twins",
    "SPARSITIES": "tasks",
    "TASKS": "tasks",
    "BenchRun": "tasks",
    "property_scores": "tasks",
    "run_benchmark": "tasks",
    "markdown": "report",
    "record_in_store": "report",
    "render": "report",
    "results_document": "report",
    "write_outputs": "report",
    "default_predictors": "defaults",
    "HyperRepPredictor": "property_baselines",
    "MeanPredictor": "property_baselines",
    "NFNPredictor": "property_baselines",
    "RidgePredictor": "property_baselines",
    "WeightStatisticsPredictor": "property_baselines",
    "GlobalMagnitude": "mask_baselines",
    "LayerwiseMagnitude": "mask_baselines",
    "RandomMask": "mask_baselines",
    "StatisticsThresholds": "mask_baselines",
    "ZeroShotMasks": "mask_baselines",
    "score_masks": "mask_scores",
}


def __getattr__(name: str) -> object:
    if name in _NAMES:
        module = importlib.import_module(f"{_toolkit_package('analysis').__name__}.bench.{_NAMES[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_NAMES)
