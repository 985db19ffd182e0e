"""Where dataset files are looked for, how they are opened, and the one-line 'missing' error."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
from collections.abc import Sequence
from pathlib import Path

from ..errors import DataFormatError, DataUnavailableError
from ..inputs import read_regular
from .base import DATA_DIR_ENV, default_data_dir

SOURCE_ENV = "ZOO_TWINS_DATA_SOURCE"  # auto (files, else the Hub) | files | hub
SOURCE_MODES = ("auto", "files", "hub")
MAX_DATA_FILE_BYTES = 1 << 30  # the largest file read (STL-10's test_X.bin) is 207 MB


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


def read_bytes(path: Path, limit: int = MAX_DATA_FILE_BYTES) -> bytes:
    """A file's content, decompressed when it is gzip, bzip2 or xz (judged by its magic bytes); a
    regular file of at most ``limit`` bytes, and at most ``limit`` bytes once decompressed (a FIFO,
    a device or a decompression bomb is a DataFormatError)."""
    data = read_regular(path, limit, "dataset file", DataFormatError)
    openers = {b"\x1f\x8b": lambda buffer: gzip.GzipFile(fileobj=buffer), b"BZh": bz2.BZ2File,
               b"\xfd7zXZ": lzma.LZMAFile}
    for magic, opener in openers.items():
        if data.startswith(magic):
            try:
                with opener(io.BytesIO(data)) as fh:
                    data = fh.read(limit + 1)
            except (OSError, EOFError, ValueError, lzma.LZMAError) as exc:
                raise DataFormatError(f"{path}: corrupt or truncated compressed file ({exc})") from exc
            if len(data) > limit:
                raise DataFormatError(f"{path} decompresses to more than {limit >> 20} MiB: not a dataset file")
            return data
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
