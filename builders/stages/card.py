"""The card stage: a Hugging Face dataset card (README.md) and croissant.json for the store.

It runs last and trains nothing. It writes the parquet configs (``builders.hub_tables``: tables
and weights split by model into train / validation / test), the card's front matter (license,
task categories, source datasets, size category, tags, those configs and their ``dataset_info``
features, made with ``huggingface_hub``'s and ``datasets``' own card writers), the template in
``dataset_cards/template.md`` filled with the spec and statistics computed from the stored states,
and the Croissant description of the same files (``builders.croissant``). So the card never
disagrees with the data. Every file it writes is then entered in the manifest with its sha256
(``card_files``), so ``ZooStore.verify()`` and downloads check what the card offers as they check
the shards. The benchmark's files under ``bench/`` (``zoo-bench``: split files and results) are
entered too, and listed in the card's "Benchmarks" section.
"""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path
from string import Template

import pandas as pd

from loaders.sources import default_repo_id
from zoo_dataset.errors import StoreError
from zoo_dataset.inputs import read_regular
from zoo_dataset.methods import get_method, methods, twin_methods
from zoo_dataset.statistics import last_epoch_summary, percent
from zoo_dataset.store import ZooStore
from zoo_dataset.store.files import atomic_write_text, check_file
from zoo_dataset.store.layout_on_disk import BENCH_RESULTS, BENCH_SPLITS, CARD_FILE, bench_files
from zoo_dataset.store.manifest import FileEntry
from zoo_dataset.store.paths import check_not_linked, inside
from zoo_dataset.store.tables import SPLITS, init_check

from ..context import BuildContext
from ..croissant import CROISSANT, croissant
from ..hub_tables import HubConfig, write_hub_tables
from .base import StageReport

TEMPLATE = files("dataset_cards") / "template.md"  # package data: found in wheels and editable installs
CARD = CARD_FILE
LICENSE = "cc-by-4.0"  # the license of the original model zoos these twins derive from (a Hub license id)
# Hub task ids: predicting properties (accuracy, ggap) and factors (activation, optimizer) from weights
TASK_CATEGORIES = ["tabular-regression", "tabular-classification"]
SOURCE_DATASETS = ["original"]  # the weights are new data, not an extension of a Hub dataset
MAX_BENCH_TABLE = 1 << 20  # one run's markdown (a 1000-model zoo's tables are a few kB)
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
        store = ctx.reader()
        write_card(store)
        ctx.store.manifest.card_files = store.manifest.card_files  # a later stage saves the writer's copy
        return StageReport(self.name, 1, 1)


def write_card(store: ZooStore, copy_dir: Path | None = None, repo_id: str | None = None) -> Path:
    """Write the configs' parquet files, ``README.md`` and ``croissant.json`` into the store, enter
    each in the manifest's ``card_files`` (saved) and write the card to ``copy_dir/<zoo>/README.md``
    if given. ``repo_id``: the Hub dataset repo the store is published to, named in the snippets
    (default: the downloader's default repo) and, only when given, as the Croissant ``url``. A store
    with a folder linked outside it is refused before anything is written (:func:`write_hub_tables`
    checks), and so is a benchmark file changed since the manifest recorded it. The caller holds the
    store's writer lock."""
    bench = recorded_bench_files(store)
    configs = write_hub_tables(store)
    text = render_card(store, configs, repo_id or default_repo_id(store.manifest.zoo))
    atomic_write_text(store.zoo_dir / CARD, text)
    description = store.spec.description or _pretty_name(store)
    url = f"https://huggingface.co/datasets/{repo_id}" if repo_id else None
    atomic_write_text(store.zoo_dir / CROISSANT, json.dumps(croissant(store, configs, description, url), indent=1))
    offered = [CARD, CROISSANT, *(path for c in configs for path in c.files.values()), *bench]
    store.manifest.card_files = {rel: FileEntry.of(store.zoo_dir / rel) for rel in sorted(offered)}
    store.manifest.save(store.zoo_dir)
    if copy_dir is not None:  # the copy's folder, like a store's, is never written through a link
        atomic_write_text(check_not_linked(Path(copy_dir) / store.manifest.zoo) / CARD, text)
    return store.zoo_dir / CARD


def recorded_bench_files(store: ZooStore) -> list[str]:
    """The benchmark files in the store (:func:`bench_files`); each the manifest already lists must
    still match its sha256, so the card never vouches for a result edited after it was recorded."""
    files = bench_files(store.zoo_dir)
    listed = store.manifest.card_files or {}
    for relative in files:
        if relative in listed:
            check_file(inside(store.zoo_dir, relative, "benchmark file"), listed[relative].sha256,
                       listed[relative].bytes)
    return files


def benchmarks_section(store: ZooStore) -> str:
    """The card's "Benchmarks" section: the split files and each run's tables (``zoo-bench``
    writes them as ``bench/results/<run>.md``); empty when the store holds no results."""
    files = bench_files(store.zoo_dir)
    runs = [f for f in files if f.startswith(f"{BENCH_RESULTS}/") and f.endswith(".md")]
    if not runs:
        return ""
    splits = [f for f in files if f.startswith(f"{BENCH_SPLITS}/")]
    lines = ["## Benchmarks", "",
             "Results of `zoo-bench` on this store: properties from weights, twin prediction and zero-shot masks "
             "(the toolkit's docs/benchmark.md defines the tasks, metrics and split files). Each run names its "
             "split; the split files are under `bench/splits/`, each run's JSON (versions, seeds, every score "
             "and timing), tables and figure under `bench/results/`.", "",
             "Splits: " + ", ".join(f"`{Path(f).stem}`" for f in splits) + ".", ""]
    for relative in runs:
        data = read_regular(inside(store.zoo_dir, relative, "benchmark file"), MAX_BENCH_TABLE, "benchmark table")
        try:
            lines += [data.decode().strip(), ""]
        except UnicodeDecodeError:
            raise StoreError(f"{store.zoo_dir / relative} is not UTF-8 text: not a zoo-bench table") from None
    return "\n".join(lines) + "\n"


def render_card(store: ZooStore, configs: list[HubConfig], repo_id: str) -> str:
    """The card's text: YAML front matter the Hub accepts, then the filled template."""
    from datasets import DatasetInfo, SplitDict, SplitInfo
    from datasets.info import DatasetInfosDict
    from huggingface_hub import DatasetCardData  # deferred: only the card needs the Hub client

    states = {p: store.states(p) for p in methods() if p in store.populations}
    front = DatasetCardData(
        license=LICENSE,
        pretty_name=_pretty_name(store),
        task_categories=TASK_CATEGORIES,
        source_datasets=SOURCE_DATASETS,
        tags=[
            "model-zoo",
            "weight-space-learning",
            "sparsification",
            "pruning",
            "variational-dropout",
            "pytorch",
        ],
        size_categories=[_size_category(sum(len(s) for s in states.values()))],
        configs=[
            {
                "config_name": c.name,
                "data_files": [{"split": split, "path": path} for split, path in c.files.items()],
                **({"default": True} if c.name == "models" else {}),
            }
            for c in configs
        ],
    )
    DatasetInfosDict({
        c.name: DatasetInfo(
            description=c.description, features=c.features, config_name=c.name,
            splits=SplitDict({split: SplitInfo(name=split, num_examples=n) for split, n in c.rows.items()}),
        )
        for c in configs
    }).to_dataset_card_data(front)
    body = Template(TEMPLATE.read_text()).substitute(_fields(store, states, configs), repo_id=repo_id)
    return f"---\n{front.to_yaml()}\n---\n\n{body}"


def _fields(store: ZooStore, states: dict[str, pd.DataFrame], configs: list[HubConfig]) -> dict[str, object]:
    spec, manifest, layout = store.spec, store.manifest, store.layout
    models = store.models()
    counts = models.split.value_counts()
    twins = [m.name for m in twin_methods() if m.name in states]
    example = (twins or [m.name for m in twin_methods()])[0]
    example_levels = store.population(example).levels if twins else []
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
        "epoch0": init_check(models) or "the initialisation each model's seed gives (trained by this toolkit)",
        "splits": ", ".join(f"{s} {int(counts.get(s, 0))}" for s in SPLITS),
        "factors": "\n".join(f"| {k} | {_values(v)} |" for k, v in spec.to_dict()["factors"].items()),
        "methods": "\n".join(f"| {p} | {_method(store, p)} | {_states_per_model(store, p)} |" for p in states),
        "statistics": "\n".join(_statistics_rows(states)),
        "vd_threshold": spec.vd.threshold,
        "vd_variant": spec.vd.variant,
        "example_method": example,
        "example_level": f", level={example_levels[-1]:g}" if len(example_levels) > 1 else "",
        "configs": "\n".join(f"| `{c.name}` | {c.description} | "
                             f"{', '.join(f'{s} {n}' for s, n in c.rows.items())} |" for c in configs),
        "example_config": next((c.name for c in configs if c.name.startswith("pairs_")), "models"),
        "example_shard": store.population(twins[0] if twins else next(iter(states))).shards[0].file,
        "benchmarks": benchmarks_section(store),
    }


def _method(store: ZooStore, population: str) -> str:
    info, method = store.population(population), get_method(population)
    if method.requires is None:
        return method.description
    settings = method.settings(store.manifest.zoo_spec)
    return f"{method.description} ({method.details(info.levels, info.epochs)}{'; ' + settings if settings else ''})"


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
            f"{100 * r.sparsity_mean:.1f} | {agreement} | {r.diverged} |"
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
