"""The card stage: a Hugging Face dataset card (README.md) for the store, from what it holds.

It runs last and trains nothing: front matter (license, tags, size category, parquet configs)
plus the template in ``dataset_cards/template.md`` filled with the spec and statistics computed
from the stored states, so the card never disagrees with the data.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from string import Template

import pandas as pd

from zoo_dataset.methods import get_method, methods
from zoo_dataset.statistics import last_epoch_summary, percent
from zoo_dataset.store import ZooStore
from zoo_dataset.store.files import atomic_write_text
from zoo_dataset.store.layout_on_disk import MODELS_TABLE
from zoo_dataset.store.tables import SPLITS

from ..context import BuildContext
from .base import StageReport

TEMPLATE = files("dataset_cards") / "template.md"  # package data: found in wheels and editable installs
CARD = "README.md"
LICENSE = "cc-by-4.0"  # the license of the original model zoos these twins derive from
SIZE_BOUNDS = (
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
)


class CardStage:
    name = "card"

    def run(self, ctx: BuildContext) -> StageReport:
        write_card(ctx.reader())
        return StageReport(self.name, 1, 1)


def write_card(store: ZooStore, copy_dir: Path | None = None) -> Path:
    """Write ``README.md`` into the store (and ``copy_dir/<zoo>/README.md`` if given)."""
    text = render_card(store)
    atomic_write_text(store.zoo_dir / CARD, text)
    if copy_dir is not None:
        atomic_write_text(Path(copy_dir) / store.manifest.zoo / CARD, text)
    return store.zoo_dir / CARD


def render_card(store: ZooStore) -> str:
    from huggingface_hub import DatasetCardData  # deferred: only the card needs the Hub client

    states = {p: store.states(p) for p in methods() if p in store.populations}
    front = DatasetCardData(
        license=LICENSE,
        pretty_name=_pretty_name(store),
        tags=[
            "model-zoo",
            "weight-space-learning",
            "sparsification",
            "pruning",
            "variational-dropout",
            "pytorch",
        ],
        size_categories=[_size_category(sum(len(s) for s in states.values()))],
        configs=[{"config_name": "models", "data_files": MODELS_TABLE, "default": True}]
        + [{"config_name": f"states_{p}", "data_files": f"{p}/*.states.parquet"} for p in states],
    )
    body = Template(TEMPLATE.read_text()).substitute(_fields(store, states))
    return f"---\n{front.to_yaml()}\n---\n\n{body}"


def _fields(store: ZooStore, states: dict[str, pd.DataFrame]) -> dict[str, object]:
    spec, manifest, layout = store.spec, store.manifest, store.layout
    models = store.models()
    counts = models.split.value_counts()
    twins = [p for p in states if p != "original"]
    return {
        "pretty_name": _pretty_name(store),
        "description": spec.description,
        "spec_source": spec.source,
        "zoo": manifest.zoo,
        "code_version": manifest.code_version,
        "schema_version": manifest.schema_version,
        "created": manifest.created,
        "dataset": spec.dataset,
        "architecture": spec.architecture,
        "num_params": layout.num_params,
        "num_weights": layout.num_weights,
        "variant": spec.variant,
        "num_models": len(models),
        "zoo_size": spec.size,
        "split_seed": spec.split_seed,
        "splits": ", ".join(f"{s} {int(counts.get(s, 0))}" for s in SPLITS),
        "factors": "\n".join(f"| {k} | {_values(v)} |" for k, v in spec.to_dict()["factors"].items()),
        "methods": "\n".join(f"| {p} | {_method(store, p)} | {_states_per_model(store, p)} |" for p in states),
        "statistics": "\n".join(_statistics_rows(states)),
        "vd_threshold": spec.vd.threshold,
        "example_method": twins[0] if twins else "mp",
    }


def _method(store: ZooStore, population: str) -> str:
    info, method = store.population(population), get_method(population)
    if method.requires is None:
        return method.description
    return f"{method.description} ({method.details(info.levels, info.epochs)})"


def _states_per_model(store: ZooStore, population: str) -> str:
    info = store.population(population)
    return f"{info.epochs + 1}" + (f" per level ({len(info.levels)} levels)" if len(info.levels) > 1 else "")


def _statistics_rows(states: dict[str, pd.DataFrame]) -> list[str]:
    rows = []
    for r in last_epoch_summary(states).itertuples():
        tag = f"{r.level:.0%}" if r.level > 0 else "-"
        agreement = "-" if pd.isna(r.agreement_mean) else f"{100 * r.agreement_mean:.1f}"
        rows.append(
            f"| {r.population} | {tag} | {r.models} | {r.states} | {percent(r.test_acc_mean, r.test_acc_std)} | "
            f"{percent(r.train_acc_mean, r.train_acc_std)} | {percent(r.ggap_mean, r.ggap_std)} | "
            f"{100 * r.sparsity_mean:.1f} | {agreement} |"
        )
    return rows


def _values(values: list) -> str:
    if len(values) > 6 and all(isinstance(v, int) for v in values):
        return f"{len(values)} values, {values[0]}..{values[-1]}"
    return ", ".join(str(v) for v in values)


def _size_category(n_states: int) -> str:
    return next((label for bound, label in SIZE_BOUNDS if n_states < bound), "n>10M")


def _pretty_name(store: ZooStore) -> str:
    return f"Sparsified model zoo twins: {store.manifest.zoo}"
