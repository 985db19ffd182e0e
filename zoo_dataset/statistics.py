"""The one summary of a store that the build's printout, the dataset card and the report share:
per population and level, the last epoch's mean and standard deviation over models, and how many
models diverged."""

from __future__ import annotations

import math

import pandas as pd

from .store.tables import DIVERGED

SUMMARY_METRICS = ("test_acc", "train_acc", "ggap", "sparsity", "agreement")


def last_epoch_summary(populations: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per (population, level): ``epoch`` (the population's last), ``models``, ``states``
    (recorded states at that level, all epochs), ``diverged`` (models whose last state holds NaN or
    infinite weights: the states tables' flag; their metrics are in the means as recorded) and
    ``<metric>_mean`` / ``<metric>_std`` (std over models, ddof=0) of each metric at the last
    epoch, in stored units (fractions)."""
    rows = []
    for population, states in populations.items():
        last = int(states.epoch.max())
        for level, at in states[states.epoch == last].groupby("level"):
            row = {"population": population, "level": float(level), "epoch": last,
                   "models": at.model_id.nunique(), "states": int((states.level == level).sum()),
                   "diverged": int(at.model_id[at[DIVERGED]].nunique()) if DIVERGED in at else 0}
            for metric in SUMMARY_METRICS:  # one model has no spread: its std is NaN, not 0
                row[f"{metric}_mean"] = at[metric].mean()
                row[f"{metric}_std"] = at[metric].std(ddof=0) if row["models"] > 1 else float("nan")
            rows.append(row)
    return pd.DataFrame(rows)


def percent(mean: float, std: float) -> str:
    """``mean (std)`` in % with one decimal, as every printout shows accuracies; the mean alone
    when there is no std (NaN: a population of one model)."""
    return f"{100 * mean:.1f}" if math.isnan(std) else f"{100 * mean:.1f} ({100 * std:.1f})"
