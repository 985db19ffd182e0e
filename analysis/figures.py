"""The paper's figures (2-5) as matplotlib figures, headless (Agg); ``report`` saves them as PNG."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter  # noqa: E402

from .tables import layer_columns  # noqa: E402


def _population_lines(ax, states: pd.DataFrame, column: str, color: str, label: str) -> None:
    """One thin line per model and the population mean in bold."""
    for _, model in states.groupby("model_id"):
        ax.plot(model.epoch, 100 * model[column], color=color, alpha=0.25, lw=0.8)
    mean = states.groupby("epoch")[column].mean()
    ax.plot(mean.index, 100 * mean.to_numpy(), color=color, lw=2.2, label=label)


def trajectories(original: pd.DataFrame | None, twin: pd.DataFrame | None, twin_label: str | None,
                 zoo: str) -> Figure:
    """Figure 2: test accuracy over original training (left); a twin method's accuracy and sparsity
    per epoch (right: VD in the paper)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    if original is not None:
        _population_lines(left, original, "test_acc", "tab:blue", "test accuracy")
    left.set(title=f"{zoo}: original training", xlabel="epoch", ylabel="%")
    if twin is not None:
        _population_lines(right, twin, "test_acc", "tab:blue", "test accuracy")
        _population_lines(right, twin, "sparsity", "tab:red", "sparsity")
    else:
        right.text(0.5, 0.5, "no twins trained to sparsity in this store", ha="center", va="center",
                   transform=right.transAxes)
    label = twin_label or "twin"
    right.set(title=f"{zoo}: {label} sparsification", xlabel=f"{label} epoch", ylabel="%")
    for ax in (left, right):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower right")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def frequency_maps(frequency: dict[int, dict[str, np.ndarray]], title: str) -> Figure:
    """Figure 3: per-weight pruning frequency, one row per epoch, one column per layer."""
    epochs = list(frequency)
    layers = list(frequency[epochs[0]])
    fig, axes = plt.subplots(
        len(epochs),
        len(layers),
        figsize=(2.6 * len(layers), 2.0 * len(epochs) + 1.0),
        squeeze=False,
        layout="constrained",
    )
    image = None
    for row, epoch in enumerate(epochs):
        for col, layer in enumerate(layers):
            ax = axes[row, col]
            image = ax.imshow(
                frequency[epoch][layer],
                vmin=0,
                vmax=1,
                cmap="viridis",
                aspect="auto",
                interpolation="nearest",
            )
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(layer)
            if col == 0:
                ax.set_ylabel(f"epoch {epoch}\nneuron")
            if row == len(epochs) - 1:
                ax.set_xlabel("input x kernel")
    fig.suptitle(title)
    fig.colorbar(image, ax=axes, shrink=0.8, label="fraction of models pruned")
    return fig


def layer_size_vs_sparsity(states: pd.DataFrame, layer_sizes: dict[str, int], epochs: list[int], title: str) -> Figure:
    """Figure 4: log layer size against log mean sparsity (error bar: std over models) per epoch.

    Layers are ordered by size; a mean sparsity of exactly 0 has no place on a log axis and is left out.
    """
    fig, ax = plt.subplots(figsize=(6, 4.5))
    columns = sorted(layer_columns(states), key=lambda c: layer_sizes[c.removeprefix("sparsity_")])
    sizes = np.array([layer_sizes[c.removeprefix("sparsity_")] for c in columns])
    for epoch in epochs:
        at = states[states.epoch == epoch][columns]
        mean, std = at.mean().to_numpy(), at.std(ddof=0).to_numpy()
        ax.errorbar(sizes, 100 * mean, yerr=100 * std, marker="o", capsize=3, ls="-", label=f"epoch {epoch}")
    ax.set(xscale="log", yscale="log", xlabel="layer size (weights)", ylabel="mean sparsity (%)", title=title)
    for axis in (ax.xaxis, ax.yaxis):  # plain numbers (60, 200, 1000), not "6x10^1"
        axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axis.set_minor_formatter(NullFormatter())
    names: dict[int, list[str]] = {}
    for size, column in zip(sizes, columns, strict=True):
        names.setdefault(int(size), []).append(column.removeprefix("sparsity_"))
    for size, layers in names.items():
        ax.annotate(
            "/".join(layers),
            (size, 0),
            xycoords=("data", "axes fraction"),
            textcoords="offset points",
            xytext=(0, 4),
            ha="center",
            fontsize=8,
            color="gray",
        )
    ax.legend()
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return fig


def accuracy_vs_sparsity(twins: dict[str, pd.DataFrame], title: str) -> Figure:
    """Figure 5: mean accuracy over mean sparsity for every twin method (``label -> states``).

    A method with several levels is drawn per level after fine-tuning (its last epoch); a method
    with one level per epoch, as its sparsity grows in training.
    """
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for (label, states), marker in zip(twins.items(), "os^Dv<>p*", strict=False):
        _twin_curve(ax, label, states, f"{marker}-")
    ax.set(xlabel="mean sparsity (%)", ylabel="mean test accuracy (%)", title=title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def zero_shot_accuracy(sweep: pd.DataFrame, table: pd.DataFrame, twins: dict[str, pd.DataFrame],
                       title: str) -> Figure:
    """Zero-shot sparsification: mean test accuracy over mean sparsity of the held-out models.

    ``sweep`` holds the predicted log-alphas cut at several thresholds and global MP of the same
    originals at the same sparsities (no training for either); ``table`` the per-model points at
    the VD threshold; ``twins`` the stored twins of those models (``label -> states``), drawn as in
    Figure 5."""
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    ax.scatter(100 * table.sparsity, 100 * table.zero_shot_acc, s=10, alpha=0.35, color="tab:green",
               label="zero-shot, per model (log-alpha >= 3)")
    ax.plot(100 * sweep.sparsity, 100 * sweep.zero_shot_acc, "o-", color="tab:green",
            label="zero-shot, predicted log-alpha cut at t")
    ax.plot(100 * sweep.sparsity, 100 * sweep.mp_no_ft_acc, "s--", color="tab:gray",
            label="global MP, no fine-tuning")
    for (label, states), marker in zip(twins.items(), "^Dv", strict=False):
        _twin_curve(ax, f"{label} twin", states, f"{marker}:")
    ax.set(xlabel="sparsity (%)", ylabel="test accuracy (%)", title=title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _twin_curve(ax, label: str, states: pd.DataFrame, style: str) -> None:
    """One twin method's mean accuracy over mean sparsity: per level after fine-tuning (a method
    with several levels), else per epoch as its sparsity grows in training."""
    if states.level.nunique() > 1:
        points = states[states.epoch == states.epoch.max()].groupby("level")[["sparsity", "test_acc"]].mean()
        label = f"{label} (after fine-tuning)"
    else:
        points = states.groupby("epoch")[["sparsity", "test_acc"]].mean()
        label = f"{label} (per epoch)"
    ax.plot(100 * points.sparsity.to_numpy(), 100 * points.test_acc.to_numpy(), style, label=label)
