"""The Hugging Face Hub route: the same raw images through ``datasets.load_dataset``.

``datasets`` honours the HF cache (``HF_HOME`` / ``HF_DATASETS_CACHE``) and ``HF_HUB_OFFLINE=1``:
offline, a dataset loads only if it was prepared in that cache before.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from ..errors import DataFormatError, DataUnavailableError
from .raw import RawImages


@dataclass(frozen=True)
class HubEntry:
    repo: str  # e.g. "ylecun/mnist"
    config: str | None = None
    image: str = "image"
    label: str = "label"


def datasets_cache() -> Path:
    """Where ``datasets`` keeps prepared datasets (without importing it: ``--list`` stays fast)."""
    from huggingface_hub import constants

    return Path(os.environ.get("HF_DATASETS_CACHE", Path(constants.HF_HOME) / "datasets")).expanduser()


def is_cached(entry: HubEntry) -> bool:
    """True when ``datasets`` has prepared this dataset locally (so it loads with HF_HUB_OFFLINE=1)."""
    namespace, _, name = entry.repo.rpartition("/")
    folder = datasets_cache() / "___".join(p for p in (namespace, name) if p)
    return folder.is_dir() and any(folder.glob("*/*/*/dataset_info.json"))


HUB_PROBE_TIMEOUT_S = 3.0


def hub_unreachable_reason(timeout: float = HUB_PROBE_TIMEOUT_S) -> str | None:
    """Why the Hub cannot be reached from here (None when it can), found in at most ``timeout`` s.

    ``datasets`` itself retries for ~25 s and logs warnings before giving up on a machine without
    network; this check lets a missing dataset fail at once, as one line.
    """
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    endpoint = urlparse(constants.ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=timeout).close()
    except OSError as exc:
        return f"cannot connect to {endpoint.hostname}:{port} ({exc.strerror or type(exc).__name__})"
    return None


def to_nchw(images: np.ndarray, origin: str) -> np.ndarray:
    """Decoded images [N, H, W] or [N, H, W, C] to uint8 [N, C, H, W]."""
    if images.dtype == object or images.ndim not in (3, 4):
        raise DataFormatError(f"{origin}: images of mixed sizes or modes ({images.shape}, {images.dtype})")
    images = images[:, None] if images.ndim == 3 else images.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(images.astype(np.uint8))


def read_hub(entry: HubEntry, files_hint: str) -> RawImages:
    """Train and test splits from the Hub (or the HF cache); failures become one DataUnavailableError."""
    needs_hub = not (is_cached(entry) or Path(entry.repo).is_dir())  # a local folder loads like a repo
    if needs_hub and (reason := hub_unreachable_reason()):
        raise DataUnavailableError(f"{files_hint}; loading {entry.repo} from the Hugging Face Hub failed too "
                                   f"({reason}, and it is not prepared in the HF cache {datasets_cache()})")
    import datasets

    try:
        splits = datasets.load_dataset(entry.repo, entry.config)
    except Exception as exc:  # network, offline cache miss, unknown repo: all mean "not available"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataUnavailableError(f"{files_hint}; loading {entry.repo} from the Hugging Face Hub failed "
                                   f"too ({type(exc).__name__}: {reason})") from exc
    origin = f"hf://datasets/{entry.repo}" + (f" ({entry.config})" if entry.config else "")
    arrays = []
    for split in ("train", "test"):
        if split not in splits:
            raise DataFormatError(f"{origin}: no {split!r} split (found {', '.join(splits)})")
        table = splits[split].with_format("numpy")
        labels = np.asarray(table[entry.label], dtype=np.int64)
        arrays += [to_nchw(np.asarray(table[entry.image]), origin), labels]
    return RawImages(*arrays, origin=origin)
