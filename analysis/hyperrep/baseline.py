"""The weight-statistics baseline (Unterthiner et al. 2020, "Predicting Neural Network Accuracy
from Weights"): per layer, statistics of its weights and of its biases, fed to gradient boosting.

It reads the same samples as the autoencoder (the dense VD weights of every state) and is fitted
on the same train split, so its R² sits beside the probes' on equal terms.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.metrics import r2_score

from zoo_dataset.layout import ParameterLayout

from .data import TokenSamples

QUANTILES = (0.0, 0.25, 0.5, 0.75, 1.0)


def _statistics(values: torch.Tensor) -> torch.Tensor:
    """[N, K] -> [N, 8]: mean, std, the five quantiles and the mean absolute value of each row."""
    q = torch.quantile(values, torch.tensor(QUANTILES, dtype=values.dtype), dim=1).T
    return torch.cat([values.mean(1, keepdim=True), values.std(1, keepdim=True), q,
                      values.abs().mean(1, keepdim=True)], dim=1)


def weight_statistics(weights: torch.Tensor, layout: ParameterLayout) -> np.ndarray:
    """[N, P] flat states -> [N, layers * 2 * 8] features: the statistics of each layer's weights,
    then of its biases."""
    flat = weights.double()
    features = [
        _statistics(flat[:, layout.by_name[f"{layer}.{kind}"].slice])
        for layer in layout.layers
        for kind in ("weight", "bias")
    ]
    return torch.cat(features, dim=1).numpy()


def boosting_r2(
    x_train: np.ndarray,
    train_props: dict[str, np.ndarray],
    x_test: np.ndarray,
    test_props: dict[str, np.ndarray],
    seed: int = 0,
) -> dict[str, float]:
    """Per property: held-out R² of scikit-learn gradient boosting fitted on ``x_train``."""
    out = {}
    for name, y_train in train_props.items():
        model = GradientBoostingRegressor(random_state=seed).fit(x_train, y_train)
        out[name] = float(r2_score(test_props[name], model.predict(x_test)))
    return out


def statistics_r2(train: TokenSamples, held_out: TokenSamples, seed: int = 0) -> dict[str, float]:
    """Per property: R² on ``held_out`` of gradient boosting on the weight statistics, fitted on ``train``."""
    return boosting_r2(weight_statistics(train.weights, train.layout), train.properties,
                       weight_statistics(held_out.weights, held_out.layout), held_out.properties, seed)
