"""Linear probes on embeddings (Table 3): R^2 on held-out models against predicting the training mean."""

from __future__ import annotations

import warnings

import numpy as np
from scipy.linalg import LinAlgWarning
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score
from sklearn.model_selection import GridSearchCV, GroupKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

RIDGE_ALPHAS = np.logspace(-1, 5, 13)


def ridge_probe(
    x: np.ndarray, y: np.ndarray, groups: np.ndarray, alphas: np.ndarray = RIDGE_ALPHAS, folds: int = 5
) -> tuple[Pipeline, bool]:
    """A standardised ridge regression of ``y`` on ``x``, its strength chosen among ``alphas`` by
    grid search with ``GroupKFold`` over ``groups`` (at most ``folds`` folds), and whether a fit
    warned of an ill-conditioned system (scikit-learn's ``LinAlgWarning``, collected, not shown).

    Inputs wider than there are samples need the ridge; folds over whole models keep states of one
    model off both sides of a fold, else the search rewards memorising models."""
    search = GridSearchCV(
        make_pipeline(StandardScaler(), Ridge()), {"ridge__alpha": alphas},
        cv=GroupKFold(n_splits=min(folds, len(np.unique(groups)))),
    )
    with warnings.catch_warnings(record=True) as caught:  # weak ridges on wide inputs: said by the caller
        warnings.simplefilter("always", LinAlgWarning)
        probe = search.fit(x, y, groups=groups).best_estimator_
    for w in caught:
        if not issubclass(w.category, LinAlgWarning):
            warnings.warn(w.message, w.category, stacklevel=2)  # not ours to hide
    return probe, any(issubclass(w.category, LinAlgWarning) for w in caught)


def probe_r2(
    train_z: np.ndarray,
    train_props: dict[str, np.ndarray],
    test_z: np.ndarray,
    test_props: dict[str, np.ndarray],
    train_groups: np.ndarray,
) -> dict[str, dict[str, float]]:
    """Per property: ``{"probe": R^2 of a ridge probe (:func:`ridge_probe`), "mean_baseline": R^2 of
    the training mean, "ill_conditioned": whether a ridge fit warned of an ill-conditioned system}``."""
    out = {}
    for name, y_train in train_props.items():
        probe, ill_conditioned = ridge_probe(train_z, y_train, train_groups)
        y_test = test_props[name]
        out[name] = {
            "probe": float(r2_score(y_test, probe.predict(test_z))),
            "mean_baseline": float(r2_score(y_test, np.full_like(y_test, y_train.mean()))),
            "ill_conditioned": ill_conditioned,
        }
    return out
