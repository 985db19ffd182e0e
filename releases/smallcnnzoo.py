"""Ingest a folder in the Small CNN Zoo's format as a zoo's complete original population.

``weights.npy`` is memory-mapped and read a block of models at a time, each block's pages released
after use, so a 5.4 GB zoo of 30 000 models is never held whole; ``metrics.csv.gz`` (one row per
checkpoint) becomes the states table and its ``config.*`` columns the models table's factors. A
model's checkpoints (every ``step`` the files hold, e.g. 0, 1, 2, 3, 20, 40, 60, 80, 86) become
store epochs 0..E in step order; the real step of each is kept in the states table's ``step``
column and in ``ingest.json``. Models without every step (crashed runs) or with non-finite
weights are reported and left out. Each model is staged as it is read, so a killed ingest
continues where it stopped when run again. The format's facts and their sources:
:mod:`releases.smallcnn_format`, docs/research/small-cnn-zoo.md.
"""

from __future__ import annotations

import json
import math
import mmap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from zoo_dataset.architectures import activation_module
from zoo_dataset.counter_rng import GENERATOR
from zoo_dataset.errors import DataFormatError, DataUnavailableError, ZooSpecError
from zoo_dataset.inputs import open_regular
from zoo_dataset.layout import ParameterLayout
from zoo_dataset.methods import get_method
from zoo_dataset.model_layout import layout_for
from zoo_dataset.specs import ModelConfig, ZooSpec
from zoo_dataset.store import StoreWriter
from zoo_dataset.store.files import atomic_write_text
from zoo_dataset.store.layout_on_disk import INGEST_RECORD
from zoo_dataset.store.lock import writer_lock
from zoo_dataset.store.paths import check_zoo_name
from zoo_dataset.store.tables import model_splits
from zoo_dataset.training import JobResult, UnitKey

from .ingest import IngestReport, metric_row, regular_file
from .smallcnn_format import (
    CONFIG,
    EXACT_FLOATS,
    FACTOR_COLUMNS,
    FILES,
    L2REG,
    LAYOUT,
    METRIC_NAMES,
    METRICS,
    WEIGHTS,
    literature_splits,
    read_layout,
    split_files,
    tf_permutation,
)

METHOD = get_method("original")
MODEL_BLOCK = 64  # models read from the memory map at a time: ~11 MB of rows for the Small CNN Zoo
MAX_TABLE_BYTES = 4 << 30  # metrics.csv.gz / layout.csv: tens of MB in the published zoos
MAX_WEIGHTS_BYTES = 1 << 40


class MappedRows:
    """``weights.npy`` memory-mapped read-only: ``rows[index]`` reads rows; :meth:`release` drops the
    pages read so far from this process (they stay in the page cache), so its resident memory stays
    at a block of rows rather than growing to the file's size as a plain ``np.load(mmap_mode="r")``
    does."""

    def __init__(self, path: Path):
        with open_regular(path, DataFormatError) as fh:  # a FIFO or device would block
            try:
                version = np.lib.format.read_magic(fh)
                read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                               (2, 0): np.lib.format.read_array_header_2_0}[version]
                shape, fortran, dtype = read_header(fh)
            except (ValueError, KeyError) as exc:
                raise DataFormatError(f"{path}: not a .npy array ({exc})") from None
            offset = fh.tell()
            self.map = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        if fortran or dtype != np.float32 or len(shape) != 2:
            raise DataFormatError(f"{path}: {dtype} {shape}{' in Fortran order' if fortran else ''}, expected "
                                  "C-ordered float32 rows")
        if offset + int(np.prod(shape)) * dtype.itemsize > len(self.map):
            raise DataFormatError(f"{path}: truncated ({len(self.map)} bytes for {shape} float32)")
        self.rows = np.ndarray(shape, dtype, buffer=self.map, offset=offset)
        self.shape = shape

    def __len__(self) -> int:
        return self.shape[0]

    def read(self, rows: np.ndarray) -> np.ndarray:
        """A copy of ``rows`` (sorted: one pass through the file)."""
        return np.array(self.rows[rows])

    def release(self) -> None:
        if hasattr(mmap, "MADV_DONTNEED"):
            self.map.madvise(mmap.MADV_DONTNEED)


def is_smallcnnzoo(path: Path | str) -> bool:
    """A folder holding the format's three files (a Ray Tune experiment holds none of them)."""
    return Path(path).is_dir() and all((Path(path) / name).exists() for name in FILES)


@dataclass
class PublishedModels:
    """What metrics.csv.gz says, before any weight is read: each model's rows in step order."""

    steps: list[int]
    rows: dict[int, np.ndarray]  # model id -> its rows, one per step
    first: dict[int, int]  # model id -> its first row (factors, modeldir)
    incomplete: dict[int, str]  # model id -> why it is left out


def whole_numbers(values: pd.Series, what: str) -> np.ndarray:
    """A column of whole numbers as int64; DataFormatError for text, blanks or fractions."""
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(np.float64)
    if not np.isfinite(numbers).all() or (numbers != np.round(numbers)).any():
        raise DataFormatError(f"{what} holds values that are not whole numbers")
    return numbers.astype(np.int64)


def read_metrics(folder: Path) -> pd.DataFrame:
    """metrics.csv.gz with floats exactly as written."""
    path = regular_file(folder / METRICS, MAX_TABLE_BYTES)
    try:
        table = pd.read_csv(path, low_memory=False, **EXACT_FLOATS)
    except (ValueError, OSError, EOFError) as exc:  # pandas' parser errors are ValueErrors; gzip's OSError
        raise DataFormatError(f"{path}: not a CSV table ({type(exc).__name__}: {exc})") from None
    if "step" not in table.columns or table.empty:
        raise DataFormatError(f"{path}: no rows with a step column (one row per checkpoint, with its step)")
    table["step"] = whole_numbers(table.step, f"{path}: the step column")
    return table


def model_ids(metrics: pd.DataFrame, where: str) -> np.ndarray:
    """Each row's model: our own ``model_id`` column (a zoo this toolkit exported), else the distinct
    ``modeldir`` values (one per training run) numbered in sorted order, whatever the rows' order."""
    if "model_id" in metrics.columns:
        return whole_numbers(metrics.model_id, f"{where}: the model_id column")
    if "modeldir" not in metrics.columns:
        raise DataFormatError(f"{where}: metrics.csv.gz has neither modeldir nor model_id: rows cannot be told apart")
    return pd.factorize(metrics.modeldir.astype(str), sort=True)[0].astype(np.int64)


def group_rows(ids: np.ndarray, steps: np.ndarray) -> PublishedModels:
    """Every model's rows in step order; a model lacking a step, or holding one twice, is incomplete."""
    all_steps = np.unique(steps)
    step_index = np.searchsorted(all_steps, steps)
    order = np.lexsort((step_index, ids))
    bounds = np.flatnonzero(np.diff(ids[order])) + 1
    rows, first, incomplete = {}, {}, {}
    for block in np.split(order, bounds):
        model = int(ids[block[0]])
        first[model] = int(block.min())
        if np.array_equal(step_index[block], np.arange(len(all_steps))):
            rows[model] = block
        else:
            have = sorted(set(steps[block].tolist()))
            lacking = sorted(set(all_steps.tolist()) - set(have))
            incomplete[model] = f"lacks steps {lacking}" if lacking else "holds a step twice"
    return PublishedModels([int(s) for s in all_steps], rows, first, incomplete)


def factors(row: pd.Series, model_id: int) -> ModelConfig:
    """One model's config.* values as our factors (ValueError naming what is missing or unusable)."""
    missing = [c for c in (*FACTOR_COLUMNS.values(), L2REG) if c not in row.index or pd.isna(row[c])]
    if missing:
        raise ValueError(f"no {', '.join(missing)}")
    activation = str(row[FACTOR_COLUMNS["activation"]]).lower()
    try:
        activation_module(activation)
    except ZooSpecError:
        raise ValueError(f"activation {activation!r} has no module here (relu, tanh, sigmoid, gelu)") from None
    values = {"lr": float(row[FACTOR_COLUMNS["lr"]]), "dropout": float(row[FACTOR_COLUMNS["dropout"]]),
              "weight_decay": 2 * float(row[L2REG])}
    bad = [k for k, v in values.items() if not math.isfinite(v)]
    if bad:
        raise ValueError(f"non-finite {', '.join(bad)}")
    return ModelConfig(model_id, seed=int(row[FACTOR_COLUMNS["seed"]]), activation=activation,
                       optimizer=str(row[FACTOR_COLUMNS["optimizer"]]).lower(), init=str(row[FACTOR_COLUMNS["init"]]),
                       **values)


def finite_models(weights: MappedRows, models: PublishedModels, ids: list[int], progress: bool) -> set[int]:
    """The models whose every checkpoint is finite: one streamed pass over their rows."""
    finite = set()
    with tqdm(total=len(ids), desc="checking weights", unit="model", disable=not progress, dynamic_ncols=True) as bar:
        for start in range(0, len(ids), MODEL_BLOCK):
            block = ids[start : start + MODEL_BLOCK]
            rows = np.sort(np.concatenate([models.rows[m] for m in block]))
            good_rows = set(rows[np.isfinite(weights.read(rows)).all(axis=1)].tolist())
            weights.release()
            finite.update(m for m in block if all(int(r) in good_rows for r in models.rows[m]))
            bar.update(len(block))
    return finite


def split_of_models(folder: Path, metrics: pd.DataFrame, models: PublishedModels, ids: list[int],
                    spec: ZooSpec, where: str) -> tuple[dict[int, str], str]:
    """Each model's split and where it came from: the ``split`` column of a zoo this toolkit exported;
    else the split file with the split NFN and ScaleGMN draw from it; else the spec's seeded split."""
    if "split" in metrics.columns:
        column = metrics.split.astype(str).to_numpy()
        return {m: str(column[models.first[m]]) for m in ids}, "the split column of metrics.csv.gz"
    files = split_files(folder)
    if len(files) > 1:
        raise DataFormatError(f"{where}: several split files ({', '.join(p.name for p in files)}); keep one")
    if files:
        try:
            order = pd.read_csv(regular_file(files[0], MAX_TABLE_BYTES), header=None).to_numpy().reshape(-1)
        except ValueError:  # empty or not CSV
            order = np.array([])
        if len(order) != len(metrics) or not np.array_equal(np.sort(order), np.arange(len(metrics))):
            raise DataFormatError(f"{files[0]}: not a permutation of the {len(metrics)} rows")
        final = metrics.step.to_numpy() == models.steps[-1]
        by_row = literature_splits(order, final)
        return ({m: by_row[int(models.rows[m][-1])] for m in ids},
                f"{files[0].name} with NFN's and ScaleGMN's split (second half test, first half 80/20 train/val)")
    splits = model_splits(spec)
    return {m: splits[m] for m in ids}, f"the spec's seeded split (split_seed {spec.split_seed})"


def models_table(metrics: pd.DataFrame, models: PublishedModels, configs: dict[int, ModelConfig],
                 splits: dict[int, str]) -> pd.DataFrame:
    """One row per model: our factors, its split, and the published config.* columns (and modeldir) as given."""
    published = [c for c in metrics.columns if c.startswith(CONFIG) or c == "modeldir"]
    rows = metrics.iloc[[models.first[m] for m in configs]][published].reset_index(drop=True)
    ours = pd.DataFrame([{**c.to_dict(), "split": splits[m]} for m, c in configs.items()])
    return pd.concat([ours, rows], axis=1)


def ingest_smallcnnzoo(spec: ZooSpec, source: Path | str, root: Path | str,
                       echo: Callable[[str], None] | None = None, progress: bool = True) -> IngestReport:
    """Read a Small CNN Zoo folder into ``root/<zoo>`` as its complete original population; the
    spec's model subset (``--models``) picks the models."""
    echo = echo or (lambda line: click.echo(line, err=True))
    folder = Path(source)
    if not folder.is_dir():
        raise DataUnavailableError(f"--from-original {folder}: no such folder")
    with writer_lock(Path(root) / check_zoo_name(spec.name)):
        report = _ingest(spec, folder, Path(root), progress)
    for line in report.skipped:
        echo(f"skipped {line}")
    echo(f"ingested {len(report.trials)} models ({report.spec.epochs + 1} checkpoints each) from {folder}; "
         f"skipped {len(report.skipped)}")
    return report


def _ingest(spec: ZooSpec, folder: Path, root: Path, progress: bool) -> IngestReport:
    layout = layout_for(spec)
    try:
        table = pd.read_csv(regular_file(folder / LAYOUT, MAX_TABLE_BYTES))
    except ValueError as exc:  # pandas' parser errors
        raise DataFormatError(f"{folder / LAYOUT}: not a CSV table ({exc})") from None
    variables = read_layout(table, layout, str(folder))
    perm = tf_permutation(variables, layout.num_params)
    weights = MappedRows(regular_file(folder / WEIGHTS, MAX_WEIGHTS_BYTES))
    if weights.shape[1] != layout.num_params:
        raise DataFormatError(f"{folder / WEIGHTS}: rows of {weights.shape[1]}, expected {layout.num_params} "
                              f"({spec.architecture})")
    metrics = read_metrics(folder)
    if len(metrics) != len(weights):
        raise DataFormatError(f"{folder}: metrics.csv.gz has {len(metrics)} rows, weights.npy {len(weights)}")
    ids = model_ids(metrics, str(folder))
    if ids.min() < 0 or ids.max() >= spec.size:
        raise DataFormatError(f"{folder}: holds model ids {ids.min()}..{ids.max()}; zoo {spec.name} has "
                              f"{spec.size} models (is --zoo right?)")
    models = group_rows(ids, metrics.step.to_numpy(np.int64))
    wanted = sorted(spec.model_subset if spec.model_subset is not None else set(models.rows) | set(models.incomplete))
    skipped = [f"model {m}: not in {folder.name}" for m in wanted if m not in models.first]
    skipped += [f"model {m}: {models.incomplete[m]}" for m in wanted if m in models.incomplete]
    configs: dict[int, ModelConfig] = {}
    for m in (m for m in wanted if m in models.rows):
        try:
            configs[m] = factors(metrics.iloc[models.first[m]], m)
        except ValueError as exc:
            skipped.append(f"model {m}: {exc}")
    finite = finite_models(weights, models, sorted(configs), progress)
    skipped += [f"model {m}: non-finite weights" for m in sorted(configs) if m not in finite]
    configs = {m: c for m, c in configs.items() if m in finite}
    if not configs:
        raise DataFormatError(f"{folder}: none of the {len(wanted)} models asked for can be ingested; "
                              f"first: {skipped[0] if skipped else 'none'}")
    ingested = spec.with_overrides(model_subset=sorted(configs), epochs=len(models.steps) - 1)
    splits, split_source = split_of_models(folder, metrics, models, sorted(configs), spec, str(folder))
    writer = StoreWriter.open(root, ingested, layout, resume=True)
    writer.write_models_table(models_table(metrics, models, configs, splits))
    population = writer.population(METHOD.name, [0.0], ingested.epochs, list(METHOD.arrays), GENERATOR)
    todo = [m for m in configs if not population.is_done(UnitKey(m))]
    values = metric_columns(metrics)
    with tqdm(total=len(configs), initial=len(configs) - len(todo), desc="ingesting", unit="model",
              disable=not progress, dynamic_ncols=True) as bar:
        for start in range(0, len(todo), MODEL_BLOCK):
            for result in read_models(weights, perm, values, models, todo[start : start + MODEL_BLOCK], layout):
                population.stage(result)
                bar.update(1)
            weights.release()
    report = IngestReport(ingested, {m: str(metrics.modeldir.iloc[models.first[m]]) if "modeldir" in metrics
                                     else f"model {m}" for m in configs}, skipped)
    record = {"source": str(folder), "format": "small-cnn-zoo", "steps": models.steps, "split": split_source,
              "models": {str(k): v for k, v in report.trials.items()}, "skipped": skipped}
    atomic_write_text(writer.zoo_dir / INGEST_RECORD, json.dumps(record, indent=1))
    return report


def metric_columns(metrics: pd.DataFrame) -> dict[str, np.ndarray]:
    """Our states table's metric names -> the published values per row (NaN where a column is absent)."""
    nan = np.full(len(metrics), np.nan)
    return {ours: metrics[field].to_numpy(np.float64) if field in metrics.columns else nan
            for ours, field in METRIC_NAMES.items()}


def read_models(weights: MappedRows, perm: np.ndarray, values: dict[str, np.ndarray], models: PublishedModels,
                block: list[int], layout: ParameterLayout) -> list[JobResult]:
    """Each model of ``block`` as a result in our layout: its rows read from the memory map in file
    order (one pass), reordered by ``perm``, with one metrics row per checkpoint."""
    rows = np.sort(np.concatenate([models.rows[m] for m in block]))
    read = weights.read(rows)[:, perm]  # [rows, P] in our flat layout
    position = {int(r): i for i, r in enumerate(rows)}
    results = []
    for m in block:
        own = models.rows[m]
        states = read[[position[int(r)] for r in own]].astype(np.float32)
        rows_metrics = [{**metric_row(epoch, {k: float(v[r]) for k, v in values.items()}, states[epoch], layout),
                         "step": models.steps[epoch]} for epoch, r in enumerate(own)]
        results.append(JobResult(key=UnitKey(m), weights=states, metrics=rows_metrics))
    return results
