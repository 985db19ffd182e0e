"""Convert the published VD twins (Ray Tune folders of the original ``CNN_ARD`` model) to a ``vd`` population.

Layout read (docs/research/original-zoos.md, section 4.1): one trial folder per twin with
``params.json`` (``model::type`` ``CNN_ARD``, ``training::init_checkpoint_path`` = the original's
trial folder), ``result.json`` (train/test loss and accuracy per iteration) and
``checkpoint_<N>/checkpoints``: a bare state dict with ``module_list.<i>.weight|bias|log_sigma2``
(and ``log_sigma2_bias``). Checkpoints are read with ``torch.load(weights_only=True)`` only.

``log_alpha`` and the masks are those of the built ``cnn_ard`` VD variant, computed by the same
functions (:mod:`zoo_dataset.sparsify.variational`): ``log_sigma2 - 2 log(|w| + 1e-15)`` in float32,
clamped to [-8, 8] in ``Conv2dARD`` (weights and biases) and to [-10, 10] in ``LinearARD`` (weights;
its biases are never pruned and hold ``BIAS_LOG_ALPHA``). The mask is ``log_alpha <`` the
project's threshold where the variant prunes, so the pruned model the store returns is the one the
original code evaluated (conv biases included). Epoch 0 is the original's final state; each twin is matched to its
original through the trial folder name in ``training::init_checkpoint_path``. A twin that cannot
be mapped is reported in one line and left out, never guessed; models left without a twin keep the
population partial, for ``zoo-build --stages vd --resume`` to complete.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

import click
import numpy as np
import torch

from zoo_dataset.counter_rng import GENERATOR
from zoo_dataset.errors import DataFormatError, StoreError
from zoo_dataset.inputs import parse_json, read_regular
from zoo_dataset.layout import ParameterLayout
from zoo_dataset.methods import get_method
from zoo_dataset.names import normal_name
from zoo_dataset.safe_extract import safe_extract
from zoo_dataset.sparsify.variational import (
    CNN_ARD,
    LOG_SIGMA2_INIT,
    flat_log_alpha,
    keep_mask,
    variational_entries,
)
from zoo_dataset.specs import VD_THRESHOLD
from zoo_dataset.store import StoreWriter, ZooStore
from zoo_dataset.store.files import atomic_write_text
from zoo_dataset.store.layout_on_disk import INGEST_RECORD
from zoo_dataset.training import JobResult, UnitKey
from zoo_dataset.training.reference import sparsity_columns

from .ingest import MAX_JSON_BYTES, Trial, find_trials, flat_state, metric_row, read_checkpoint, read_results

METHOD = get_method("vd")  # the published twins are this method's population
ARD_KEY = re.compile(r"module_list\.(\d+)\.(weight|bias|log_sigma2|log_sigma2_bias)")
ARD_SUFFIX = "_ARD"
INIT_PATH_KEY = "training::init_checkpoint_path"
CHECKPOINT_NAME = re.compile(r"checkpoint_\d+")


@dataclass
class TwinReport:
    twins: dict[int, str] = field(default_factory=dict)  # model id -> twin trial folder
    epochs: int = 0
    skipped: list[str] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)  # models of the store left without a twin

    def lines(self, zoo: str) -> list[str]:
        """What to tell the user: each twin left out, the summary, and how to complete a partial population."""
        out = [f"skipped {line}" for line in self.skipped]
        out.append(f"converted {len(self.twins)} VD twins ({self.epochs} epochs); skipped {len(self.skipped)}")
        if self.missing:
            out.append(f"{len(self.missing)} models have no published twin (ids {self.missing[:5]}"
                       f"{'...' if len(self.missing) > 5 else ''}): the vd population stays partial; "
                       f"`zoo-build --zoo {zoo} --stages vd --resume` trains their twins")
        return out


def is_twin(trial: Trial) -> bool:
    return str(trial.params.get("model::type", "")).endswith(ARD_SUFFIX)


def twin_trials(folder: Path) -> list[Trial]:
    """The VD twin trial folders under ``folder`` (``model::type`` ending in ``_ARD``); at least one."""
    trials = [t for t in find_trials(folder) if is_twin(t)]
    if not trials:
        raise DataFormatError(f"{folder}: no VD twin trial folders (params.json with model::type *_ARD) found")
    return trials


def original_label(trial: Trial) -> str | None:
    """The original's trial folder name from ``training::init_checkpoint_path``: ``str()`` of a path such as
    ``zoos/MNIST/tune_zoo_mnist_uniform/NN_tune_trainable_...`` (the twin's own folder name holds the same
    path cut at 130 characters, so params.json is the only link)."""
    raw = trial.params.get(INIT_PATH_KEY)
    if not isinstance(raw, str) or not raw.strip():
        return None
    text = raw.strip()
    if m := re.fullmatch(r"\w*Path\('(.*)'\)", text):  # a repr() of a pathlib path
        text = m.group(1)
    path = PureWindowsPath(text) if "\\" in text else PurePosixPath(text)
    if CHECKPOINT_NAME.fullmatch(path.name):  # a checkpoint folder inside the trial folder
        path = path.parent
    return normal_name(path.name) or None  # compared as the store's labels are (NFC)


def twin_state(state: object, layout: ParameterLayout) -> tuple[np.ndarray, np.ndarray]:
    """(weights, log_alpha) of one ARD state dict as flat vectors in the store's layout, log_alpha
    computed as the built ``cnn_ard`` variant computes it (``LinearARD.log_sigma2_bias`` is unused)."""
    if not isinstance(state, Mapping):
        raise ValueError(f"a checkpoint must be a state dict, found {type(state).__name__}")
    weights = flat_state(state, layout)  # same module order and shape checks as the originals
    modules: dict[int, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        if m := ARD_KEY.fullmatch(str(key)):
            modules.setdefault(int(m.group(1)), {})[m.group(2)] = tensor
    by_layer = dict(zip(layout.layers, (modules[i] for i in sorted(modules)), strict=True))
    params, sigma = layout.unflatten(torch.from_numpy(weights)), {}
    variational = variational_entries(layout, CNN_ARD)
    for entry in (e for e in layout.entries if variational[e.offset]):
        name = "log_sigma2" if entry.kind == "weight" else "log_sigma2_bias"
        tensor = by_layer[entry.layer].get(name)
        if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != entry.shape:
            shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else None
            raise ValueError(f"{entry.layer}.{name} has shape {shape}, expected {entry.shape}")
        sigma[entry.name] = tensor
    return weights, flat_log_alpha(layout, params, sigma, CNN_ARD)


def start_state(final: np.ndarray, layout: ParameterLayout) -> np.ndarray:
    """log_alpha of the converted original before any VD step (``log_sigma2`` at its init, -10)."""
    params = layout.unflatten(torch.from_numpy(final))
    sigma = {name: torch.full_like(value, LOG_SIGMA2_INIT) for name, value in params.items()}
    return flat_log_alpha(layout, params, sigma, CNN_ARD)


def checkpoint_epochs(trial: Trial, epochs: int) -> dict[int, Path]:
    """Epoch -> checkpoint: numbers 0..E (0 = the converted original) or 1..E; anything else is refused."""
    numbers = sorted(trial.checkpoints)
    if numbers not in (list(range(epochs + 1)), list(range(1, epochs + 1))):
        shown = f"{numbers[:3]}...{numbers[-2:]}" if len(numbers) > 6 else str(numbers)
        raise ValueError(f"checkpoint numbers {shown} do not map to epochs 0..{epochs}")
    return dict(trial.checkpoints)


def detect_epochs(trials: list[Trial], cap: int) -> int:
    """The twins' VD epochs: the most common last checkpoint number among trials (at most ``cap``)."""
    lasts = Counter(max(t.checkpoints) for t in trials if t.checkpoints and max(t.checkpoints) <= cap)
    if not lasts:
        raise DataFormatError(f"no VD twin trial has checkpoints numbered within 0..{cap}")
    return lasts.most_common(1)[0][0]


def load_ard(path: Path, layout: ParameterLayout) -> tuple[np.ndarray, np.ndarray]:
    """One published CNN_ARD checkpoint as (flat weights, flat log_alpha)."""
    return read_checkpoint(path, lambda state: twin_state(state, layout))


def twin_result(model_id: int, trial: Trial, epochs: int, original_final: np.ndarray,
                layout: ParameterLayout, threshold: float) -> JobResult:
    """Weights, masks, log_alpha [E+1, P] and metrics of one twin; ValueError when it cannot be mapped."""
    checkpoints = checkpoint_epochs(trial, epochs)
    weights, alphas = [original_final], [start_state(original_final, layout)]
    if 0 in checkpoints:
        w0, a0 = load_ard(checkpoints[0], layout)
        if not np.array_equal(w0, original_final):
            raise ValueError("checkpoint 0 differs from the final state of the original it names")
        alphas[0] = a0
    for epoch in range(1, epochs + 1):
        w, a = load_ard(checkpoints[epoch], layout)
        weights.append(w)
        alphas.append(a)
    weights_arr, alpha_arr = np.stack(weights).astype(np.float32), np.stack(alphas).astype(np.float32)
    masks = keep_mask(alpha_arr, variational_entries(layout, CNN_ARD), threshold)
    rows = read_results(trial)
    offset = min(rows, default=0)  # iterations counted from 0 (the test-only step) or from 1
    if rows and max(rows) - offset > epochs:
        raise ValueError(f"result.json has {max(rows) - offset + 1} iterations for {epochs + 1} states")
    metrics = [metric_row(e, rows.get(e + offset, {}), np.where(masks[e], weights_arr[e], 0.0), layout)
               | sparsity_columns(layout, weights_arr[e], masks[e]) for e in range(epochs + 1)]
    return JobResult(key=UnitKey(model_id), weights=weights_arr, masks=masks, log_alpha=alpha_arr, metrics=metrics)


def originals_by_label(store: ZooStore) -> dict[str, int]:
    """Trial folder name -> model id of an ingested original population (from its ingest.json)."""
    path = store.zoo_dir / INGEST_RECORD
    if not path.exists():
        raise StoreError(f"{store.zoo_dir} has no ingest.json: its originals were not ingested from the published "
                         "zoo, so the published twins cannot be matched to them")
    record = parse_json(read_regular(path, MAX_JSON_BYTES, INGEST_RECORD), str(path))
    trials = record.get("trials") if isinstance(record, dict) else None
    if not isinstance(trials, dict):
        raise StoreError(f"{path} is corrupt (no trials object); ingest the originals again")
    return {normal_name(str(label)): int(model_id) for model_id, label in trials.items()}


def convert_vd_folder(folder: Path, zoo_dir: Path, threshold: float = VD_THRESHOLD) -> TwinReport:
    """Write the twins found under ``folder`` into the store at ``zoo_dir`` as its ``vd`` population."""
    store = ZooStore(zoo_dir)
    if "original" not in store.populations:
        raise StoreError(f"{zoo_dir} holds no original population: the VD twins start from it")
    spec, layout = store.manifest.zoo_spec, store.layout
    trials = twin_trials(folder)
    report = TwinReport(epochs=detect_epochs(trials, max(spec.vd.epochs, 1) + 1))
    labels, results = originals_by_label(store), {}
    for trial in trials:
        label = original_label(trial)
        model_id = labels.get(label) if label else None
        if model_id is None:
            why = (f"its original {label} is not in the original population" if label
                   else f"params.json has no {INIT_PATH_KEY}")
            report.skipped.append(f"{trial.label}: {why}")
        elif model_id in results:
            report.skipped.append(f"{trial.label}: a second twin of {label}")
        else:
            try:
                final = store.weights("original", model_id, epoch=-1)
                results[model_id] = twin_result(model_id, trial, report.epochs, final, layout, threshold)
                report.twins[model_id] = trial.label
            except (ValueError, OSError) as exc:
                report.skipped.append(f"{trial.label}: {exc}")
    store.close()
    report.missing = sorted(set(store.manifest.model_ids) - set(results))
    if not results:
        raise DataFormatError(f"none of {len(trials)} published VD twins could be converted; first problem: "
                              f"{report.skipped[0]}")
    writer = StoreWriter.open(zoo_dir.parent, spec, layout, resume=True, create=False)
    population = writer.population(METHOD.name, [0.0], report.epochs, list(METHOD.arrays), GENERATOR)
    for result in results.values():
        if not population.is_done(result.key):
            population.stage(result)
    provenance = {"source": str(folder), "twins": {str(k): v for k, v in report.twins.items()},
                  "skipped": report.skipped, "threshold": threshold}
    atomic_write_text(zoo_dir / "ingest-vd.json", json.dumps(provenance, indent=1))
    return report


def ingest_vd(source: Path | str, zoo_dir: Path | str, echo: Callable[[str], None] | None = None) -> TwinReport:
    """Read published VD twins (folder or zip) into the store at ``zoo_dir``; reports what was left out."""
    echo = echo or (lambda line: click.echo(line, err=True))
    source = Path(source)
    with tempfile.TemporaryDirectory(prefix="zoo-ingest-vd-") as tmp:
        folder = safe_extract(source, Path(tmp)) if source.is_file() else source
        report = convert_vd_folder(folder, Path(zoo_dir))
    for line in report.lines(Path(zoo_dir).name):
        echo(line)
    return report
