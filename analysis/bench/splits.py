"""Versioned benchmark splits: which models are trained on and which are held out, as a file that
every result names by its id.

A split is by model (one model's epochs, levels and twins are always on one side) and records the
filters that chose its models (activation, init) and its states (epochs, MP levels). Its id is
``split-`` and the first 12 hex digits of the sha256 of its canonical JSON (sorted keys, no
whitespace), so the same split made twice, on any copy of the same store, has the same id, and an
edited file no longer matches its name. It records the sha256 of the store's models table, so a
split is refused on a store whose models differ. Kinds:

- ``store``: the store's own split; the train and val models are trained on (a predictor that
  needs a validation set draws it from them, by model), the test models are held out;
- ``random``: a seeded shuffle of the models, ``test_fraction`` of them held out;
- ``kfold``: ``k`` seeded folds (:func:`zoo_twins.model_folds`), each model held out in one.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoo_dataset.errors import ZooSpecError
from zoo_dataset.inputs import parse_json, read_regular
from zoo_dataset.specs import MAX_SEED, parse_level
from zoo_dataset.store import ZooStore
from zoo_dataset.store.files import atomic_write_text, sha256_file
from zoo_dataset.store.layout_on_disk import MODELS_TABLE
from zoo_dataset.store.paths import ZOO_NAME

FORMAT = "zoo-bench-split"
VERSION = 1
KINDS = ("store", "random", "kfold")
FILTERS = ("activation", "init", "epochs", "levels")
KEYS = ("format", "version", "zoo", "kind", "seed", "k", "test_fraction", "filters", "folds",
        "store_models_sha256")
MAX_SPLIT_BYTES = 64 << 20  # a 30 000-model zoo's 10 folds are ~3 MB
ID_NAME = re.compile(r"split-[0-9a-f]{12}")
HEX64 = re.compile(r"[0-9a-f]{64}")
TRAIN_SPLITS, TEST_SPLITS = ("train", "val"), ("test",)  # the kind "store"


@dataclass(frozen=True)
class Fold:
    """Sorted model ids trained on and held out."""

    train: tuple[int, ...]
    test: tuple[int, ...]


@dataclass(frozen=True)
class Split:
    """One split file's content; :attr:`id` names it."""

    zoo: str
    kind: str
    seed: int
    k: int | None
    test_fraction: float | None
    filters: dict[str, list | None]
    folds: tuple[Fold, ...]
    store_models_sha256: str

    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "zoo": self.zoo, "kind": self.kind, "seed": self.seed,
                "k": self.k, "test_fraction": self.test_fraction, "filters": dict(self.filters),
                "folds": [{"train": list(f.train), "test": list(f.test)} for f in self.folds],
                "store_models_sha256": self.store_models_sha256}

    @property
    def id(self) -> str:
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return "split-" + hashlib.sha256(canonical.encode()).hexdigest()[:12]

    @property
    def epochs(self) -> list[int] | None:
        return self.filters["epochs"]

    @property
    def levels(self) -> list[float] | None:
        return self.filters["levels"]

    def describe(self) -> str:
        """One line: the kind, its settings, the models on each side and the filters."""
        sizes = f"{len(self.folds[0].train)} train / {len(self.folds[0].test)} held-out models"
        if self.kind == "store":
            kind = f"the store's split (train + val / test, split seed {self.seed})"
        elif self.kind == "random":
            kind = f"random, seed {self.seed}, test fraction {self.test_fraction:g}"
        else:
            kind = f"{self.k} folds, seed {self.seed}"
            sizes = f"{sum(len(f.test) for f in self.folds)} models, {len(self.folds[0].test)} held out per fold"
        chosen = [f"{name} {','.join(str(v) for v in values)}" for name, values in self.filters.items() if values]
        return f"{kind}; {sizes}" + (f"; {'; '.join(chosen)}" if chosen else "")

    def check_store(self, store: ZooStore) -> None:
        """Refuse a split made for another store (other zoo, or other models)."""
        digest = models_sha256(store)
        if self.zoo != store.manifest.zoo or self.store_models_sha256 != digest:
            raise ZooSpecError(f"split {self.id} was made for the models of {self.zoo} (models table sha256 "
                               f"{self.store_models_sha256[:12]}...), not for those of {store.zoo_dir} "
                               f"({store.manifest.zoo}, {digest[:12]}...); make a split of this store")


def models_sha256(store: ZooStore) -> str:
    """The sha256 of the store's models table (recorded in its manifest; computed for older stores)."""
    return store.manifest.models_sha256 or sha256_file(store.zoo_dir / MODELS_TABLE)


def make_split(
    store: ZooStore,
    kind: str = "store",
    seed: int = 0,
    k: int = 5,
    test_fraction: float = 0.2,
    activation: Sequence[str] | None = None,
    init: Sequence[str] | None = None,
    epochs: Sequence[int] | None = None,
    levels: Sequence[float] | None = None,
) -> Split:
    """A split of ``store``'s models (those the activation and init filters keep); ``epochs`` and
    ``levels`` restrict the states the tasks read, and are checked against what the store records."""
    if kind not in KINDS:
        raise ZooSpecError(f"unknown split kind {kind!r}; choose one of {', '.join(KINDS)}")
    models = store.models()
    models = models[models.model_id.isin(store.manifest.model_ids)]
    filters = {"activation": _factor(models, "activation", activation), "init": _factor(models, "init", init),
               "epochs": _epochs(store, epochs), "levels": _levels(store, levels)}
    for factor in ("activation", "init"):
        if filters[factor] is not None:
            models = models[models[factor].isin(filters[factor])]
    ids = sorted(int(m) for m in models.model_id)
    if kind == "store":
        seed = int(store.spec.split_seed)
        folds = [([int(m) for m in models.model_id[models.split.isin(TRAIN_SPLITS)]],
                  [int(m) for m in models.model_id[models.split.isin(TEST_SPLITS)]])]
    elif kind == "random":
        if not 0.0 < test_fraction < 1.0:
            raise ZooSpecError(f"test fraction {test_fraction} must lie strictly between 0 and 1")
        shuffled = np.random.default_rng(seed).permutation(ids).tolist()
        n_test = min(max(round(test_fraction * len(ids)), 1), len(ids) - 1)
        folds = [(shuffled[n_test:], shuffled[:n_test])]
    else:
        from zoo_twins import model_folds  # the toolkit's loaders, even beside a user's own `loaders`

        folds = model_folds(ids, k, seed)
    folds = tuple(Fold(tuple(sorted(train)), tuple(sorted(test))) for train, test in folds)
    if any(not f.train or not f.test for f in folds):
        raise ZooSpecError(f"the {kind} split of the {len(ids)} chosen models of {store.zoo_dir} leaves one side "
                           "empty; choose more models (fewer filters) or another kind")
    return Split(zoo=store.manifest.zoo, kind=kind, seed=int(seed), k=k if kind == "kfold" else None,
                 test_fraction=float(test_fraction) if kind == "random" else None, filters=filters, folds=folds,
                 store_models_sha256=models_sha256(store))


def _factor(models, name: str, values: Sequence[str] | None) -> list[str] | None:
    if values is None:
        return None
    have = sorted(str(v) for v in models[name].unique())
    unknown = sorted(set(values) - set(have))
    if unknown or not values:
        raise ZooSpecError(f"{name} {', '.join(unknown) or '(none)'} is not in this store; it has {', '.join(have)}")
    return sorted(set(values))


def _epochs(store: ZooStore, epochs: Sequence[int] | None) -> list[int] | None:
    if epochs is None:
        return None
    last = max(store.population(p).epochs for p in store.populations)
    wrong = sorted(e for e in epochs if not 0 <= e <= last)
    if wrong or not epochs:
        raise ZooSpecError(f"epoch {wrong[0] if wrong else '(none)'} is not recorded: this store's states run "
                           f"from epoch 0 to {last}")
    return sorted(set(int(e) for e in epochs))


def _levels(store: ZooStore, levels: Sequence[float] | None) -> list[float] | None:
    if levels is None:
        return None
    if "mp" not in store.populations:
        raise ZooSpecError(f"{store.zoo_dir} has no MP twins; leave out the level filter")
    stored = [float(v) for v in store.population("mp").levels]
    chosen = []
    for level in map(parse_level, levels):  # 0.5 or 50
        match = [v for v in stored if np.isclose(v, level)]
        if not match:
            have = ", ".join(f"{v:g}" for v in stored)
            raise ZooSpecError(f"MP level {level:g} is not stored; this store has {have}")
        chosen.append(match[0])
    if not chosen:
        raise ZooSpecError("the level filter names no level")
    return sorted(set(chosen))


def save_split(split: Split, folder: Path) -> Path:
    """Write ``folder/<id>.json`` (atomically, never through a link) and return its path."""
    path = Path(folder) / f"{split.id}.json"
    atomic_write_text(path, json.dumps(split.to_dict(), indent=1, sort_keys=True) + "\n")
    return path


def load_split(path: Path) -> Split:
    """The split in ``path``, read as untrusted input: a regular file of bounded size, JSON, every
    field checked; a file named ``split-<hex>.json`` must hash to that name (it was not edited)."""
    path = Path(path)
    what = f"split file {path}"
    try:
        raw = parse_json(read_regular(path, MAX_SPLIT_BYTES, "split file", ZooSpecError), what, ZooSpecError)
    except FileNotFoundError:
        raise ZooSpecError(f"{what} does not exist") from None
    split = parse_split(raw, what)
    if ID_NAME.fullmatch(path.stem) and path.stem != split.id:
        raise ZooSpecError(f"{what} holds the split {split.id}, not {path.stem}: it was changed after it was "
                           "written; use the original file or make a new split")
    return split


def parse_split(raw: object, what: str = "split") -> Split:
    """A :class:`Split` from parsed JSON; ZooSpecError in one line naming the first bad field."""

    def bad(field: str, why: str) -> ZooSpecError:
        return ZooSpecError(f"{what}: {field} {why}")

    if not isinstance(raw, dict):
        raise bad("the content", "is not a JSON object")
    missing, unknown = sorted(set(KEYS) - set(raw)), sorted(set(raw) - set(KEYS))
    if missing or unknown:
        raise bad("the object", f"lacks {', '.join(missing)}" if missing else f"has unknown keys {', '.join(unknown)}")
    if raw["format"] != FORMAT:
        raise bad("format", f"is {json.dumps(raw['format'])[:40]}, not {FORMAT!r}: not a zoo-bench split")
    if type(raw["version"]) is not int or raw["version"] != VERSION:
        raise bad("version", f"is {json.dumps(raw['version'])[:40]}; this toolkit reads version {VERSION}")
    if not isinstance(raw["zoo"], str) or not ZOO_NAME.fullmatch(raw["zoo"]) or ".." in raw["zoo"]:
        raise bad("zoo", "is not a zoo name")
    kind = raw["kind"]
    if kind not in KINDS:
        raise bad("kind", f"is not one of {', '.join(KINDS)}")
    if not _is_int(raw["seed"], 0, MAX_SEED):
        raise bad("seed", f"is not an integer from 0 to {MAX_SEED}")
    if not isinstance(raw["store_models_sha256"], str) or HEX64.fullmatch(raw["store_models_sha256"]) is None:
        raise bad("store_models_sha256", "is not a sha256 (64 lowercase hex digits)")
    folds = _folds(raw["folds"], bad)
    if kind == "kfold":
        if not _is_int(raw["k"], 2, len(folds)) or raw["k"] != len(folds):
            raise bad("k", f"must be the number of folds ({len(folds)}, at least 2)")
        everyone = set(folds[0].train) | set(folds[0].test)
        tests = [m for f in folds for m in f.test]
        if len(tests) != len(set(tests)) or set(tests) != everyone or any(
                set(f.train) | set(f.test) != everyone for f in folds):
            raise bad("folds", "must hold each model out in exactly one fold and train on the others")
    elif raw["k"] is not None or len(folds) != 1:
        raise bad("k", f"must be null with one fold for the kind {kind}")
    fraction = raw["test_fraction"]
    if kind == "random":
        if type(fraction) not in (int, float) or not 0.0 < fraction < 1.0:
            raise bad("test_fraction", "must be a number strictly between 0 and 1")
        fraction = float(fraction)
    elif fraction is not None:
        raise bad("test_fraction", f"must be null for the kind {kind}")
    return Split(zoo=raw["zoo"], kind=kind, seed=raw["seed"], k=raw["k"], test_fraction=fraction,
                 filters=_filters(raw["filters"], bad), folds=folds, store_models_sha256=raw["store_models_sha256"])


def _is_int(value: object, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high


def _sorted_unique(values: list) -> bool:
    return all(a < b for a, b in zip(values, values[1:], strict=False))


def _folds(raw: object, bad) -> tuple[Fold, ...]:
    if not isinstance(raw, list) or not raw:
        raise bad("folds", "is not a non-empty list")
    folds = []
    for i, fold in enumerate(raw):
        if not isinstance(fold, dict) or set(fold) != {"train", "test"}:
            raise bad(f"folds[{i}]", "is not an object with exactly the keys train and test")
        for side in ("train", "test"):
            ids = fold[side]
            if (not isinstance(ids, list) or not ids or not all(_is_int(m, 0, 2**63 - 1) for m in ids)
                    or not _sorted_unique(ids)):
                raise bad(f"folds[{i}].{side}", "is not a non-empty sorted list of distinct model ids")
        if set(fold["train"]) & set(fold["test"]):
            raise bad(f"folds[{i}]", "holds a model on both sides")
        folds.append(Fold(tuple(fold["train"]), tuple(fold["test"])))
    return tuple(folds)


def _filters(raw: object, bad) -> dict[str, list | None]:
    if not isinstance(raw, dict) or set(raw) != set(FILTERS):
        raise bad("filters", f"is not an object with exactly the keys {', '.join(FILTERS)}")
    checks = {"activation": lambda v: isinstance(v, str) and 0 < len(v) <= 64,
              "init": lambda v: isinstance(v, str) and 0 < len(v) <= 64,
              "epochs": lambda v: _is_int(v, 0, 10**6),
              "levels": lambda v: type(v) is float and 0.0 < v < 1.0}
    out = {}
    for name in FILTERS:
        values = raw[name]
        if values is not None and (not isinstance(values, list) or not values
                                   or not all(checks[name](v) for v in values) or not _sorted_unique(values)):
            raise bad(f"filters.{name}", "is neither null nor a non-empty sorted list of distinct values of its kind")
        out[name] = values
    return out
