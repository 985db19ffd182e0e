"""The weight-statistics baseline (Unterthiner et al. 2020, "Predicting Neural Network Accuracy
from Weights"): per layer, statistics of its weights and of its biases, fed to gradient boosting.

``zoo-hyperrep eval`` fits it on the same samples as the autoencoder (the dense VD weights of
every state of the train split), so its R² sits beside the probes' on equal terms. It is public
as ``zoo_twins.WeightStatisticsBaseline`` (and ``zoo_twins.weight_statistics``, its features):
this module imports nothing from the loaders at run time, so the public package loads it alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import torch
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.exceptions import NotFittedError
from sklearn.metrics import r2_score

from zoo_dataset.layout import ParameterLayout

if TYPE_CHECKING:
    from .data import TokenSamples

QUANTILES = (0.0, 0.25, 0.5, 0.75, 1.0)


def _statistics(values: torch.Tensor) -> torch.Tensor:
    """[N, K] -> [N, 8]: mean, std, the five quantiles and the mean absolute value of each row."""
    q = torch.quantile(values, torch.tensor(QUANTILES, dtype=values.dtype), dim=1).T
    return torch.cat([values.mean(1, keepdim=True), values.std(1, keepdim=True), q,
                      values.abs().mean(1, keepdim=True)], dim=1)


def weight_statistics(weights: torch.Tensor | np.ndarray, layout: ParameterLayout) -> np.ndarray:
    """[N, P] flat states -> [N, layers * 2 * 8] features: the statistics of each layer's weights,
    then of its biases (mean, std, the 0/25/50/75/100 % quantiles, mean absolute value)."""
    flat = torch.as_tensor(weights).double().reshape(-1, layout.num_params)
    features = [
        _statistics(flat[:, layout.by_name[f"{layer}.{kind}"].slice])
        for layer in layout.layers
        for kind in ("weight", "bias")
    ]
    return torch.cat(features, dim=1).numpy()


class WeightStatisticsBaseline:
    """Predict model properties from flat weights: :func:`weight_statistics` fed to one
    scikit-learn ``GradientBoostingRegressor`` per property.

    ``WeightStatisticsBaseline(layout).fit(weights[N, P], {"test_acc": y[N], ...})``, then
    ``predict(weights)`` -> ``{property: [M]}`` and ``score(weights, targets)`` -> held-out R² per
    property. ``n_estimators``: boosting stages per property (scikit-learn's default, 100; fewer
    for CI-sized runs).
    """

    def __init__(self, layout: ParameterLayout, seed: int = 0, n_estimators: int = 100):
        self.layout, self.seed, self.n_estimators = layout, seed, n_estimators
        self.models: dict[str, GradientBoostingRegressor] = {}

    def fit(self, weights: torch.Tensor | np.ndarray, targets: Mapping[str, np.ndarray]) -> WeightStatisticsBaseline:
        self.models = boosted(weight_statistics(weights, self.layout), targets, self.seed, self.n_estimators)
        return self

    def predict(self, weights: torch.Tensor | np.ndarray) -> dict[str, np.ndarray]:
        if not self.models:
            raise NotFittedError("fit the baseline before predicting")
        features = weight_statistics(weights, self.layout)
        return {name: model.predict(features) for name, model in self.models.items()}

    def score(self, weights: torch.Tensor | np.ndarray, targets: Mapping[str, np.ndarray]) -> dict[str, float]:
        """R² per fitted property on ``weights`` and their ``targets``."""
        return {name: float(r2_score(targets[name], pred)) for name, pred in self.predict(weights).items()}


def boosted(
    x: np.ndarray, targets: Mapping[str, np.ndarray], seed: int, n_estimators: int = 100
) -> dict[str, GradientBoostingRegressor]:
    """One gradient boosting regressor per target, fitted on features ``x`` [N, F]."""
    return {
        name: GradientBoostingRegressor(n_estimators=n_estimators, random_state=seed).fit(x, y)
        for name, y in targets.items()
    }


def boosting_r2(
    x_train: np.ndarray,
    train_props: dict[str, np.ndarray],
    x_test: np.ndarray,
    test_props: dict[str, np.ndarray],
    seed: int = 0,
) -> dict[str, float]:
    """Per property: held-out R² of scikit-learn gradient boosting fitted on ``x_train``."""
    models = boosted(x_train, train_props, seed)
    return {name: float(r2_score(test_props[name], model.predict(x_test))) for name, model in models.items()}


def statistics_r2(train: TokenSamples, held_out: TokenSamples, seed: int = 0) -> dict[str, float]:
    """Per property: R² on ``held_out`` of the baseline fitted on ``train``."""
    baseline = WeightStatisticsBaseline(train.layout, seed).fit(train.weights, train.properties)
    return baseline.score(held_out.weights, held_out.properties)
