"""Zoo specifications: what a zoo is made of, as data.

A :class:`ZooSpec` names a dataset, an architecture and a grid of generating factors; it expands
into one :class:`ModelConfig` per model. Specs live in ``zoos.toml`` so that adding a zoo is an
edit of data, not code.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import tomllib
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from .errors import UnknownZooError, ZooSpecError

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


def _seeds(value: Any) -> tuple[int, ...]:
    if isinstance(value, dict):
        return tuple(range(int(value["start"]), int(value["start"]) + int(value["count"])))
    return tuple(int(v) for v in value)


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
            epochs=int(fields["epochs"]),
            batch_size=int(fields["batch_size"]),
            factors=factors,
            mp=MPSpec(levels=check_levels(mp_raw["levels"]), epochs=int(mp_raw["epochs"]),
                      lr=_lr(mp_raw["lr"]), in_paper=bool(mp_raw.get("in_paper", MPSpec.in_paper))),
            vd=VDSpec(epochs=int(vd_raw["epochs"]), lr=_lr(vd_raw["lr"]),
                      kl_warmup_epochs=int(vd_raw.get("kl_warmup_epochs", VDSpec.kl_warmup_epochs)),
                      threshold=float(vd_raw.get("threshold", VDSpec.threshold)),
                      variant=vd_raw.get("variant", VDSpec.variant)),
            models_per_shard=int(fields["models_per_shard"]),
            model_split=tuple(float(x) for x in fields["model_split"]),
            split_seed=int(fields["split_seed"]),
            random_seed_base=int(fields["random_seed_base"] or 0),
            source=source,
        )
    except KeyError as exc:
        raise ZooSpecError(f"{where}: missing {exc.args[0]} (and no default for it)") from None
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ZooSpecError):
            raise
        raise ZooSpecError(f"{where}: a value has the wrong type ({exc})") from None
    _validate(spec)
    return spec


def _lr(value: Any) -> float | Literal["original"]:
    return value if value == "original" else float(value)


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
    counts = {"epochs": spec.epochs, "mp.epochs": spec.mp.epochs, "vd.epochs": spec.vd.epochs,
              "batch_size": spec.batch_size, "models_per_shard": spec.models_per_shard}
    bad = [f"{k} = {v}" for k, v in counts.items() if v < (0 if k.endswith("epochs") else 1)]
    bad += [f"factors.{name} (empty)" for name, values in dataclasses.asdict(f).items() if not values]
    if len(spec.model_split) != 3 or abs(sum(spec.model_split) - 1.0) > 1e-6 or min(spec.model_split) < 0:
        bad.append(f"model_split {list(spec.model_split)} (three fractions that sum to 1)")
    if spec.vd.kl_warmup_epochs and spec.vd.variant != "elbo":
        bad.append(f"vd.kl_warmup_epochs = {spec.vd.kl_warmup_epochs} (a warm-up of the elbo variant only)")
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
            raw = tomllib.loads(file.read_text())
        except OSError as exc:
            raise ZooSpecError(f"cannot read zoo spec file {file}: {exc.strerror or exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ZooSpecError(f"{file} is not valid TOML: {exc}") from None
        source = str(file.resolve())
    _check_keys(source, raw, {"defaults", "zoo"}, {"zoo"})
    user_defaults = raw.get("defaults", {}) if path is not None else {}
    _check_keys(f"{source} defaults", user_defaults, ZOO_KEYS - {"factors"})
    base = packaged["defaults"]
    defaults = {**base, **user_defaults, "mp": {**base["mp"], **user_defaults.get("mp", {})},
                "vd": {**base["vd"], **user_defaults.get("vd", {})}}
    return {name: _build(name, body, defaults, source) for name, body in raw["zoo"].items()}


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
