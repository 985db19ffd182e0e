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
import math
import types
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from .. import __version__
from ..architectures import build_model
from ..errors import StoreError, ZooError
from ..inputs import parse_json
from ..layout import ParameterLayout
from ..methods import methods
from ..specs import ZooSpec
from .files import atomic_write_text, open_regular, regular_size, sha256_file
from .layout_on_disk import MODELS_TABLE
from .paths import check_relative, check_zoo_name

SCHEMA_VERSION = 2  # 2: every shard dataset is row-aligned (first axis = the shard's models)
READABLE_VERSIONS = (1, 2)  # 1: ``level`` was [levels]; `zoo-build --migrate` rewrites such shards
MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 64 << 20  # a 1000-model zoo's manifest is well under 1 MB
SHA256 = 64
HEX = frozenset("0123456789abcdef")
# field metadata (see _required_keys): a key a schema-2 manifest may lack, or may hold as null
OPTIONAL = {"optional": True, "nullable": True}
NULLABLE = {"nullable": True}
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
    states_bytes: int | None = None  # absent in schema-1 stores (written before it was recorded)

    @property
    def rows(self) -> int:
        return len(self.model_ids)


@dataclass
class FileEntry:
    """A file the manifest vouches for besides the shards (the card's files): its sha256 and size."""

    sha256: str
    bytes: int

    @classmethod
    def of(cls, path: Path) -> FileEntry:
        """The entry of the regular file at ``path`` as it is now."""
        return cls(sha256=sha256_file(path), bytes=regular_size(path))


@dataclass
class PopulationInfo:
    levels: list[float]
    epochs: int  # recorded states per unit = epochs + 1 (epoch 0 included)
    arrays: list[str]  # datasets in each shard: weights, masks, log_alpha
    status: Literal["partial", "complete"] = "partial"  # complete: every shard packed
    shards: list[ShardInfo] = field(default_factory=list)
    # training randomness (name/version); None: populations started by older toolkits
    generator: str | None = field(default=None, metadata=NULLABLE)


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
    models_sha256: str | None = None  # of models.parquet; absent in schema-1 stores
    train_chunk: int | None = None  # models per training chunk (None: models_per_shard, schema-1 stores)
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    # the files the dataset card offers (README.md, croissant.json, data/<config>/*.parquet), relative
    # path -> FileEntry, recorded by the card stage; None: no card yet, or a store of an older toolkit
    card_files: dict[str, FileEntry] | None = field(default=None, metadata=OPTIONAL)

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
        if len(set(self.model_ids)) != len(self.model_ids) or any(m < 0 for m in self.model_ids):
            raise StoreError(f"manifest of {self.zoo}: model_ids must be distinct non-negative ids")
        if self.models_sha256 is not None:
            _check_digest(self.zoo, MODELS_TABLE, self.models_sha256)
        self._check_layout()
        known, seen, registry = set(self.model_ids), {MANIFEST, MODELS_TABLE}, methods()
        for name, info in self.populations.items():
            if name not in registry:
                raise StoreError(f"manifest of {self.zoo} lists an unknown population {name!r}")
            if info.epochs < 0 or not all(0.0 <= level < 1.0 for level in info.levels):
                raise StoreError(f"manifest of {self.zoo}: population {name} has epochs {info.epochs} and levels "
                                 f"{info.levels}; epochs must be >= 0 and levels fractions in [0, 1)")
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
                    _check_digest(self.zoo, rel, digest)
                if shard.index < 0 or shard.bytes < 0 or (shard.states_bytes or 0) < 0:
                    raise StoreError(f"manifest of {self.zoo}: shard {shard.file} has a negative index or size")
                ids = set(shard.model_ids)
                if not ids <= known or ids & in_population or len(ids) != len(shard.model_ids):
                    raise StoreError(f"manifest of {self.zoo}: shard {shard.file} lists models that are not "
                                     f"the store's, or that another {name} shard holds")
                in_population |= ids
        for rel, entry in (self.card_files or {}).items():
            check_relative(rel, "card file entry")
            if rel in seen:
                raise StoreError(f"manifest of {self.zoo} lists {rel} as a card file too; refusing the store")
            _check_digest(self.zoo, rel, entry.sha256)
            if entry.bytes < 0:
                raise StoreError(f"manifest of {self.zoo}: card file {rel} has a negative size")
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
    def load(cls, zoo_dir: Path, complete: bool = True) -> Manifest:
        """The checked manifest of the store at ``zoo_dir``. ``complete=False`` (the migration only)
        accepts a manifest lacking keys its schema version requires, so that they can be recorded."""
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
        version = raw.get("schema_version")
        if type(version) is not int or version not in READABLE_VERSIONS:  # a JSON true is no version
            raise StoreError(
                f"{path} has schema version {json.dumps(version)}; "
                f"this toolkit reads versions {', '.join(map(str, READABLE_VERSIONS))}"
            )
        try:
            manifest = _parse(raw, cls, "", version if complete else 1)
        except ValueError as exc:
            raise StoreError(f"{path} is corrupt: {exc}") from None
        return manifest.check()


def _required_keys(cls: type, version: int) -> set[str]:
    """The keys a manifest of ``version`` must hold for ``cls`` (a manifest, population or shard):
    schema 1 those without a default; schema 2 every key the toolkit writes but the ``OPTIONAL``
    ones. A key whose absence would turn a check off (``models_sha256``, ``states_bytes``,
    ``origin``...) is thus never taken as "an older store" at schema 2."""
    return {f.name for f in fields(cls) if (f.default is MISSING and f.default_factory is MISSING)
            or (version >= 2 and not f.metadata.get("optional"))}


def _nullable(cls: type, version: int) -> set[str]:
    """The keys that may hold null: schema 1 any, schema 2 only those marked (a null
    ``models_sha256`` would turn its check off as its absence would)."""
    return {f.name for f in fields(cls) if version < 2 or f.metadata.get("nullable")}


def _parse(value: Any, hint: Any, where: str, version: int, nullable: bool = False) -> Any:
    """``value`` (parsed JSON) as the type ``hint`` of the manifest's dataclasses, or ValueError in
    one line naming the key: ``true`` is not a number, ``"bogus"`` not a status, a required key
    missing (:func:`_required_keys`) or null (:func:`_nullable`) is refused."""
    name = where or "the manifest"
    if is_dataclass(hint):
        if not isinstance(value, dict):
            raise ValueError(f"{name} is not an object")
        hints = get_type_hints(hint)
        unknown = sorted(set(value) - set(hints))
        missing = sorted(_required_keys(hint, version) - set(value))
        if missing:
            raise ValueError(f"{name} lacks {', '.join(missing)}, which schema {version} requires (a store of "
                             "an early toolkit: `zoo-build --migrate` records them)")
        if unknown:
            raise ValueError(f"{name} has the unknown key(s) {', '.join(unknown)}")
        nulls = _nullable(hint, version)
        return hint(**{key: _parse(item, hints[key], f"{where}.{key}".lstrip("."), version, key in nulls)
                       for key, item in value.items()})
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and nullable:
            return None
        return _parse(value, next(a for a in args if a is not type(None)), where, version)
    if origin is list and isinstance(value, list):
        return [_parse(item, args[0], f"{where}[{i}]", version) for i, item in enumerate(value)]
    if origin is dict and isinstance(value, dict):
        return {key: _parse(item, args[1], f"{where}.{key}", version) for key, item in value.items()}
    if _is(value, hint):
        return value
    expected = " or ".join(map(json.dumps, args)) if origin is Literal else getattr(hint, "__name__", str(hint))
    raise ValueError(f"{name} is {json.dumps(value)[:60]}, not {expected}")


def _is(value: Any, hint: Any) -> bool:
    """Whether a JSON scalar (or a free-form object) is of ``hint``; bool is no number here."""
    if hint is Any:
        return True
    if get_origin(hint) is Literal:
        return isinstance(value, str) and value in get_args(hint)
    if hint is float:
        return type(value) in (int, float) and math.isfinite(value)
    return type(value) is hint  # int, str: ``true`` is a bool, not an int


def _check_digest(zoo: str, relative: str, digest: str) -> None:
    if len(digest) != SHA256 or not set(digest) <= HEX:
        raise StoreError(f"manifest of {zoo}: {relative} has no valid sha256")
