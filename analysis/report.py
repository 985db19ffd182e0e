"""``build_report``: every table and figure the store supports, plus what it cannot show and why."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from zoo_dataset.methods import methods, twin_methods
from zoo_dataset.store import ZooStore

from . import figures, tables
from .frequency import pruned_frequency
from .markdown import to_markdown

FREQUENCY_ROWS = 4  # epochs shown in Figure 3
SIZE_EPOCHS = (5, 10, 15, 20)  # Figure 4 (the paper leaves out epoch 25)


@dataclass
class Table:
    key: str  # file stem
    title: str
    frame: pd.DataFrame


@dataclass
class Report:
    zoo: str
    populations: dict[str, pd.DataFrame]
    tables: list[Table] = field(default_factory=list)
    figures: dict[str, tuple[str, Figure]] = field(default_factory=dict)  # key -> (caption, figure)
    missing: list[str] = field(default_factory=list)


def spread_epochs(recorded: list[int], wanted: tuple[int, ...], count: int) -> list[int]:
    """The paper's epochs where recorded; for short runs, ``count`` epochs spread over the run instead."""
    present = [e for e in wanted if e in recorded]
    if len(present) >= min(count, len(recorded)):
        return present
    return sorted({int(round(x)) for x in np.linspace(recorded[0], recorded[-1], min(count, len(recorded)))})


def build_report(store: ZooStore, sparsity: float = tables.DEFAULT_SPARSITY) -> Report:
    """Compute what the store's populations allow; list what is missing."""
    pops = {name: store.states(name) for name in store.populations}
    report = Report(store.manifest.zoo, pops)
    report.missing += _population_gaps(store)
    mp, vd, original = pops.get("mp"), pops.get("vd"), pops.get("original")
    add = report.tables.append
    if mp is not None:
        add(
            Table(
                "table5_mp_performance",
                "Table 5: MP accuracy and ggap per level, before (epoch 0) and after fine-tuning (last epoch)",
                tables.mp_performance(mp),
            )
        )
        layer = tables.mp_layer_sparsity(mp)
        if layer.empty:
            report.missing.append("Table 8: none of the MP levels 50/70/90 % were built")
        else:
            add(Table("table8_mp_layer_sparsity", "Table 8: MP per-layer sparsity after fine-tuning", layer))
    if vd is not None:
        add(
            Table(
                "table6_vd_performance",
                "Table 6: VD accuracy, sparsity and ggap per epoch",
                tables.vd_performance(vd),
            )
        )
        epochs = spread_epochs(sorted(vd.epoch.unique()), tables.VD_LAYER_EPOCHS, len(tables.VD_LAYER_EPOCHS))
        add(
            Table(
                "table7_vd_layer_sparsity",
                f"Table 7: VD per-layer sparsity at epochs {epochs}",
                tables.vd_layer_sparsity(vd, epochs),
            )
        )
    twins = {k: v for k, v in pops.items() if k in ("mp", "vd")}
    if twins:
        add(
            Table(
                "table1_agreement",
                f"Tables 1/9: twin accuracy, sparsity and agreement with the original near {sparsity:.0%} sparsity",
                tables.agreement(twins, sparsity),
            )
        )
    if twins and original is not None:
        add(
            Table(
                "table2_correlation",
                f"Table 2: Pearson r and Kendall tau between original and twin accuracy near {sparsity:.0%} sparsity",
                tables.correlation(pops, sparsity),
            )
        )
    _add_figures(report, store, sparsity)
    return report


def _population_gaps(store: ZooStore) -> list[str]:
    """Populations that are absent, or only partly packed (the report then covers the packed shards)."""
    gaps, shards = [], len(store.manifest.shard_groups())
    for name in (m.name for m in methods().values() if m.default or m.name in store.manifest.populations):
        info = store.manifest.populations.get(name)
        done = len(info.shards) if info else 0
        if done < shards:
            state = "no" if done == 0 else f"only {done} of {shards} shards of the"
            gaps.append(
                f"{state} {name} population: tables and figures use what is packed "
                f"(complete it with `zoo-build --zoo {store.manifest.zoo} --stages {name} --resume`)"
            )
    return gaps


def _add_figures(report: Report, store: ZooStore, sparsity: float) -> None:
    pops, zoo = report.populations, report.zoo
    mp, vd, original = pops.get("mp"), pops.get("vd"), pops.get("original")

    def figure(key: str, caption: str, make: Callable[[], Figure]) -> None:
        report.figures[key] = (caption, make())

    if original is not None or vd is not None:
        figure(
            "figure2_trajectories",
            "Figure 2: test accuracy over original training (left); VD test accuracy "
            "and sparsity per epoch (right). Thin lines: models; bold: mean.",
            lambda: figures.trajectories(original, vd, zoo),
        )
    source = "vd" if vd is not None else "mp" if mp is not None else None
    if source == "vd":
        epochs = spread_epochs(sorted(vd.epoch.unique()), tables.VD_LAYER_EPOCHS[1:], FREQUENCY_ROWS)
        figure(
            "figure3_frequency",
            f"Figure 3: fraction of VD twins with each weight pruned, epochs {epochs}",
            lambda: figures.frequency_maps(
                pruned_frequency(store, "vd", epochs), f"{zoo}: VD sparsification frequency per weight"
            ),
        )
        size_epochs = spread_epochs(sorted(vd.epoch.unique())[1:], SIZE_EPOCHS, len(SIZE_EPOCHS))
        figure(
            "figure4_layer_size",
            f"Figure 4: layer size vs VD sparsity (log-log), epochs {size_epochs}",
            lambda: figures.layer_size_vs_sparsity(
                vd, _layer_sizes(store), size_epochs, f"{zoo}: layer size vs VD sparsity"
            ),
        )
    elif source == "mp":
        level = tables.closest_mp_level(mp, sparsity)
        last = int(mp.epoch.max())
        figure(
            "figure3_frequency",
            f"Figure 3 (MP, no VD twins): fraction of models with each weight pruned at level {level:.0%}",
            lambda: figures.frequency_maps(
                pruned_frequency(store, "mp", [last], level), f"{zoo}: MP pruning frequency at {level:.0%}"
            ),
        )
        report.missing.append("Figure 4 needs VD twins")
    else:
        report.missing.append("Figures 3 and 4 need MP or VD twins")
    twins = {m.label: pops[m.name] for m in twin_methods() if m.name in pops}
    if twins:
        figure(
            "figure5_acc_vs_sparsity",
            f"Figure 5: mean accuracy over mean sparsity: {', '.join(twins)}",
            lambda: figures.accuracy_vs_sparsity(twins, f"{zoo}: accuracy vs sparsity"),
        )
        absent = [m.label for m in twin_methods() if m.default and m.name not in pops]
        if absent:
            report.missing.append(f"Figure 5 has no {', '.join(absent)} twins")


def _layer_sizes(store: ZooStore) -> dict[str, int]:
    return {e.layer: e.size for e in store.layout.weight_entries()}


def write_report(report: Report, out: Path) -> Path:
    """``report.md`` with every table and figure, one CSV per table, one PNG per figure."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# Zoo report: {report.zoo}", "", "Values are mean (std over models) in %.", ""]
    for name, states in report.populations.items():
        lines.append(
            f"- {name}: {states.model_id.nunique()} models, levels "
            f"{sorted(float(x) for x in states.level.unique())}, epochs 0..{int(states.epoch.max())}"
        )
    for table in report.tables:
        table.frame.to_csv(out / f"{table.key}.csv", index=False)
        lines += ["", f"## {table.title}", "", to_markdown(table.frame), "", f"CSV: `{table.key}.csv`"]
    for key, (caption, fig) in report.figures.items():
        fig.savefig(out / f"{key}.png", dpi=110)
        plt.close(fig)
        lines += ["", f"## {caption.split(':')[0]}", "", f"![{caption}]({key}.png)", "", caption]
    if report.missing:
        lines += ["", "## Missing", "", *(f"- {m}" for m in report.missing)]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return out / "report.md"


def summary(report: Report) -> str:
    """A one-page terminal summary: populations, headline numbers, what is missing."""
    lines = [f"zoo {report.zoo}"]
    for name, states in report.populations.items():
        last = states[states.epoch == states.epoch.max()]
        for level, at in last.groupby("level"):
            tag = name + (f" @ {level:.0%}" if name == "mp" else "")
            lines.append(
                f"  {tag:12} {at.model_id.nunique():4d} models  epoch {int(states.epoch.max()):3d}  "
                f"acc {100 * at.test_acc.mean():5.1f} ({100 * at.test_acc.std(ddof=0):4.1f})  "
                f"sparsity {100 * at.sparsity.mean():5.1f}  ggap {100 * at.ggap.mean():5.1f}"
            )
    for table in report.tables:
        if table.key in ("table1_agreement", "table2_correlation"):
            lines += ["", table.title, to_markdown(table.frame)]
    lines += ["", f"{len(report.tables)} tables, {len(report.figures)} figures"]
    lines += [f"missing: {m}" for m in report.missing]
    return "\n".join(lines)
