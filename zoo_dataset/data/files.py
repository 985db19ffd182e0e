"""Where dataset files are looked for, how they are opened, and the one-line 'missing' error."""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
from collections.abc import Sequence
from pathlib import Path

from ..errors import DataFormatError, DataUnavailableError
from .base import DATA_DIR_ENV, default_data_dir

SOURCE_ENV = "ZOO_TWINS_DATA_SOURCE"  # auto (files, else the Hub) | files | hub
SOURCE_MODES = ("auto", "files", "hub")


def data_source_mode() -> str:
    mode = os.environ.get(SOURCE_ENV, "auto").strip().lower() or "auto"
    if mode not in SOURCE_MODES:
        raise DataUnavailableError(f"${SOURCE_ENV}={mode!r} is not one of {', '.join(SOURCE_MODES)}")
    return mode


def dataset_folder(dataset: str, data_dir: Path | None) -> Path:
    """``<data dir>/<dataset>``: the data dir is ``--data-dir``, else $ZOO_TWINS_DATA, else the cache."""
    return Path(data_dir or default_data_dir()).expanduser() / dataset


def candidate_folders(
    dataset: str, data_dir: Path | None, subfolders: Sequence[str] = (), torchvision: Sequence[str] = ()
) -> list[Path]:
    """The dataset folder, the sub-folders an unpacked official archive creates in it, and the
    folders torchvision's datasets keep under their ``root`` (so a data dir that is a torchvision
    root is found as it is: ``MNIST/raw``, ``cifar-10-batches-py``, ...; ``""`` is the root itself)."""
    base = dataset_folder(dataset, data_dir)
    root = base.parent
    return [base, *(base / s for s in subfolders), *(root / t for t in torchvision)]


def find_file(folder: Path, names: Sequence[str]) -> Path | None:
    """The first of ``names`` (e.g. ``x.gz`` then ``x``) present in ``folder``."""
    return next((folder / n for n in names if (folder / n).is_file()), None)


def find_folder(folders: Sequence[Path], required: Sequence[Sequence[str]]) -> Path | None:
    """The first folder holding one name of every group in ``required``."""
    return next((f for f in folders if all(find_file(f, names) for names in required)), None)


def read_bytes(path: Path) -> bytes:
    """A file's content, decompressed when it is gzip, bzip2 or xz (judged by its magic bytes)."""
    data = path.read_bytes()
    openers = {b"\x1f\x8b": gzip.decompress, b"BZh": bz2.decompress, b"\xfd7zXZ": lzma.decompress}
    for magic, decompress in openers.items():
        if data.startswith(magic):
            try:
                return decompress(data)
            except (OSError, EOFError, ValueError, lzma.LZMAError) as exc:
                raise DataFormatError(f"{path}: corrupt or truncated compressed file ({exc})") from exc
    return data


def missing_error(
    dataset: str, data_dir: Path | None, files: Sequence[str], url: str, hub_id: str
) -> DataUnavailableError:
    """One line: which files, where they were looked for, where they come from, how to provide them."""
    return DataUnavailableError(
        f"{dataset} data not found: expected {', '.join(files)} in {dataset_folder(dataset, data_dir)} "
        f"(official files: {url}); put them there, or pass --data-dir DIR / set ${DATA_DIR_ENV}=DIR with "
        f"the files in DIR/{dataset}/ or a torchvision root DIR, or set {SOURCE_ENV}=hub to load {hub_id} "
        "from the Hugging Face Hub"
    )
