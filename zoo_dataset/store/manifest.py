"""``manifest.json``: the one index of a store, written last and atomically.

It holds the schema version, the zoo spec the store was built from, the parameter layout, the
model ids, the models table's sha256, the training chunk size, and per population (one per
method) its levels, epochs, status and shard list with sha256 and sizes, and for a downloaded store its
``origin`` (source, revision and the checksums of the files it came from). Readers trust only what
the manifest lists, and only after :meth:`Manifest.check` found every entry well-formed and inside
the store.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from .. import __version__
from ..architectures import build_model
from ..errors import StoreError, ZooError
from ..inputs import parse_json
from ..layout import ParameterLayout
from ..methods import methods
from ..specs import ZooSpec
from .files import atomic_write_text, open_regular
from .paths import check_relative, check_zoo_name

SCHEMA_VERSION = 2  # 2: every shard dataset is row-aligned (first axis = the shard's models)
READABLE_VERSIONS = (1, 2)  # 1: ``level`` was [levels]; `zoo-build --migrate` rewrites such shards
MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 64 << 20  # a 1000-model zoo's manifest is well under 1 MB
SHA256 = 64
PACKING_DIGEST = "manifest_sha256"  # shard attribute: Manifest.packing_digest at pack time


@dataclass
class ShardInfo:
    index: int
    file: str  # relative to the zoo directory
    sha256: str
    bytes: int
    model_ids: list[int]
    states_file: str
    states_sha256: str
    states_bytes: int | None = None  # absent in stores written before it was recorded

    @property
    def rows(self) -> int:
        return len(self.model_ids)


@dataclass
class PopulationInfo:
    levels: list[float]
    epochs: int  # recorded states per unit = epochs + 1 (epoch 0 included)
    arrays: list[str]  # datasets in each shard: weights, masks, log_alpha
    status: Literal["partial", "complete"] = "partial"  # complete: every shard packed
    shards: list[ShardInfo] = field(default_factory=list)
    generator: str | None = None  # training randomness (name/version); None: stores of older toolkits


@dataclass
class Manifest:
    """The index of one store: what it is (zoo, spec, layout, models) and which files hold it.

    Readers trust only what it lists; the writer saves it last and atomically after each shard.
    """

    zoo: str
    spec: dict[str, Any]
    layout: list[dict[str, Any]]
    model_ids: list[int]
    models_per_shard: int
    populations: dict[str, PopulationInfo] = field(default_factory=dict)
    origin: dict[str, Any] = field(default_factory=dict)  # empty for a store built here
    schema_version: int = SCHEMA_VERSION
    code_version: str = __version__
    models_sha256: str | None = None  # of models.parquet; absent in older stores
    train_chunk: int | None = None  # models per training chunk (None: models_per_shard, older stores)
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def zoo_spec(self) -> ZooSpec:
        return ZooSpec.from_dict(self.spec)

    @property
    def parameter_layout(self) -> ParameterLayout:
        return ParameterLayout.from_dict(self.layout)

    def shard_groups(self) -> list[list[int]]:
        """Model ids per shard: consecutive runs of ``models_per_shard`` models."""
        ids, n = self.model_ids, self.models_per_shard
        return [ids[i : i + n] for i in range(0, len(ids), n)]

    @property
    def chunk_size(self) -> int:
        """Models per training chunk: the engine's groups are formed inside these fixed runs of ids."""
        return self.train_chunk or self.models_per_shard

    def training_chunks(self) -> list[list[int]]:
        """Model ids per training chunk: consecutive runs of :attr:`chunk_size` models."""
        ids, n = self.model_ids, self.chunk_size
        return [ids[i : i + n] for i in range(0, len(ids), n)]

    def check(self) -> Manifest:
        """Refuse a manifest whose names or paths could lead outside its store, that lists a file,
        or a model within one population, twice, whose layout does not tile the flat vector or is
        not its architecture's, or whose population lacks an array its method stores; returns ``self``."""
        check_zoo_name(self.zoo)
        if self.models_per_shard < 1 or (self.train_chunk is not None and self.train_chunk < 1):
            raise StoreError(f"manifest of {self.zoo}: models_per_shard and train_chunk must be positive")
        self._check_layout()
        known, seen, registry = set(self.model_ids), set(), methods()
        for name, info in self.populations.items():
            if name not in registry:
                raise StoreError(f"manifest of {self.zoo} lists an unknown population {name!r}")
            required = registry[name].arrays
            if sorted(info.arrays) != sorted(required):
                raise StoreError(f"manifest of {self.zoo}: population {name} lists the arrays {info.arrays}; "
                                 f"its method stores {list(required)}")
            in_population: set[int] = set()
            for shard in info.shards:
                for rel, digest in ((shard.file, shard.sha256), (shard.states_file, shard.states_sha256)):
                    check_relative(rel, f"{name} shard entry")
                    if rel in seen:
                        raise StoreError(f"manifest of {self.zoo} lists {rel} twice; refusing the store")
                    seen.add(rel)
                    if not isinstance(digest, str) or len(digest) != SHA256:
                        raise StoreError(f"manifest of {self.zoo}: {rel} has no valid sha256")
                ids = set(shard.model_ids)
                if not ids <= known or ids & in_population or len(ids) != len(shard.model_ids):
                    raise StoreError(f"manifest of {self.zoo}: shard {shard.file} lists models that are not "
                                     f"the store's, or that another {name} shard holds")
                in_population |= ids
        return self

    def _check_layout(self) -> None:
        """The layout must tile the flat vector and be the one the spec's architecture has. (Shards
        pin the rest: a layout changed whole would no longer match their packing digest.)"""
        try:
            layout, spec = self.parameter_layout, self.zoo_spec
            # the input channels as the layout says (as ZooStore.model does): no dataset reader is loaded
            channels = layout.entries[0].shape[1] if len(layout.entries[0].shape) > 1 else 0
            expected = ParameterLayout.from_module(build_model(spec.architecture, channels, "tanh"))
        except (ValueError, TypeError, KeyError, AttributeError, RuntimeError, ZooError) as exc:
            raise StoreError(f"manifest of {self.zoo}: its spec or layout is unreadable ({exc})") from None
        if layout != expected:
            raise StoreError(f"manifest of {self.zoo}: its layout is not that of {spec.architecture} "
                             f"({layout.num_params} parameters; the architecture has {expected.num_params})")

    def packing_digest(self, population: str) -> str:
        """sha256 of what a shard of ``population`` was packed for: zoo, spec (dataset, architecture,
        VD variant and threshold...; not the file it was read from), layout, levels, epochs and arrays.
        The writer records it in each shard; readers compare it on the shard's first open, so a
        manifest changed after packing is refused even where its own checks pass."""
        info = self.populations[population]
        spec = {k: v for k, v in self.spec.items() if k != "source"}  # a moved spec file may resume
        part = {"zoo": self.zoo, "spec": spec, "layout": self.layout, "population": population,
                "levels": [float(x) for x in info.levels], "epochs": int(info.epochs), "arrays": list(info.arrays)}
        return hashlib.sha256(json.dumps(part, sort_keys=True).encode()).hexdigest()

    def save(self, zoo_dir: Path) -> None:
        atomic_write_text(Path(zoo_dir) / MANIFEST, json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, zoo_dir: Path) -> Manifest:
        path = Path(zoo_dir) / MANIFEST
        if not path.exists():
            raise StoreError(f"no store at {zoo_dir}: {MANIFEST} is missing (build it with zoo-build or download it)")
        with open_regular(path) as fh:  # a FIFO or device would block or never end
            text = fh.read(MAX_MANIFEST_BYTES + 1)
        if len(text) > MAX_MANIFEST_BYTES:
            raise StoreError(f"{path} is larger than {MAX_MANIFEST_BYTES >> 20} MiB: not a manifest of this toolkit")
        raw = parse_json(text, f"{path} is corrupt")
        if not isinstance(raw, dict):
            kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(raw), "a number")
            raise StoreError(f"{path} is corrupt: it holds {kind}, not a manifest object")
        if raw.get("schema_version") not in READABLE_VERSIONS:
            raise StoreError(
                f"{path} has schema version {raw.get('schema_version')}; "
                f"this toolkit reads versions {', '.join(map(str, READABLE_VERSIONS))}"
            )
        try:
            pops = {
                name: PopulationInfo(**{**p, "shards": [ShardInfo(**s) for s in p["shards"]]})
                for name, p in raw.pop("populations").items()
            }
            return cls(**raw, populations=pops).check()
        except (TypeError, KeyError, AttributeError) as exc:
            raise StoreError(f"{path} is corrupt ({type(exc).__name__}: {exc})") from None
