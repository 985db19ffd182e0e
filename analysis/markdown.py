"""Render the numeric tables as the paper prints them: metrics as "mean (std)" in %, correlation
coefficients as they are."""

from __future__ import annotations

import math

import pandas as pd

PERCENT_PREFIXES = (
    "test_acc",
    "train_acc",
    "ggap",
    "sparsity",
    "agreement",
    "level",
)
COEFFICIENTS = ("pearson_r", "kendall_tau")  # printed as they are, to three decimals


def _is_percent(column: str) -> bool:
    return column.startswith(PERCENT_PREFIXES)


def _no_value(value: object) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _cell(value: object, percent: bool, decimals: int | None = None) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        if percent:
            return f"{100 * value:.1f}"
        return f"{value:.{decimals}f}" if decimals is not None else f"{value:g}"
    return str(value)


def paper_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Merge ``<x>_mean`` / ``<x>_std`` pairs into one "mean (std)" column (in % for fractions)."""
    out = {}
    for column in frame.columns:
        if column.endswith("_std"):
            continue
        if column.endswith("_mean") and f"{column[:-5]}_std" in frame.columns:
            base = column[:-5]
            out[base] = [  # no std (NaN): one model, whose value alone is shown
                _cell(m, True) if _no_value(s) else f"{_cell(m, True)} ({_cell(s, True)})"
                for m, s in zip(frame[column], frame[f"{base}_std"], strict=True)
            ]
        else:
            decimals = 3 if column in COEFFICIENTS else None
            out[column] = [_cell(v, _is_percent(column), decimals) for v in frame[column]]
    return pd.DataFrame(out)


def to_markdown(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table of ``paper_columns(frame)``."""
    shown = paper_columns(frame)
    header = "| " + " | ".join(shown.columns) + " |"
    rule = "|" + "|".join("---" for _ in shown.columns) + "|"
    rows = ["| " + " | ".join(str(v) for v in row) + " |" for row in shown.itertuples(index=False)]
    return "\n".join([header, rule, *rows])
