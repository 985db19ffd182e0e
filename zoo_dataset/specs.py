"""Zoo specifications: what a zoo is made of, as data.

A :class:`ZooSpec` names a dataset, an architecture and a grid of generating factors; it expands
into one :class:`ModelConfig` per model. Specs live in ``zoos.toml`` so that adding a zoo is an
edit of data, not code.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import math
import tomllib
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from .errors import UnknownZooError, ZooError, ZooSpecError
from .inputs import read_regular

Activation = Literal["tanh", "sigmoid", "relu", "gelu"]
Optimizer = Literal["adam", "sgd"]
Init = Literal["uniform", "normal", "kaiming_uniform", "kaiming_normal", "xavier_uniform", "xavier_normal"]
Variant = Literal["seed", "fixed", "random"]
VDVariantName = Literal["cnn_ard", "elbo"]  # VD's layers and objective: sparsify.variational.VARIANTS
Architecture = Literal["cnn_s", "cnn_l"]
ACTIVATIONS: tuple[str, ...] = get_args(Activation)
OPTIMIZERS: tuple[str, ...] = get_args(Optimizer)
INITS: tuple[str, ...] = get_args(Init)
VARIANTS: tuple[str, ...] = get_args(Variant)
VD_VARIANTS: tuple[str, ...] = get_args(VDVariantName)
LEGACY_VD_VARIANT = "elbo"  # what stores written before vd.variant existed were trained with
ARCHITECTURES: tuple[str, ...] = get_args(Architecture)
VD_THRESHOLD = 3.0  # log_alpha at which VD drops a weight, unless a zoo says otherwise
# Bounds, checked before anything is allocated, for spec files and command-line overrides alike.
MAX_EPOCHS = 10_000  # far above any zoo of the paper (at most a few hundred); catches typos such as 1e12
MAX_MODELS = 100_000  # models of one zoo: ~40x the largest zoo of the paper (2 560)
MAX_BATCH_SIZE = 1 << 20  # above any training set (SVHN's, the largest, has 73 257 images)
MAX_SPEC_BYTES = 4 << 20  # a spec file is kilobytes; /dev/zero would otherwise be read until memory runs out
MAX_SEED = 2**64 - 1  # torch.manual_seed takes seeds up to 2^64 - 1; the toolkit's seeds are non-negative


@dataclass(frozen=True)
class ModelConfig:
    """The generating factors of one model of a zoo."""

    model_id: int
    seed: int
    activation: Activation
    optimizer: Optimizer
    lr: float
    weight_decay: float
    dropout: float
    init: Init

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class FactorGrid:
    """Generating-factor values; the zoo's variant decides how they combine into models."""

    seeds: tuple[int, ...]
    activation: tuple[str, ...]
    optimizer: tuple[str, ...]
    lr: tuple[float, ...]
    weight_decay: tuple[float, ...]
    dropout: tuple[float, ...]
    init: tuple[str, ...]


@dataclass(frozen=True)
class TwinSchedule:
    """How long and how fast a twin method trains; ``lr = "original"`` reuses each model's own rate."""

    epochs: int
    lr: float | Literal["original"]

    def lr_for(self, config: ModelConfig) -> float:
        return config.lr if self.lr == "original" else float(self.lr)


@dataclass(frozen=True)
class MPSpec(TwinSchedule):
    """Magnitude-pruning twins (global ``mp`` and layer-wise ``mp_local``): pruning at each level,
    then fine-tuning under the fixed mask."""

    levels: tuple[float, ...] = ()
    in_paper: bool = True


@dataclass(frozen=True)
class VDSpec(TwinSchedule):
    """Sparse variational-dropout twins trained from each original's last state."""

    kl_warmup_epochs: int = 0  # the elbo variant's linear KL warm-up (0: none)
    threshold: float = VD_THRESHOLD
    variant: VDVariantName = "cnn_ard"  # the original zoos' CNN_ARD, or "elbo" (docs/variational-dropout.md)


@dataclass(frozen=True)
class ZooSpec:
    """One zoo: dataset, architecture, generating factors, training and twin settings.

    ``models()`` expands it into the models a build covers; ``source`` is the spec file it came
    from (the packaged ``zoos.toml`` or a user's file), recorded in the store's manifest.
    """

    name: str
    dataset: str
    architecture: Architecture
    variant: Variant
    description: str
    epochs: int
    batch_size: int
    factors: FactorGrid
    mp: MPSpec
    vd: VDSpec
    models_per_shard: int = 100
    model_split: tuple[float, float, float] = (0.7, 0.15, 0.15)
    split_seed: int = 42
    random_seed_base: int = 0
    model_subset: tuple[int, ...] | None = field(default=None)
    source: str = "zoos.toml"

    def all_models(self) -> list[ModelConfig]:
        """Every model of the full zoo, in model-id order."""
        f = self.factors
        grid = list(itertools.product(f.activation, f.optimizer, f.lr, f.weight_decay, f.dropout, f.init))
        if self.variant == "random":
            # one fresh seed per (grid point, repeat); ``seeds`` only says how many repeats
            repeats = [g for g in grid for _ in f.seeds]
            rng = np.random.default_rng(self.random_seed_base)
            seeds = rng.integers(0, 1_000_000, size=len(repeats))
            combos = [(int(s), *g) for s, g in zip(seeds, repeats, strict=True)]
        else:
            combos = [(s, *g) for g in grid for s in f.seeds]
        return [ModelConfig(i, *c) for i, c in enumerate(combos)]

    def models(self) -> list[ModelConfig]:
        """The models this build covers: the whole zoo or the chosen subset."""
        everything = self.all_models()
        if self.model_subset is None:
            return everything
        return [everything[i] for i in self.model_subset]

    @property
    def size(self) -> int:
        f = self.factors
        n = len(f.seeds) * len(f.activation) * len(f.optimizer) * len(f.lr)
        return n * len(f.weight_decay) * len(f.dropout) * len(f.init)

    def with_overrides(self, **changes: Any) -> ZooSpec:
        """A copy with top-level fields, or ``mp``/``vd`` sub-fields (``mp_epochs=2``), replaced."""
        top, mp, vd = {}, {}, {}
        for key, value in changes.items():
            if value is None:
                continue
            if key.startswith("mp_"):
                mp[key[3:]] = value
            elif key.startswith("vd_"):
                vd[key[3:]] = value
            else:
                top[key] = value
        if "model_subset" in top:
            if len(top["model_subset"]) > MAX_MODELS:  # range(10**11) is cheap to pass, not to list
                raise ZooSpecError(f"the model subset lists {len(top['model_subset'])} ids; a zoo has at most "
                                   f"{MAX_MODELS} models")
            subset = tuple(sorted(set(top["model_subset"])))
            bad = [i for i in subset if not 0 <= i < self.size]
            if not subset:
                raise ZooSpecError(f"the model subset is empty: zoo {self.name} has models 0..{self.size - 1}")
            if bad:
                raise ZooSpecError(f"model ids {bad[:5]} out of range: zoo {self.name} has {self.size} models")
            top["model_subset"] = subset
        if "levels" in mp:
            mp["levels"] = check_levels(mp["levels"])
        try:
            spec = dataclasses.replace(
                self,
                **top,
                mp=dataclasses.replace(self.mp, **mp),
                vd=dataclasses.replace(self.vd, **vd),
            )
        except TypeError as exc:  # an unknown field name
            raise ZooSpecError(f"zoo {self.name}: cannot override that ({exc})") from None
        _validate(spec)
        return spec

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ZooSpec:
        data = dict(data)
        data["factors"] = FactorGrid(**{k: tuple(v) for k, v in data["factors"].items()})
        data["mp"] = MPSpec(**{**data["mp"], "levels": tuple(data["mp"]["levels"])})
        data["vd"] = _vd_from_dict(data["vd"])
        data["model_split"] = tuple(data["model_split"])
        if data.get("model_subset") is not None:
            data["model_subset"] = tuple(data["model_subset"])
        return cls(**data)


def _vd_from_dict(data: dict[str, Any]) -> VDSpec:
    """A recorded VD spec; one from before ``variant`` existed (it had ``kl_objective``) was
    trained with the ELBO layers."""
    data = dict(data)
    data.pop("kl_objective", None)
    data.setdefault("variant", LEGACY_VD_VARIANT)
    return VDSpec(**data)


def parse_level(value: float | str) -> float:
    """A sparsity level given as a fraction (0.5) or a percentage (50): the fraction, rounded to 1e-6.

    The one place that reads levels, for the specs, ``--mp-levels``, the loaders' ``level=`` and the
    report's ``--sparsity``; a level must lie strictly between 0 and 1 (0 and 100 %).
    """
    try:
        level = float(value)
    except (TypeError, ValueError):
        raise ZooSpecError(f"sparsity level {value!r} is not a number") from None
    if level > 1.0:  # a percentage such as 50
        level /= 100.0
    if not 0.0 < level < 1.0:
        raise ZooSpecError(
            f"sparsity level {value} out of range: levels must lie strictly between 0 and 1 (or 0 and 100 %)"
        )
    return round(level, 6)


def check_levels(levels: Any) -> tuple[float, ...]:
    """MP sparsity levels as distinct fractions in (0, 1); percentages such as 50 are accepted."""
    out = tuple(parse_level(level) for level in levels)
    repeated = [level for i, level in enumerate(out) if level in out[:i]]
    if repeated:
        raise ZooSpecError(f"sparsity level {repeated[0]} is given twice: levels must be distinct")
    return out


def whole_number(value: Any, name: str) -> int:
    """``value`` (from TOML or JSON) as an int: 3 or 3.0 (1e3 too) is one; a bool, a string, 3.9, NaN
    or inf is not, and is refused rather than coerced (ZooSpecError, a ValueError)."""
    integral = isinstance(value, float) and math.isfinite(value) and value.is_integer()
    if isinstance(value, bool) or not (isinstance(value, int) or integral):
        raise ZooSpecError(f"{name} is {value!r}, not a whole number")
    return int(value)


def bounded(value: Any, name: str, low: int, high: int) -> int:
    """``value`` as an int in ``low..high``, else one ZooSpecError line (checked before it sizes anything)."""
    number = whole_number(value, name)
    if not low <= number <= high:
        raise ZooSpecError(f"{name} = {value!r} is out of range ({low} to {high})")
    return number


def _seeds(value: Any) -> tuple[int, ...]:
    """The seeds of a factor grid, ``[1, 2]`` or ``{start, count}``, bounded before the range is built."""
    if isinstance(value, dict):
        _check_keys("factors.seeds", value, {"start", "count"}, {"start", "count"})
        count = bounded(value["count"], "seeds.count", 1, MAX_MODELS)
        start = bounded(value["start"], "seeds.start", 0, MAX_SEED - count + 1)
        return tuple(range(start, start + count))
    if not isinstance(value, list) or len(value) > MAX_MODELS:
        raise ZooSpecError(f"factors.seeds must be a list of at most {MAX_MODELS} seeds or {{start, count}}")
    return tuple(bounded(v, "seed", 0, MAX_SEED) for v in value)


ZOO_KEYS = {"dataset", "architecture", "variant", "description", "epochs", "batch_size", "factors", "mp", "vd",
            "models_per_shard", "model_split", "split_seed", "random_seed_base"}
FACTOR_KEYS = {f.name for f in dataclasses.fields(FactorGrid)}
MP_KEYS = {f.name for f in dataclasses.fields(MPSpec)}
VD_KEYS = {f.name for f in dataclasses.fields(VDSpec)}


def _check_keys(where: str, table: Any, allowed: set[str], required: set[str] = frozenset()) -> None:
    """Unknown keys (typos) and missing required keys of one TOML table, as one line."""
    if not isinstance(table, dict):
        raise ZooSpecError(f"{where} must be a table, got {table!r}")
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ZooSpecError(f"{where}: unknown key {key!r}{hint}")
    missing = sorted(required - set(table))
    if missing:
        raise ZooSpecError(f"{where}: missing {', '.join(missing)}")


def _build(name: str, raw: dict[str, Any], defaults: dict[str, Any], source: str) -> ZooSpec:
    where = f"zoo {name} ({source})"
    _check_keys(where, raw, ZOO_KEYS, {"dataset", "architecture", "variant", "factors"})
    _check_keys(f"{where} factors", raw["factors"], FACTOR_KEYS, FACTOR_KEYS)
    _check_keys(f"{where} mp", raw.get("mp", {}), MP_KEYS)
    _check_keys(f"{where} vd", raw.get("vd", {}), VD_KEYS)
    fields = {key: raw.get(key, defaults.get(key)) for key in ZOO_KEYS - {"factors", "mp", "vd"}}
    mp_raw = {**defaults.get("mp", {}), **raw.get("mp", {})}
    vd_raw = {**defaults.get("vd", {}), **raw.get("vd", {})}
    try:
        f = raw["factors"]
        factors = FactorGrid(
            seeds=_seeds(f["seeds"]),
            activation=tuple(f["activation"]),
            optimizer=tuple(f["optimizer"]),
            lr=tuple(float(x) for x in f["lr"]),
            weight_decay=tuple(float(x) for x in f["weight_decay"]),
            dropout=tuple(float(x) for x in f["dropout"]),
            init=tuple(f["init"]),
        )
        spec = ZooSpec(
            name=name,
            dataset=str(fields["dataset"]),
            architecture=fields["architecture"],
            variant=fields["variant"],
            description=str(fields["description"] or ""),
            epochs=whole_number(fields["epochs"], "epochs"),
            batch_size=whole_number(fields["batch_size"], "batch_size"),
            factors=factors,
            mp=MPSpec(levels=check_levels(mp_raw["levels"]), epochs=whole_number(mp_raw["epochs"], "mp.epochs"),
                      lr=_lr(mp_raw["lr"]), in_paper=_flag(mp_raw.get("in_paper", MPSpec.in_paper), "mp.in_paper")),
            vd=VDSpec(epochs=whole_number(vd_raw["epochs"], "vd.epochs"), lr=_lr(vd_raw["lr"]),
                      kl_warmup_epochs=whole_number(vd_raw.get("kl_warmup_epochs", VDSpec.kl_warmup_epochs),
                                                    "vd.kl_warmup_epochs"),
                      threshold=float(vd_raw.get("threshold", VDSpec.threshold)),
                      variant=vd_raw.get("variant", VDSpec.variant)),
            models_per_shard=whole_number(fields["models_per_shard"], "models_per_shard"),
            model_split=tuple(float(x) for x in fields["model_split"]),
            split_seed=whole_number(fields["split_seed"], "split_seed"),
            random_seed_base=whole_number(fields["random_seed_base"] or 0, "random_seed_base"),
            source=source,
        )
    except KeyError as exc:
        raise ZooSpecError(f"{where}: missing {exc.args[0]} (and no default for it)") from None
    except ZooSpecError as exc:
        raise ZooSpecError(f"{where}: {exc}") from None
    except (TypeError, ValueError, OverflowError) as exc:
        raise ZooSpecError(f"{where}: a value has the wrong type ({exc})") from None
    _validate(spec)
    return spec


def _lr(value: Any) -> float | Literal["original"]:
    return value if value == "original" else float(value)


def _flag(value: Any, name: str) -> bool:
    """A TOML boolean only: the string "no" would be truthy."""
    if not isinstance(value, bool):
        raise ZooSpecError(f"{name} = {value!r} is not true or false")
    return value


def _counts(spec: ZooSpec) -> dict[str, tuple[int, int, int]]:
    """Every count and seed of a spec with its bounds (low, high): one table for files and overrides."""
    return {
        "epochs": (spec.epochs, 1, MAX_EPOCHS),
        "mp.epochs": (spec.mp.epochs, 1, MAX_EPOCHS),
        "vd.epochs": (spec.vd.epochs, 1, MAX_EPOCHS),
        "vd.kl_warmup_epochs": (spec.vd.kl_warmup_epochs, 0, MAX_EPOCHS),
        "batch_size": (spec.batch_size, 1, MAX_BATCH_SIZE),
        "models_per_shard": (spec.models_per_shard, 1, MAX_MODELS),
        "split_seed": (spec.split_seed, 0, MAX_SEED),
        "random_seed_base": (spec.random_seed_base, 0, MAX_SEED),
    }


def _rates(spec: ZooSpec) -> list[str]:
    """Learning rates, weight decays, dropout rates, the VD threshold and the split that are no numbers
    a training can use (NaN, inf, a negative decay, a dropout of 1 or more...)."""
    f, bad = spec.factors, []
    lrs = [*f.lr, *(x for x in (spec.mp.lr, spec.vd.lr) if x != "original")]
    bad += [f"lr {x}" for x in lrs if not (math.isfinite(x) and x > 0)]
    bad += [f"weight_decay {x}" for x in f.weight_decay if not (math.isfinite(x) and x >= 0)]
    bad += [f"dropout {x} (0 <= dropout < 1)" for x in f.dropout if not 0 <= x < 1]
    if not math.isfinite(spec.vd.threshold):
        bad.append(f"vd.threshold {spec.vd.threshold}")
    split = spec.model_split
    if len(split) != 3 or not all(math.isfinite(x) and x >= 0 for x in split) or abs(sum(split) - 1.0) > 1e-6:
        bad.append(f"model_split {list(split)} (three fractions that sum to 1)")
    return bad


def _validate(spec: ZooSpec) -> None:
    """Every check a spec passes, whether it comes from a file or from :meth:`ZooSpec.with_overrides`."""
    f = spec.factors
    problems = [
        *(f"activation {a!r}" for a in f.activation if a not in ACTIVATIONS),
        *(f"optimizer {o!r}" for o in f.optimizer if o not in OPTIMIZERS),
        *(f"init {i!r}" for i in f.init if i not in INITS),
    ]
    if spec.variant not in VARIANTS:
        problems.append(f"variant {spec.variant!r}")
    if spec.architecture not in ARCHITECTURES:
        problems.append(f"architecture {spec.architecture!r}")
    if spec.vd.variant not in VD_VARIANTS:
        problems.append(f"vd.variant {spec.vd.variant!r} (choose {' or '.join(VD_VARIANTS)})")
    if problems:
        raise ZooSpecError(f"zoo {spec.name}: unknown {', '.join(problems)}")
    bad = [f"{name} = {value} ({low} to {high})" for name, (value, low, high) in _counts(spec).items()
           if not low <= value <= high]
    bad += [f"factors.{name} (empty)" for name, values in dataclasses.asdict(f).items() if not values]
    if spec.vd.kl_warmup_epochs and spec.vd.variant != "elbo":
        bad.append(f"vd.kl_warmup_epochs = {spec.vd.kl_warmup_epochs} (a warm-up of the elbo variant only)")
    bad += [f"seed {s} (0 to 2^64 - 1)" for s in f.seeds if not 0 <= s <= MAX_SEED][:1]
    if spec.size > MAX_MODELS:
        bad.append(f"grid of {spec.size} models (at most {MAX_MODELS})")
    bad += _rates(spec)
    if bad:
        raise ZooSpecError(f"zoo {spec.name}: invalid {', '.join(bad)}")
    check_levels(spec.mp.levels)


def load_specs(path: str | Path | None = None) -> dict[str, ZooSpec]:
    """The zoos of a spec file by name: the packaged ``zoos.toml``, or a user file with its schema.

    A user file holds ``[zoo.NAME]`` tables and optionally ``[defaults]``, which extend the
    packaged defaults; both go through the same parser and checks, and each spec records its
    file in ``source`` (kept in the store's manifest and card).
    """
    packaged = tomllib.loads(resources.files("zoo_dataset").joinpath(ZooSpec.source).read_text())
    if path is None:
        raw, source = packaged, ZooSpec.source
    else:
        file = Path(path)
        try:
            raw = tomllib.loads(read_regular(file, MAX_SPEC_BYTES, "zoo spec file", ZooSpecError).decode("utf-8"))
        except OSError as exc:
            raise ZooSpecError(f"cannot read zoo spec file {file}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise ZooSpecError(f"{file} is not UTF-8 text, as a TOML file must be") from None
        except tomllib.TOMLDecodeError as exc:
            raise ZooSpecError(f"{file} is not valid TOML: {exc}") from None
        source = str(file.resolve())
    _check_keys(source, raw, {"defaults", "zoo"}, {"zoo"})
    if not isinstance(raw["zoo"], dict):
        raise ZooSpecError(f"{source}: zoo must hold [zoo.NAME] tables, got {raw['zoo']!r}")
    user_defaults = raw.get("defaults", {}) if path is not None else {}
    _check_keys(f"{source} defaults", user_defaults, ZOO_KEYS - {"factors"})
    _check_keys(f"{source} defaults.mp", user_defaults.get("mp", {}), MP_KEYS)
    _check_keys(f"{source} defaults.vd", user_defaults.get("vd", {}), VD_KEYS)
    base = packaged["defaults"]
    defaults = {**base, **user_defaults, "mp": {**base["mp"], **user_defaults.get("mp", {})},
                "vd": {**base["vd"], **user_defaults.get("vd", {})}}
    return {_zoo_name(name, source): _build(name, body, defaults, source) for name, body in raw["zoo"].items()}


def _zoo_name(name: str, source: str) -> str:
    """A zoo's name becomes a store folder: one plain name, checked by the store's own rule."""
    from .store.paths import check_zoo_name  # deferred: the store imports this module

    try:
        return check_zoo_name(name)
    except ZooError as exc:
        raise ZooSpecError(f"{source}: {exc}") from None


@cache
def registry() -> dict[str, ZooSpec]:
    """All zoos of the packaged ``zoos.toml`` by name."""
    return load_specs()


def get_spec(name: str, spec_file: str | Path | None = None) -> ZooSpec:
    """The zoo called ``name`` in ``spec_file`` (default: the packaged zoos); an unknown name
    raises with the closest matches."""
    zoos = registry() if spec_file is None else load_specs(spec_file)
    if name not in zoos:
        close = difflib.get_close_matches(name, zoos, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        where = "`zoo-build --list` shows all zoos" if spec_file is None else f"{spec_file} has {', '.join(zoos)}"
        raise UnknownZooError(f"unknown zoo {name!r}{hint}; {where}")
    return zoos[name]
