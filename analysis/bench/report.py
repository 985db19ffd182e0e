"""The benchmark's outputs: one results JSON (versions, split id, seeds, every result row, timings),
the markdown table and a figure, written to a folder and recorded in the store.

In the store they live under ``bench/`` (``splits/<split id>.json``, ``results/<run>.json|.md|.png``)
and are entered in the manifest with the card's files, so ``ZooStore.verify()`` checks them; the
card, rewritten under the store's writer lock, lists them in its "Benchmarks" section.
"""

from __future__ import annotations

import hashlib
import io
import json
import platform
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import numpy as np

from zoo_dataset import __version__
from zoo_dataset.store import ZooStore
from zoo_dataset.store.files import atomic_path, open_for_writing
from zoo_dataset.store.layout_on_disk import BENCH_RESULTS, BENCH_SPLITS
from zoo_dataset.store.lock import writer_lock
from zoo_dataset.store.paths import check_not_linked, check_writable

from .splits import Split, save_split
from .tasks import BenchRun

FORMAT = "zoo-bench-results"
VERSION = 1
PACKAGES = ("torch", "numpy", "scipy", "scikit-learn", "nfn")  # nfn: None when not installed
TASK_TITLES = {"properties": "Task 1: properties from weights", "twins": "Task 2: twin prediction",
               "masks": "Task 3: zero-shot masks (no fine-tuning)"}


def versions() -> dict[str, str | None]:
    """The toolkit's, Python's and the numeric libraries' versions."""
    out: dict[str, str | None] = {"zoo-twins": __version__, "python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def run_name(split: Split, seed: int, settings: dict) -> str:
    """``bench-<split hash>-s<seed>-<settings hash>``: a rerun of the same split, seed, tasks and
    predictors replaces its own results, another run sits beside it."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
    return f"bench-{split.id.removeprefix('split-')}-s{seed}-{digest}"


def results_document(store: ZooStore, split: Split, run: BenchRun, quick: bool = False,
                     train_epochs: int | None = None) -> dict:
    """The results JSON of one run (rows as :func:`~analysis.bench.tasks.run_benchmark` made them);
    ``quick``: whether the baselines ran with CI-sized settings; ``train_epochs``: the learned
    baselines' epochs when not their default."""
    settings = {"tasks": run.tasks, "property_predictors": run.property_predictors,
                "mask_predictors": run.mask_predictors, "sparsities": run.sparsities, "quick": quick,
                "train_epochs": train_epochs}
    return {
        "format": FORMAT,
        "version": VERSION,
        "run": run_name(split, run.seed, settings),
        "zoo": store.manifest.zoo,
        "store_models_sha256": split.store_models_sha256,
        "split": split.id,
        "split_description": split.describe(),
        "seed": run.seed,
        **settings,
        "versions": versions(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": {task: round(s, 3) for task, s in run.seconds.items()},
        "notes": run.notes,
        "diverged_states": run.diverged,
        "rows": run.rows,
    }


def _r2(value: float | None) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{100 * value:.1f}"


def _tau(value: float | None) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{value:.3f}"


def _lookup(rows: list[dict]) -> dict[tuple, float | None]:
    return {(r["task"], r["population"], r["target"], r["predictor"], r["metric"], r["over"], r["sparsity"]): r["value"]
            for r in rows}


def _pair(values: dict, task: str, population: str, target: str, predictor: str, over: str) -> str:
    r2 = values.get((task, population, target, predictor, "r2", over, None))
    tau = values.get((task, population, target, predictor, "kendall_tau", over, None))
    return f"{_r2(r2)} / {_tau(tau)}"


def _ordered(rows: list[dict], key: str) -> list:
    return list(dict.fromkeys(r[key] for r in rows))


def _properties_table(rows: list[dict], values: dict) -> list[str]:
    targets, predictors = _ordered(rows, "target"), _ordered(rows, "predictor")
    header = [f"{t} ({over})" for t in targets for over in ("states", "models")]
    lines = ["| population | predictor | " + " | ".join(header) + " |", "|---|---|" + "---|" * len(header)]
    for population in _ordered(rows, "population"):
        for predictor in predictors:
            cells = [_pair(values, "properties", population, t, predictor, over)
                     for t in targets for over in ("states", "models")]
            lines.append(f"| {population} | {predictor} | " + " | ".join(cells) + " |")
    return lines


def _twins_table(rows: list[dict], values: dict) -> list[str]:
    targets = _ordered(rows, "target")
    lines = ["| predictor | " + " | ".join(targets) + " |", "|---|" + "---|" * len(targets)]
    for predictor in _ordered(rows, "predictor"):
        cells = [_pair(values, "twins", "original", t, predictor, "models") for t in targets]
        lines.append(f"| {predictor} | " + " | ".join(cells) + " |")
    return lines


def _masks_table(rows: list[dict]) -> list[str]:
    sparsities = sorted({r["sparsity"] for r in rows})
    found = {(r["predictor"], r["sparsity"], r["metric"]): r for r in rows}

    def cell(predictor: str, sparsity: float) -> str:
        parts = []
        for metric in ("accuracy", "iou"):
            row = found.get((predictor, sparsity, metric))
            value = None if row is None else row["value"]
            text = _r2(value)
            if row is not None and value is not None and row.get("std") is not None:
                text += f" ({100 * row['std']:.1f})"
            parts.append(text)
        return " / ".join(parts)

    header = [f"{100 * s:g} %" for s in sparsities]
    lines = ["| predictor | " + " | ".join(header) + " |", "|---|" + "---|" * len(header)]
    lines += [f"| {p} | " + " | ".join(cell(p, s) for s in sparsities) + " |" for p in _ordered(rows, "predictor")]
    return lines


def _timings(doc: dict) -> list[str]:
    tasks = [t for t in TASK_TITLES if t in doc["seconds"]]
    spent: dict[tuple[str, str], float] = {}
    seen = set()
    for r in doc["rows"]:
        # a fit's seconds repeat on each row it scores; masks: the fit once, then each sparsity's masks
        for unit, seconds in (((r["task"], r["population"], r["predictor"], r["sparsity"]), r["seconds"]),
                              ((r["task"], r["population"], r["predictor"], "fit"), r.get("fit_seconds", 0.0))):
            if unit not in seen:
                seen.add(unit)
                spent[r["predictor"], r["task"]] = spent.get((r["predictor"], r["task"]), 0.0) + seconds
    lines = ["| seconds | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks),
             "| whole task | " + " | ".join(f"{doc['seconds'][t]:.1f}" for t in tasks) + " |"]
    for predictor in _ordered(doc["rows"], "predictor"):
        cells = [f"{spent[predictor, t]:.1f}" if (predictor, t) in spent else "-" for t in tasks]
        lines.append(f"| {predictor} | " + " | ".join(cells) + " |")
    return lines


def markdown(doc: dict) -> str:
    """The run as markdown: a heading naming run, zoo, split and seed, then one table per task
    (rows: predictors), timings and notes. R² in %, Kendall's tau-b as it is."""
    versions_line = ", ".join(f"{k} {v}" for k, v in doc["versions"].items() if v is not None)
    epochs = f", {doc['train_epochs']} training epochs" if doc.get("train_epochs") else ""
    lines = [f"### zoo-bench run `{doc['run']}` on `{doc['zoo']}`", "",
             f"Split `{doc['split']}`: {doc['split_description']}. Seed {doc['seed']}"
             f"{', quick settings' if doc['quick'] else ''}{epochs}; {versions_line}; {doc['created']}.", ""]
    for task, title in TASK_TITLES.items():
        rows = [r for r in doc["rows"] if r["task"] == task]
        if not rows:
            continue
        lines += [f"#### {title}", ""]
        if task == "properties":
            lines += ["R² in % / Kendall τ of held-out predictions, over every held-out state (states) and over "
                      "each held-out model's last state (models); -: undefined (no spread in targets or "
                      "predictions).", ""] + _properties_table(rows, _lookup(rows))
        elif task == "twins":
            lines += ["From each held-out original's final weights: R² in % / Kendall τ over held-out models.", ""]
            lines += _twins_table(rows, _lookup(rows))
        else:
            lines += ["Held-out test accuracy in % (std over models) / IoU in % of the pruned weights with the "
                      "VD twin's, at each sparsity.", ""] + _masks_table(rows)
        lines.append("")
    lines += ["#### Seconds (fit and predict, all folds)", ""] + _timings(doc) + [""]
    if doc["notes"]:
        lines += ["Notes: " + "; ".join(doc["notes"]) + ".", ""]
    return "\n".join(lines)


def figure(doc: dict):
    """One figure: mean held-out R² per property (over populations, states), R² per twin target,
    and mask accuracy over sparsity, one panel per task run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t for t in TASK_TITLES if any(r["task"] == t for r in doc["rows"])]
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4.2), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        rows = [r for r in doc["rows"] if r["task"] == task]
        if task == "masks":
            for predictor in _ordered(rows, "predictor"):
                points = sorted((r["sparsity"], r["value"]) for r in rows
                                if r["predictor"] == predictor and r["metric"] == "accuracy" and r["value"] is not None)
                if points:
                    ax.plot(*zip(*[(100 * s, 100 * v) for s, v in points], strict=True), marker="o", label=predictor)
            ax.set(xlabel="sparsity %", ylabel="held-out test accuracy %")
        else:
            over = "states" if task == "properties" else "models"
            targets, predictors = _ordered(rows, "target"), _ordered(rows, "predictor")
            width = 0.8 / len(predictors)
            for i, predictor in enumerate(predictors):
                means = []
                for target in targets:
                    known = [r["value"] for r in rows if r["predictor"] == predictor and r["target"] == target
                             and r["metric"] == "r2" and r["over"] == over and r["value"] is not None]
                    means.append(100 * np.mean(known) if known else np.nan)
                ax.bar(np.arange(len(targets)) + i * width, np.clip(means, -50, 100), width, label=predictor)
            ax.set_xticks(np.arange(len(targets)) + 0.4 - width / 2, targets, rotation=30, ha="right")
            ax.set(ylabel="held-out R² % (clipped at -50)", ylim=(-50, 100))
            ax.axhline(0, color="black", lw=0.6)
        what = {"properties": "mean over populations, over states", "twins": "over models",
                "masks": "mean over models"}[task]
        ax.set_title(f"{TASK_TITLES[task]}\n({what})", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{doc['zoo']}: {doc['split']}, seed {doc['seed']}", fontsize=10)
    fig.tight_layout()
    return fig


def render(doc: dict) -> dict[str, bytes]:
    """The run's files by suffix: ``.json``, ``.md``, ``.png`` (NaN and infinite values as null)."""
    doc = _json_safe(doc)
    fig = figure(doc)
    import matplotlib.pyplot as plt  # after figure() chose the headless backend

    png = io.BytesIO()
    fig.savefig(png, dpi=110, format="png")
    plt.close(fig)
    return {".json": (json.dumps(doc, indent=1, allow_nan=False) + "\n").encode(), ".md": markdown(doc).encode(),
            ".png": png.getvalue()}


def _json_safe(value):
    """``value`` with NaN and infinite floats as null (JSON has neither) and numpy scalars as Python's."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _write(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp, open_for_writing(tmp) as fh:
        fh.write(data)


def write_outputs(doc: dict, split: Split, folder: Path, files: dict[str, bytes] | None = None) -> list[Path]:
    """Write ``<run>.json|.md|.png`` and the split file into ``folder``; returns their paths."""
    files = files or render(doc)
    folder = Path(folder)
    paths = [folder / f"{doc['run']}{suffix}" for suffix in files]
    for path, data in zip(paths, files.values(), strict=True):
        _write(path, data)
    return [*paths, save_split(split, folder)]


def record_in_store(zoo_dir: Path, split: Split, doc: dict, files: dict[str, bytes] | None = None) -> list[str]:
    """Write the split and the run's files into the store under ``bench/`` and rewrite its card
    (entering them in the manifest), all under the store's writer lock; returns the relative paths.
    A bench file the manifest already lists must be unchanged (the card stage checks), except the
    run's own, which this replaces."""
    from builders.stages.card import write_card  # deferred: the card needs the Hub client and datasets

    files = files or render(doc)
    zoo_dir = Path(zoo_dir)
    with writer_lock(zoo_dir):
        check_writable(check_not_linked(zoo_dir))
        store = ZooStore(zoo_dir)  # the manifest as it is now, under the lock
        split.check_store(store)
        written = [f"{BENCH_RESULTS}/{doc['run']}{suffix}" for suffix in files]
        for relative, data in zip(written, files.values(), strict=True):
            _write(zoo_dir / relative, data)
            (store.manifest.card_files or {}).pop(relative, None)  # replaced on purpose
        written.insert(0, save_split(split, zoo_dir / BENCH_SPLITS).relative_to(zoo_dir).as_posix())
        write_card(store)
    return written
