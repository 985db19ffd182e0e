"""Ingest a published original zoo (Ray Tune experiment folder or zip) as the "original" population.

Layout read (docs/research/original-zoos.md, section 3): one trial folder per model holding
``params.json`` (the generating factors), ``result.json`` (one JSON line per epoch) and
``checkpoint_<NNNNNN>/checkpoints`` (a bare state dict with ``module_list.<i>.weight|bias`` keys).
Checkpoints are read with ``torch.load(weights_only=True)`` only. Trials that cannot be matched to
a model of the zoo, whose checkpoints are missing, faulty or beyond the zoo's epochs, or whose
files are symbolic links or not regular files, are reported and skipped; links are never followed.

A trial's ``checkpoint_000000`` is compared with the init this toolkit replays from its seed, and
the answer is recorded per model (``init_matches_seed`` in the models table; NA where no
checkpoint_000000 was published and epoch 0 is the replay) and reported, never used to refuse the
trial: the replay equals the original init only if our model construction draws from the seeded
RNG exactly as the original trainable did, which no live archive has confirmed. Two copies of a
file in one archive (the confusion such a check would catch) are refused by the archive's
extraction (:mod:`zoo_dataset.safe_extract`).
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

import click
import numpy as np
import torch

from zoo_dataset.architectures import seeded_model
from zoo_dataset.counter_rng import GENERATOR
from zoo_dataset.data import get_source
from zoo_dataset.errors import DataFormatError, DataUnavailableError
from zoo_dataset.inputs import parse_json, read_regular
from zoo_dataset.layout import ParameterLayout
from zoo_dataset.methods import get_method
from zoo_dataset.model_layout import layout_for
from zoo_dataset.names import normal_name
from zoo_dataset.safe_extract import safe_extract
from zoo_dataset.specs import ModelConfig, ZooSpec, whole_number
from zoo_dataset.store import StoreWriter
from zoo_dataset.store.files import atomic_write_text
from zoo_dataset.store.layout_on_disk import INGEST_RECORD, MODELS_TABLE
from zoo_dataset.store.lock import writer_lock
from zoo_dataset.store.paths import check_zoo_name
from zoo_dataset.store.tables import INIT_MATCHES_SEED
from zoo_dataset.training import JobResult, UnitKey

METHOD = get_method("original")  # an ingested zoo is this method's population
CHECKPOINT_DIR = re.compile(r"checkpoint_(\d+)")
PARAM_KEY = re.compile(r"module_list\.(\d+)\.(weight|bias)")
MISSING_METRIC = -999  # the originals' placeholder for train metrics of the untrained state
METRICS = ("train_loss", "train_acc", "test_loss", "test_acc")
MAX_JSON_BYTES = 64 << 20  # params.json / result.json of a trial: kilobytes in the published zoos
T = TypeVar("T")
MAX_CHECKPOINT_BYTES = 1 << 30


@dataclass
class Trial:
    folder: Path
    params: dict
    checkpoints: dict[int, Path]
    problem: str = ""  # why the trial cannot be read at all (a linked folder), reported as skipped

    @property
    def label(self) -> str:
        return normal_name(self.folder.name)

    def factors(self) -> dict:
        """params.json mapped to ModelConfig fields; a value of the wrong kind raises ValueError (never coerced)."""
        p = self.params
        return {"seed": whole_number(p["seed"], "seed"), "activation": str(p["model::nlin"]).lower(),
                "optimizer": str(p["optim::optimizer"]).lower(), "lr": real_number(p["optim::lr"], "optim::lr"),
                "weight_decay": real_number(p["optim::wd"], "optim::wd"),
                "dropout": real_number(p["model::dropout"], "model::dropout"), "init": str(p["model::init_type"])}


def real_number(value: object, name: str) -> float:
    """A JSON number as float; booleans, strings, lists and objects are refused, not coerced."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} is {value!r}, not a number")
    return float(value)


@dataclass
class IngestReport:
    spec: ZooSpec  # the named zoo restricted to the ingested models and the epochs found
    trials: dict[int, str] = field(default_factory=dict)  # model id -> trial folder
    skipped: list[str] = field(default_factory=list)  # one line per trial left out
    init_matches_seed: dict[int, bool | None] = field(default_factory=dict)  # None: no checkpoint_000000

    def init_warning(self) -> str | None:
        """One line when some published epoch-0 states are not the init their seed replays here."""
        differ = [self.trials[m] for m, same in self.init_matches_seed.items() if same is False]
        if not differ:
            return None
        checked = sum(same is not None for same in self.init_matches_seed.values())
        return (f"warning: checkpoint_000000 of {len(differ)} of {checked} ingested trials is not the init their "
                f"seed replays in this toolkit (first: {differ[0]}); they are ingested as published, and "
                f"{MODELS_TABLE} records {INIT_MATCHES_SEED} = false for them")


def regular_file(path: Path, limit: int) -> Path:
    """``path`` if it is a regular file (not a link, device or folder) of at most ``limit`` bytes;
    else ValueError naming the problem. Checked before anything reads it."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise ValueError(f"{path.name} is missing") from None
    if stat.S_ISLNK(info.st_mode):
        raise ValueError(f"{path.name} is a symbolic link (not followed)")
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"{path.name} is not a regular file")
    if info.st_size > limit:
        raise ValueError(f"{path.name} is larger than {limit >> 20} MiB")
    return path


def read_json(path: Path, lines: bool = False, limit: int = MAX_JSON_BYTES) -> object:
    """A small regular file's JSON (``lines``: a list, one value per non-empty line), never read
    through a link (O_NOFOLLOW) nor past ``limit``; DataFormatError (a ValueError) for text that is
    not JSON, however it fails."""
    regular_file(path, limit)
    data = read_regular(path, limit, path.name, DataFormatError, follow=False)
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise DataFormatError(f"{path.name} is not UTF-8 text") from None
    if not lines:
        return parse_json(text, path.name, DataFormatError)
    return [parse_json(line, f"{path.name} line {i + 1}", DataFormatError)
            for i, line in enumerate(text.splitlines()) if line.strip()]


def find_trials(root: Path) -> list[Trial]:
    """Every folder holding a params.json, in name order (Ray's trial index order); linked folders
    are not entered (``rglob`` and the checkpoint scan skip them) but listed, to be reported as skipped."""
    trials = [Trial(link, {}, {}, "a linked folder (not followed)")
              for link in Path(root).rglob("*") if link.is_symlink() and link.is_dir()]
    for params in sorted(Path(root).rglob("params.json")):
        folder = params.parent
        checkpoints = {int(m.group(1)): d / "checkpoints" for d in folder.iterdir()
                       if d.is_dir() and not d.is_symlink() and (m := CHECKPOINT_DIR.fullmatch(d.name))}
        try:
            trials.append(Trial(folder, read_json(params), checkpoints))
        except (ValueError, OSError):
            trials.append(Trial(folder, {}, checkpoints))
    return sorted(trials, key=lambda t: t.label)


def same_factors(config: ModelConfig, factors: dict, with_seed: bool) -> bool:
    return ((not with_seed or config.seed == factors["seed"])
            and (config.activation, config.optimizer, config.init) == (
                factors["activation"], factors["optimizer"], factors["init"])
            and all(math.isclose(getattr(config, k), factors[k], rel_tol=1e-6, abs_tol=1e-12)
                    for k in ("lr", "weight_decay", "dropout")))


def match_models(spec: ZooSpec, trials: list[Trial], skip: Callable[[str], None]) -> dict[int, Trial]:
    """Model id of each trial: by factors and seed; in random-seed zoos by factors, in trial order."""
    free = list(spec.models())
    matched: dict[int, Trial] = {}
    for trial in trials:
        if trial.problem:
            skip(f"{trial.label}: {trial.problem}")
            continue
        try:
            factors = trial.factors()
        except (KeyError, TypeError, ValueError) as exc:
            skip(f"{trial.label}: params.json lacks or mangles a generating factor ({exc})")
            continue
        hit = next((c for c in free if same_factors(c, factors, with_seed=spec.variant != "random")), None)
        if hit is None:
            skip(f"{trial.label}: factors {factors} match no model of zoo {spec.name} (or a duplicate)")
            continue
        free.remove(hit)
        matched[hit.model_id] = trial
    return matched


def flat_state(state: object, layout: ParameterLayout) -> np.ndarray:
    """A ``module_list.<i>`` state dict in our flat layout: the i-th parametrised module is the i-th layer."""
    if not isinstance(state, Mapping):
        raise ValueError(f"a checkpoint must be a state dict, found {type(state).__name__}")
    modules: dict[int, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        if m := PARAM_KEY.fullmatch(str(key)):
            if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
                kind = tensor.dtype if isinstance(tensor, torch.Tensor) else type(tensor).__name__
                raise ValueError(f"{key} is a {kind}, not a real-valued tensor")
            if not torch.isfinite(tensor).all():
                raise ValueError(f"{key} holds NaN or infinite values")
            modules.setdefault(int(m.group(1)), {})[m.group(2)] = tensor
    if len(modules) != len(layout.layers):
        raise ValueError(f"{len(modules)} parametrised modules, expected {len(layout.layers)}")
    by_layer = dict(zip(layout.layers, (modules[i] for i in sorted(modules)), strict=True))
    parts = []
    for entry in layout.entries:
        tensor = by_layer[entry.layer].get(entry.kind)
        if tensor is None or tuple(tensor.shape) != entry.shape:
            shape = None if tensor is None else tuple(tensor.shape)
            raise ValueError(f"{entry.name} has shape {shape}, expected {entry.shape}")
        parts.append(tensor.detach().float().reshape(-1).numpy())
    return np.concatenate(parts)


def read_results(trial: Trial) -> dict[int, dict]:
    """result.json rows by epoch (``training_iteration``, else line order)."""
    path = trial.folder / "result.json"
    if not path.exists() and not path.is_symlink():
        return {}
    rows = read_json(path, lines=True)
    by_epoch = {}
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValueError(f"result.json line {i + 1} is a {type(row).__name__}, not an object")
        by_epoch[whole_number(row.get("training_iteration", i), f"result.json line {i + 1}: training_iteration")] = row
    return by_epoch


def metric_row(epoch: int, result: dict, weights: np.ndarray, layout: ParameterLayout) -> dict[str, float]:
    """result.json's train/test loss and accuracy (NaN where absent); sparsity from the weights."""
    row = {"epoch": epoch}
    for key in METRICS:
        value = result.get(key)
        missing = value is None or value == MISSING_METRIC
        row[key] = float("nan") if missing else real_number(value, f"result.json {key} of epoch {epoch}")
    row["ggap"] = row["train_acc"] - row["test_acc"]
    row["sparsity"] = float(layout.global_sparsity(weights))
    row.update({f"sparsity_{k}": float(v) for k, v in layout.layer_sparsity(weights).items()})
    row["agreement"] = float("nan")
    return row


def initial_state(spec: ZooSpec, config: ModelConfig, layout: ParameterLayout) -> np.ndarray:
    """Epoch 0 replayed from the seed, for trials published without checkpoint_000000."""
    channels = get_source(spec.dataset).channels
    model = seeded_model(spec.architecture, channels, config.activation, config.dropout, config.init,
                         config.seed)
    return layout.flatten_module(model).numpy()


def init_matches_seed(start: np.ndarray, spec: ZooSpec, config: ModelConfig, layout: ParameterLayout) -> bool:
    """Whether checkpoint_000000 (the trainable saves its init in ``setup``) is the init this toolkit
    replays from the seed params.json names. A tolerance, not bit equality: the replay runs on
    another torch build. Recorded, not enforced (module docstring)."""
    return bool(np.allclose(start, initial_state(spec, config, layout), rtol=1e-5, atol=1e-6))


def read_checkpoint(path: Path, convert: Callable[[Mapping], T]) -> T:
    """One checkpoint (a regular file, never unpickled beyond tensors) passed through ``convert``;
    ValueError names the checkpoint folder and the problem."""
    try:
        regular_file(path, MAX_CHECKPOINT_BYTES)
    except ValueError as exc:
        raise ValueError(f"{path.parent.name}: {exc}") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling refused, truncated, not a torch file...
        raise ValueError(f"{path.parent.name}: unreadable checkpoint ({type(exc).__name__})") from exc
    try:
        return convert(state)
    except (ValueError, KeyError) as exc:
        raise ValueError(f"{path.parent.name}: {exc}") from exc


def load_checkpoint(path: Path, layout: ParameterLayout) -> np.ndarray:
    """One original checkpoint as a flat vector."""
    return read_checkpoint(path, lambda state: flat_state(state, layout))


def trial_result(spec: ZooSpec, config: ModelConfig, trial: Trial, epochs: int,
                 layout: ParameterLayout) -> tuple[JobResult, bool | None]:
    """Weights [E+1, P] and metrics of one trial, and whether its checkpoint_000000 is the init its
    seed replays (None: not published, replayed); raises ValueError when a checkpoint is missing or faulty."""
    missing = [e for e in range(1, epochs + 1) if e not in trial.checkpoints]
    if missing:
        raise ValueError(f"checkpoints of epochs {missing[:5]} are missing")
    states = [load_checkpoint(trial.checkpoints[e], layout) if e in trial.checkpoints
              else initial_state(spec, config, layout) for e in range(epochs + 1)]
    same_init = init_matches_seed(states[0], spec, config, layout) if 0 in trial.checkpoints else None
    weights = np.stack(states).astype(np.float32)
    results = read_results(trial)
    metrics = [metric_row(e, results.get(e, {}), weights[e], layout) for e in range(epochs + 1)]
    return JobResult(key=UnitKey(config.model_id), weights=weights, metrics=metrics), same_init


def ingest_original(
    spec: ZooSpec, source: Path | str, root: Path | str, echo: Callable[[str], None] | None = None
) -> IngestReport:
    """Read a published zoo (folder or zip) into ``root/<zoo>`` as its complete original population."""
    echo = echo or (lambda line: click.echo(line, err=True))
    source = Path(source)
    if not source.exists():
        raise DataUnavailableError(f"--from-original {source}: no such folder or zip")
    with (writer_lock(Path(root) / check_zoo_name(spec.name)),
          tempfile.TemporaryDirectory(prefix="zoo-ingest-") as tmp):
        folder = safe_extract(source, Path(tmp)) if source.is_file() else source
        report = _ingest_folder(spec, folder, Path(root), label=str(source))
    for line in report.skipped:
        echo(f"skipped {line}")
    echo(f"ingested {len(report.trials)} models ({report.spec.epochs} epochs) from {source}; "
         f"skipped {len(report.skipped)}")
    if warning := report.init_warning():
        echo(warning)
    return report


def _ingest_folder(spec: ZooSpec, folder: Path, root: Path, label: str) -> IngestReport:
    """Ingest the trials under ``folder``; messages and provenance name ``label`` (the folder or zip given)."""
    trials = find_trials(folder)
    if not trials:
        raise DataFormatError(f"{label}: no Ray Tune trial folders (folders with params.json) found")
    skipped: list[str] = []
    matched = match_models(spec, trials, skipped.append)
    if not matched:
        raise DataFormatError(f"{label}: none of {len(trials)} trials matches a model of zoo {spec.name} "
                              f"(is --zoo right?); first: {skipped[0]}")
    for model_id, trial in list(matched.items()):  # a stray checkpoint costs its trial, not the ingest
        beyond = [e for e in trial.checkpoints if e > spec.epochs]
        if beyond:
            skipped.append(f"{trial.label}: checkpoint_{min(beyond):06d} is beyond the zoo's {spec.epochs} epochs")
            del matched[model_id]
    if not matched:
        raise DataFormatError(f"{label}: none of {len(trials)} trials could be ingested; first problem: {skipped[0]}")
    epochs = max((max(t.checkpoints, default=0) for t in matched.values()), default=0)
    if epochs == 0:
        raise DataFormatError(f"{label}: the {len(matched)} matching trials hold no checkpoint_<N> folders")
    full = spec.with_overrides(model_subset=sorted(matched))
    layout = layout_for(full)
    # a random-seed zoo's published seeds are its own draws, not the spec's: keep the published ones
    configs = {m.model_id: replace(m, seed=int(matched[m.model_id].factors()["seed"])) for m in full.models()}
    results: dict[int, JobResult] = {}
    same_init: dict[int, bool | None] = {}
    for model_id, trial in sorted(matched.items()):
        try:
            results[model_id], same_init[model_id] = trial_result(full, configs[model_id], trial, epochs, layout)
        except (ValueError, OSError) as exc:
            skipped.append(f"{trial.label}: {exc}")
    if not results:
        raise DataFormatError(f"{label}: none of {len(trials)} trials could be ingested; first problem: "
                              f"{skipped[0] if skipped else 'no checkpoints'}")
    ingested = spec.with_overrides(model_subset=sorted(results), epochs=epochs)
    writer = StoreWriter.open(root, ingested, layout, resume=True)
    writer.record_seeds({i: configs[i].seed for i in results})
    writer.record_model_flags(INIT_MATCHES_SEED, same_init)
    population = writer.population(METHOD.name, [0.0], epochs, list(METHOD.arrays), GENERATOR)
    for result in results.values():
        if not population.is_done(result.key):
            population.stage(result)
    report = IngestReport(ingested, {i: matched[i].label for i in results}, skipped, same_init)
    provenance = {"source": label, "trials": {str(k): v for k, v in report.trials.items()},
                  "seeds": {str(i): matched[i].factors()["seed"] for i in results}, "skipped": skipped,
                  INIT_MATCHES_SEED: {str(i): same for i, same in same_init.items()}}
    atomic_write_text(writer.zoo_dir / INGEST_RECORD, json.dumps(provenance, indent=1))
    return report
