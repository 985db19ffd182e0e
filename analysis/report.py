"""``build_report``: every table and figure the store supports, plus what it cannot show and why."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from zoo_dataset.methods import Method, methods, twin_methods
from zoo_dataset.statistics import last_epoch_summary, percent
from zoo_dataset.store import ZooStore
from zoo_dataset.store.tables import init_check

from . import figures, tables
from .frequency import pruned_frequency
from .markdown import to_markdown

PAPER_EPOCHS = (5, 10, 15, 20, 25)  # the epochs the paper shows for twins trained to sparsity


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
    settings: dict[str, str] = field(default_factory=dict)  # population -> its method's settings (VD variant)
    notes: list[str] = field(default_factory=list)  # what the models table records about the models' provenance


def spread_epochs(recorded: list[int], wanted: tuple[int, ...], count: int) -> list[int]:
    """The paper's epochs where recorded; for short runs, ``count`` epochs spread over the run instead."""
    present = [e for e in wanted if e in recorded]
    if len(present) >= min(count, len(recorded)):
        return present
    return sorted({int(round(x)) for x in np.linspace(recorded[0], recorded[-1], min(count, len(recorded)))})


@dataclass(frozen=True)
class Context:
    """What every entry of the report reads: the store, its states per population, the sparsity."""

    store: ZooStore
    populations: dict[str, pd.DataFrame]
    sparsity: float

    @property
    def zoo(self) -> str:
        return self.store.manifest.zoo

    def twins(self) -> list[Method]:
        return [m for m in twin_methods() if m.name in self.populations]

    def pruned(self) -> list[Method]:
        """Twin methods pruned at fixed levels (MP-like)."""
        return [m for m in self.twins() if tables.pruned_at_levels(self.populations[m.name])]

    def trained(self) -> list[Method]:
        """Twin methods whose sparsity grows in training (VD-like)."""
        return [m for m in self.twins() if not tables.pruned_at_levels(self.populations[m.name])]

    def present(self) -> list[Method]:
        return [m for m in methods().values() if m.name in self.populations]

    def root(self) -> pd.DataFrame | None:
        """The states of the population every twin starts from (the originals), if packed."""
        return next((self.states(m) for m in self.present() if m.requires is None), None)

    def states(self, method: Method) -> pd.DataFrame:
        return self.populations[method.name]

    def start(self, method: Method) -> pd.DataFrame | None:
        """The states of the population ``method``'s twins start from (the originals)."""
        return self.populations.get(method.requires)

    def epochs(self, method: Method) -> list[int]:
        """The one epoch selection of Table 7 and Figures 3 and 4: the paper's epochs where
        recorded, else five epochs spread over the run (epoch 0, the start, left out)."""
        recorded = sorted(int(e) for e in self.states(method).epoch.unique())[1:]
        return spread_epochs(recorded, PAPER_EPOCHS, len(PAPER_EPOCHS))


Made = pd.DataFrame | Figure | None  # None: the store cannot show it (the entry's ``missing`` says why)


@dataclass(frozen=True)
class Entry:
    """One table or figure of the report: for which methods, its caption, how to make it.

    ``methods`` picks the twin methods it is made for (one entry each, ``{name}`` in the key is
    the method's name) or, with ``one=True``, says whether it is made at all (once, for all).
    """

    key: str
    methods: Callable[[Context], list[Method]]
    caption: Callable[[Context, Method | None], str]
    make: Callable[[Context, Method | None], Made]
    missing: str
    one: bool = False


def _first(pick: Callable[[Context], list[Method]]) -> Callable[[Context], list[Method]]:
    return lambda ctx: pick(ctx)[:1]


def _frequency_source(ctx: Context) -> list[Method]:
    """Figure 3 shows the first twin trained to sparsity, else the first pruned at levels."""
    return (ctx.trained() or ctx.pruned())[:1]


def _frequency(ctx: Context, m: Method) -> Figure:
    if m in ctx.trained():
        frequency = pruned_frequency(ctx.store, m.name, ctx.epochs(m))
        return figures.frequency_maps(frequency, f"{ctx.zoo}: {m.label} sparsification frequency per weight")
    states = ctx.states(m)
    level = tables.closest_level(states, ctx.sparsity)
    frequency = pruned_frequency(ctx.store, m.name, [int(states.epoch.max())], level)
    return figures.frequency_maps(frequency, f"{ctx.zoo}: {m.label} pruning frequency at {level:.0%}")


def _frequency_caption(ctx: Context, m: Method) -> str:
    if m in ctx.trained():
        return f"Figure 3: fraction of {m.label} twins with each weight pruned, epochs {ctx.epochs(m)}"
    level = tables.closest_level(ctx.states(m), ctx.sparsity)
    return f"Figure 3 ({m.label}, no twins trained to sparsity): fraction of models with each weight pruned " \
           f"at level {level:.0%}"


def _layer_table(ctx: Context, m: Method) -> pd.DataFrame | None:
    table = tables.mp_layer_sparsity(ctx.states(m))
    return None if table.empty else table


def _trajectories(ctx: Context, m: Method | None) -> Figure:
    twin = (ctx.trained() or [None])[0]
    return figures.trajectories(ctx.root(), ctx.states(twin) if twin else None, twin.label if twin else None,
                                ctx.zoo)


ENTRIES: list[Entry] = [
    Entry("table5_{name}_performance", Context.pruned,
          lambda ctx, m: f"Table 5: {m.label} accuracy and ggap per level, before (epoch 0) and after "
                         "fine-tuning (last epoch)",
          lambda ctx, m: tables.mp_performance(ctx.states(m)), "Table 5 needs twins pruned at levels (MP)"),
    Entry("table8_{name}_layer_sparsity", Context.pruned,
          lambda ctx, m: f"Table 8: {m.label} per-layer sparsity after fine-tuning",
          _layer_table, "Table 8: none of the levels 50/70/90 % were built"),
    Entry("table6_{name}_performance", Context.trained,
          lambda ctx, m: f"Table 6: {m.label} accuracy, sparsity and ggap per epoch",
          lambda ctx, m: tables.vd_performance(ctx.states(m)), "Table 6 needs twins trained to sparsity (VD)"),
    Entry("table7_{name}_layer_sparsity", Context.trained,
          lambda ctx, m: f"Table 7: {m.label} per-layer sparsity at epochs {ctx.epochs(m)}",
          lambda ctx, m: tables.vd_layer_sparsity(ctx.states(m), ctx.epochs(m)),
          "Table 7 needs twins trained to sparsity (VD)"),
    Entry("table1_agreement", Context.twins,
          lambda ctx, m: "Tables 1/9: twin accuracy, sparsity and agreement with the original, each method at "
                         f"the level or epoch closest to {ctx.sparsity:.0%} sparsity (column chosen)",
          lambda ctx, m: tables.agreement(ctx.populations, ctx.sparsity), "Tables 1/9 need twins", one=True),
    Entry("table2_correlation", lambda ctx: [m for m in ctx.twins() if ctx.start(m) is not None],
          lambda ctx, m: "Table 2: Pearson r and Kendall tau (coefficients, not %) between original and twin "
                         f"accuracy, each method at the level or epoch closest to {ctx.sparsity:.0%} sparsity",
          lambda ctx, m: tables.correlation(ctx.populations, ctx.sparsity),
          "Table 2 needs twins and their originals", one=True),
    Entry("figure2_trajectories", Context.present,
          lambda ctx, m: "Figure 2: test accuracy over original training (left); twin test accuracy and "
                         "sparsity per epoch (right). Thin lines: models; bold: mean.",
          _trajectories, "Figure 2 needs a population", one=True),
    Entry("figure3_frequency", _frequency_source, _frequency_caption, _frequency,
          "Figures 3 and 4 need MP or VD twins"),
    Entry("figure4_layer_size", _first(Context.trained),
          lambda ctx, m: f"Figure 4: layer size vs {m.label} sparsity (log-log), epochs {ctx.epochs(m)}",
          lambda ctx, m: figures.layer_size_vs_sparsity(ctx.states(m), _layer_sizes(ctx.store), ctx.epochs(m),
                                                        f"{ctx.zoo}: layer size vs {m.label} sparsity"),
          "Figure 4 needs twins trained to sparsity (VD)"),
    Entry("figure5_acc_vs_sparsity", Context.twins,
          lambda ctx, m: f"Figure 5: mean accuracy over mean sparsity: {', '.join(t.label for t in ctx.twins())}",
          lambda ctx, m: figures.accuracy_vs_sparsity({t.label: ctx.states(t) for t in ctx.twins()},
                                                      f"{ctx.zoo}: accuracy vs sparsity"),
          "Figure 5 needs twins", one=True),
]


def build_report(store: ZooStore, sparsity: float = tables.DEFAULT_SPARSITY) -> Report:
    """Make every entry the store's populations allow; list what is missing and why."""
    pops = {name: store.states(name) for name in store.populations}
    spec = store.manifest.zoo_spec
    report = Report(store.manifest.zoo, pops,
                    settings={m.name: m.settings(spec) for m in methods().values() if m.name in pops})
    report.missing += _population_gaps(store)
    if epoch0 := init_check(store.models()):
        report.notes.append(f"epoch 0: {epoch0}")
    ctx = Context(store, pops, sparsity)
    for entry in ENTRIES:
        chosen = entry.methods(ctx)
        targets = [None] if entry.one and chosen else chosen
        made = [(m, entry.make(ctx, m)) for m in targets]
        if not any(thing is not None for _, thing in made):
            if entry.missing not in report.missing:
                report.missing.append(entry.missing)
            continue
        for m, thing in made:
            if thing is None:
                continue
            key = entry.key.format(name=m.name if m else "")
            caption = entry.caption(ctx, m)
            if isinstance(thing, Figure):
                report.figures[key] = (caption, thing)
            else:
                report.tables.append(Table(key, caption, thing))
    absent = [m.label for m in twin_methods() if m.default and m.name not in pops]
    if ctx.twins() and absent:
        report.missing.append(f"Figure 5 has no {', '.join(absent)} twins")
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


def _layer_sizes(store: ZooStore) -> dict[str, int]:
    return {e.layer: e.size for e in store.layout.weight_entries()}


def write_report(report: Report, out: Path) -> Path:
    """``report.md`` with every table and figure, one CSV per table, one PNG per figure."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# Zoo report: {report.zoo}", "", "Accuracies, ggap, sparsity, agreement and levels are in %, as mean "
             "(std over models); correlation coefficients are printed as they are.", ""]
    for name, states in report.populations.items():
        lines.append(
            f"- {name}: {states.model_id.nunique()} models, levels "
            f"{sorted(float(x) for x in states.level.unique())}, epochs 0..{int(states.epoch.max())}"
            + (f"; {report.settings[name]}" if report.settings.get(name) else "")
        )
    lines += [f"- {note}" for note in report.notes]
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
    lines += [f"  {name}: {text}" for name, text in report.settings.items() if text]
    lines += [f"  {note}" for note in report.notes]
    for r in last_epoch_summary(report.populations).itertuples():
        tag = r.population + (f" @ {r.level:.0%}" if r.level > 0 else "")
        lines.append(
            f"  {tag:16} {r.models:4d} models  epoch {r.epoch:3d}  acc {percent(r.test_acc_mean, r.test_acc_std)}  "
            f"sparsity {100 * r.sparsity_mean:5.1f}  ggap {100 * r.ggap_mean:5.1f}"
        )
    for table in report.tables:
        if table.key in ("table1_agreement", "table2_correlation"):
            lines += ["", table.title, to_markdown(table.frame)]
    lines += ["", f"{len(report.tables)} tables, {len(report.figures)} figures"]
    lines += [f"missing: {m}" for m in report.missing]
    return "\n".join(lines)
