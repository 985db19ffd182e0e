"""Linear probes on embeddings (Table 3): R^2 on held-out models against predicting the training mean."""

from __future__ import annotations

import warnings

import numpy as np
from scipy.linalg import LinAlgWarning
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score
from sklearn.model_selection import GridSearchCV, GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def probe_r2(
    train_z: np.ndarray,
    train_props: dict[str, np.ndarray],
    test_z: np.ndarray,
    test_props: dict[str, np.ndarray],
    train_groups: np.ndarray,
) -> dict[str, dict[str, float]]:
    """Per property: ``{"probe": R^2 of a ridge probe, "mean_baseline": R^2 of the training mean,
    "ill_conditioned": whether a ridge fit warned of an ill-conditioned system}``.

    The embedding has more dimensions than there are training states, so the ridge strength is
    chosen by cross-validation over whole models (``train_groups``): states of one model never
    sit on both sides of a fold, else the search rewards memorising models."""
    out = {}
    folds = GroupKFold(n_splits=min(5, len(np.unique(train_groups))))
    for name, y_train in train_props.items():
        search = GridSearchCV(
            make_pipeline(StandardScaler(), Ridge()), {"ridge__alpha": np.logspace(-1, 5, 13)}, cv=folds
        )
        with warnings.catch_warnings(record=True) as caught:  # weak ridges on wide z: said once, below
            warnings.simplefilter("always", LinAlgWarning)
            probe = search.fit(train_z, y_train, groups=train_groups).best_estimator_
        for w in caught:
            if not issubclass(w.category, LinAlgWarning):
                warnings.warn(w.message, w.category, stacklevel=2)  # not ours to hide
        y_test = test_props[name]
        out[name] = {
            "probe": float(r2_score(y_test, probe.predict(test_z))),
            "mean_baseline": float(r2_score(y_test, np.full_like(y_test, y_train.mean()))),
            "ill_conditioned": any(issubclass(w.category, LinAlgWarning) for w in caught),
        }
    return out
