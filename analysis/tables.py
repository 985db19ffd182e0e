"""The paper's tables as tidy DataFrames, computed from a store's states tables.

Every function takes the states DataFrame(s) of ``ZooStore.states(pop)`` and returns numbers in
their stored units (fractions, not %); formatting to "mean (std) %" happens in ``report``.
Standard deviations are population std (ddof=0) over models, as ``zoo-build`` prints them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from zoo_dataset.methods import get_method, twin_methods

MP_LAYER_LEVELS = (0.5, 0.7, 0.9)  # Table 8
VD_LAYER_EPOCHS = (0, 5, 10, 15, 20, 25)  # Table 7 of the paper
DEFAULT_SPARSITY = 0.8  # Tables 1/2/9: the paper's MP level for most zoos


def layer_columns(states: pd.DataFrame) -> list[str]:
    """``sparsity_<layer>`` columns in layer order."""
    return [c for c in states.columns if c.startswith("sparsity_")]


def _mean_std(frame: pd.DataFrame, keys: list[str], columns: Sequence[str]) -> pd.DataFrame:
    """One row per group of ``keys``: n_models and ``<col>_mean`` / ``<col>_std`` per column (std
    NaN for a group of one model: one model has no spread, and "(0.0)" would claim one)."""
    grouped = frame.groupby(keys, sort=True)
    out = grouped[list(columns)].agg(["mean", lambda s: s.std(ddof=0)])
    out.columns = [f"{c}_{'mean' if stat == 'mean' else 'std'}" for c, stat in out.columns]
    out.insert(0, "n_models", grouped.model_id.nunique())
    out.loc[out.n_models == 1, [c for c in out.columns if c.endswith("_std")]] = float("nan")
    return out.reset_index()


def _last_epoch(states: pd.DataFrame) -> int:
    return int(states.epoch.max())


def mp_performance(mp: pd.DataFrame) -> pd.DataFrame:
    """Table 5: accuracy and ggap per MP level before (epoch 0) and after fine-tuning (last epoch)."""
    last = _last_epoch(mp)
    picked = mp[mp.epoch.isin([0, last])].assign(stage=lambda d: np.where(d.epoch == 0, "before", "after"))
    table = _mean_std(picked, ["level", "epoch", "stage"], ["test_acc", "ggap", "sparsity"])
    return table.sort_values(["level", "epoch"]).reset_index(drop=True)


def mp_layer_sparsity(mp: pd.DataFrame, levels: Sequence[float] = MP_LAYER_LEVELS) -> pd.DataFrame:
    """Table 8: per-layer sparsity, accuracy and ggap after fine-tuning at the chosen levels present."""
    final = mp[(mp.epoch == _last_epoch(mp)) & _near(mp.level, levels)]
    return _mean_std(final, ["level"], [*layer_columns(mp), "test_acc", "ggap"])


def vd_performance(vd: pd.DataFrame) -> pd.DataFrame:
    """Table 6: VD accuracy, sparsity and ggap per epoch."""
    return _mean_std(vd, ["epoch"], ["test_acc", "sparsity", "ggap"])


def vd_layer_sparsity(vd: pd.DataFrame, epochs: Sequence[int] = VD_LAYER_EPOCHS) -> pd.DataFrame:
    """Table 7: VD per-layer sparsity (plus accuracy and ggap) at the chosen epochs that were recorded."""
    return _mean_std(vd[vd.epoch.isin(list(epochs))], ["epoch"], [*layer_columns(vd), "test_acc", "ggap"])


def closest_level(states: pd.DataFrame, sparsity: float) -> float:
    """The recorded level nearest to ``sparsity`` (for twins pruned at fixed levels)."""
    levels = np.sort(states.level.unique())
    return float(levels[np.argmin(np.abs(levels - sparsity))])


def closest_epoch(states: pd.DataFrame, sparsity: float) -> int:
    """The epoch whose mean sparsity is closest to ``sparsity`` (for twins whose sparsity grows in training)."""
    means = states.groupby("epoch").sparsity.mean()
    return int((means - sparsity).abs().idxmin())


def pruned_at_levels(states: pd.DataFrame) -> bool:
    """Twins pruned at fixed levels (MP-like: one unit per level) rather than sparsified by training."""
    return bool((states.level > 0).any())


def twins_of(populations: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """The twin populations among ``populations``, in the registry's order."""
    return {m.name: populations[m.name] for m in twin_methods() if m.name in populations}


def twin_states_at(populations: dict[str, pd.DataFrame], sparsity: float) -> dict[str, tuple[pd.DataFrame, str]]:
    """Per twin method, the states compared in Tables 1/2/9 and how they were chosen: twins pruned at
    levels at the closest level after fine-tuning, others at the epoch closest in mean sparsity."""
    out = {}
    for method, states in twins_of(populations).items():
        if pruned_at_levels(states):
            level = closest_level(states, sparsity)
            at = states[(states.epoch == _last_epoch(states)) & np.isclose(states.level, level)]
            out[method] = (at, f"level closest to {sparsity:.0%}, last epoch")
        else:
            at = states[states.epoch == closest_epoch(states, sparsity)]
            out[method] = (at, f"epoch closest to {sparsity:.0%} mean sparsity")
    return out


def agreement(populations: dict[str, pd.DataFrame], sparsity: float = DEFAULT_SPARSITY) -> pd.DataFrame:
    """Tables 1/9: twin accuracy, sparsity and agreement with the original near a chosen sparsity."""
    rows = []
    for method, (at, chosen) in twin_states_at(populations, sparsity).items():
        row = _mean_std(at.assign(method=method), ["method"], ["test_acc", "sparsity", "agreement"]).iloc[0]
        rows.append(
            {
                "method": method,
                "chosen": chosen,
                "level": float(at.level.iloc[0]),
                "epoch": int(at.epoch.iloc[0]),
                **row.drop("method").to_dict(),
            }
        )
    return pd.DataFrame(rows)


def correlation(populations: dict[str, pd.DataFrame], sparsity: float = DEFAULT_SPARSITY) -> pd.DataFrame:
    """Table 2: Pearson r and Kendall tau between each model's start (the last epoch of the population
    its twin started from) and twin accuracy."""
    rows = []
    for method, (at, chosen) in twin_states_at(populations, sparsity).items():
        start = populations.get(get_method(method).requires)
        if start is None:
            continue
        final = start[start.epoch == _last_epoch(start)].set_index("model_id").test_acc
        twin = at.set_index("model_id").test_acc
        ids = twin.index.intersection(final.index)
        a, b = final.loc[ids].to_numpy(), twin.loc[ids].to_numpy()
        defined = len(ids) > 1 and np.ptp(a) > 0 and np.ptp(b) > 0
        rows.append(
            {
                "method": method,
                "chosen": chosen,
                "level": float(at.level.iloc[0]),
                "epoch": int(at.epoch.iloc[0]),
                "sparsity_mean": float(at.sparsity.mean()),
                "n_models": len(ids),
                "pearson_r": float(stats.pearsonr(a, b).statistic) if defined else float("nan"),
                "kendall_tau": float(stats.kendalltau(a, b).statistic) if defined else float("nan"),
            }
        )
    return pd.DataFrame(rows)


def _near(values: pd.Series, targets: Sequence[float]) -> pd.Series:
    return values.apply(lambda v: any(abs(v - t) < 1e-6 for t in targets))
