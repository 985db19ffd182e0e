"""Zoo specifications: what a zoo is made of, as data.

A :class:`ZooSpec` names a dataset, an architecture and a grid of generating factors; it expands
into one :class:`ModelConfig` per model. Specs live in ``zoos.toml`` so that adding a zoo is an
edit of data, not code.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import numpy as np
import tomllib

from .errors import UnknownZooError, ZooSpecError

ACTIVATIONS = ("tanh", "sigmoid", "relu", "gelu")
OPTIMIZERS = ("adam", "sgd")
INITS = ("uniform", "normal", "kaiming_uniform", "kaiming_normal", "xavier_uniform", "xavier_normal")
VARIANTS = ("seed", "fixed", "random")
VD_KL_OBJECTIVES = ("elbo", "original")  # how VD weighs the KL: sparsify.variational.VariationalNet.kl_factor
ARCHITECTURES = ("cnn_s", "cnn_l")
MAX_EPOCHS = 10_000  # far above any zoo of the paper (at most a few hundred); catches typos such as 1e12
EPOCH_FIELDS = ("epochs", "mp_epochs", "vd_epochs")


@dataclass(frozen=True)
class ModelConfig:
    """The generating factors of one model of a zoo."""

    model_id: int
    seed: int
    activation: str
    optimizer: str
    lr: float
    weight_decay: float
    dropout: float
    init: str

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
class MPSpec:
    """Magnitude-pruning twins: global unstructured pruning at each level, then fine-tuning."""

    levels: tuple[float, ...]
    epochs: int
    lr: float | str  # a number, or "original": each model's own learning rate
    in_paper: bool = True

    def lr_for(self, config: ModelConfig) -> float:
        return config.lr if self.lr == "original" else float(self.lr)


@dataclass(frozen=True)
class VDSpec:
    """Sparse variational-dropout twins trained from each original's last state."""

    epochs: int
    lr: float | str
    kl_warmup_epochs: int = 0
    threshold: float = 3.0
    kl_objective: str = "elbo"  # or "original": the original zoos' KL ramp (see VariationalNet.kl_factor)

    def lr_for(self, config: ModelConfig) -> float:
        return config.lr if self.lr == "original" else float(self.lr)


@dataclass(frozen=True)
class ZooSpec:
    name: str
    dataset: str
    architecture: str
    variant: str
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
            if key in EPOCH_FIELDS:
                _check_epochs(key, value)
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
        return dataclasses.replace(
            self,
            **top,
            mp=dataclasses.replace(self.mp, **mp),
            vd=dataclasses.replace(self.vd, **vd),
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ZooSpec:
        data = dict(data)
        data["factors"] = FactorGrid(**{k: tuple(v) for k, v in data["factors"].items()})
        data["mp"] = MPSpec(**{**data["mp"], "levels": tuple(data["mp"]["levels"])})
        data["vd"] = VDSpec(**data["vd"])
        data["model_split"] = tuple(data["model_split"])
        if data.get("model_subset") is not None:
            data["model_subset"] = tuple(data["model_subset"])
        return cls(**data)


def _check_epochs(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or not 1 <= value <= MAX_EPOCHS:
        raise ZooSpecError(f"{name} must be a whole number from 1 to {MAX_EPOCHS}, got {value!r}")


def check_levels(levels: Any) -> tuple[float, ...]:
    """MP sparsity levels as distinct fractions in (0, 1); percentages such as 50 are accepted."""
    out = []
    for level in levels:
        level = float(level)
        if level > 1.0:  # accept percentages such as 50
            level /= 100.0
        if not 0.0 < level < 1.0:
            raise ZooSpecError(
                f"sparsity level {level} out of range: levels must lie strictly between 0 and 1 (or 0 and 100 %)"
            )
        if round(level, 6) in out:
            raise ZooSpecError(f"sparsity level {level} is given twice: levels must be distinct")
        out.append(round(level, 6))
    return tuple(out)


def _seeds(value: Any) -> tuple[int, ...]:
    if isinstance(value, dict):
        return tuple(range(int(value["start"]), int(value["start"]) + int(value["count"])))
    return tuple(int(v) for v in value)


def _build(name: str, raw: dict[str, Any], defaults: dict[str, Any]) -> ZooSpec:
    def pick(key: str) -> Any:
        return raw.get(key, defaults.get(key))

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
    mp_raw = {**defaults["mp"], **raw.get("mp", {})}
    vd_raw = {**defaults["vd"], **raw.get("vd", {})}
    spec = ZooSpec(
        name=name,
        dataset=raw["dataset"],
        architecture=raw["architecture"],
        variant=raw["variant"],
        description=raw.get("description", ""),
        epochs=int(pick("epochs")),
        batch_size=int(pick("batch_size")),
        factors=factors,
        mp=MPSpec(levels=check_levels(mp_raw["levels"]), epochs=int(mp_raw["epochs"]), lr=mp_raw["lr"],
                  in_paper=bool(mp_raw.get("in_paper", True))),
        vd=VDSpec(epochs=int(vd_raw["epochs"]), lr=vd_raw["lr"],
                  kl_warmup_epochs=int(vd_raw.get("kl_warmup_epochs", 0)), threshold=float(vd_raw["threshold"]),
                  kl_objective=str(vd_raw.get("kl_objective", "elbo"))),
        models_per_shard=int(pick("models_per_shard")),
        model_split=tuple(pick("model_split")),
        split_seed=int(pick("split_seed")),
        random_seed_base=int(raw.get("random_seed_base", 0)),
    )
    _validate(spec)
    return spec


def _validate(spec: ZooSpec) -> None:
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
    if spec.vd.kl_objective not in VD_KL_OBJECTIVES:
        problems.append(f"vd.kl_objective {spec.vd.kl_objective!r}")
    if problems:
        raise ZooSpecError(f"zoo {spec.name}: unknown {', '.join(problems)}")


@cache
def registry() -> dict[str, ZooSpec]:
    """All zoos of ``zoos.toml`` by name."""
    text = resources.files("zoo_dataset").joinpath("zoos.toml").read_text()
    raw = tomllib.loads(text)
    defaults = raw["defaults"]
    return {name: _build(name, body, defaults) for name, body in raw["zoo"].items()}


def get_spec(name: str) -> ZooSpec:
    """The registered zoo called ``name``; an unknown name raises with the closest matches."""
    zoos = registry()
    if name not in zoos:
        close = difflib.get_close_matches(name, zoos, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UnknownZooError(f"unknown zoo {name!r}{hint}; `zoo-build --list` shows all zoos")
    return zoos[name]
