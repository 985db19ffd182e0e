"""The baselines ``zoo-bench`` runs when no predictor is named: the field's property predictors
and mask predictors, each sized by ``quick`` (CI-sized settings) and seeded by ``seed``."""

from __future__ import annotations

import importlib.util

from .predictors import MaskPredictor, PropertyPredictor


def default_predictors(quick: bool, seed: int, epochs: int | None = None
                       ) -> tuple[list[PropertyPredictor], list[MaskPredictor], list[str]]:
    """(property predictors, mask predictors, notes): every baseline, except the NFN when the
    ``nfn`` package is not installed (a note says so). ``epochs``: training epochs of the learned
    property predictors (NFN, hyper-representation) instead of their defaults."""
    from . import mask_baselines, property_baselines  # deferred: scikit-learn, the nfn view, the autoencoder

    notes = []
    if importlib.util.find_spec("nfn") is None:
        notes.append("the NFN baseline left out: the nfn package is not installed (pip install '.[nfn]')")
    properties = property_baselines.default_property_predictors(quick, seed, epochs)
    masks = [mask_baselines.GlobalMagnitude(), mask_baselines.LayerwiseMagnitude(), mask_baselines.RandomMask(seed),
             mask_baselines.StatisticsThresholds(), mask_baselines.ZeroShotMasks(quick=quick, seed=seed)]
    return properties, masks, notes
