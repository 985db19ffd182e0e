"""Linear probes on embeddings (Table 3): R^2 on held-out models against predicting the training mean."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def probe_r2(
    train_z: np.ndarray,
    train_props: dict[str, np.ndarray],
    test_z: np.ndarray,
    test_props: dict[str, np.ndarray],
    alpha: float = 1.0,
) -> dict[str, dict[str, float]]:
    """Per property: ``{"probe": R^2 of a ridge probe, "mean_baseline": R^2 of the training mean}``."""
    out = {}
    for name, y_train in train_props.items():
        probe = make_pipeline(StandardScaler(), Ridge(alpha=alpha)).fit(train_z, y_train)
        y_test = test_props[name]
        out[name] = {
            "probe": float(r2_score(y_test, probe.predict(test_z))),
            "mean_baseline": float(r2_score(y_test, np.full_like(y_test, y_train.mean()))),
        }
    return out
