"""MNIST and Fashion-MNIST: IDX files (``train-images-idx3-ubyte`` ...), gzipped or not."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import DataFormatError
from .files import find_file, find_folder, read_bytes
from .raw import RawImages

UBYTE = 0x08
STEMS = {
    "train_x": ("train-images-idx3-ubyte", 3),
    "train_y": ("train-labels-idx1-ubyte", 1),
    "test_x": ("t10k-images-idx3-ubyte", 3),
    "test_y": ("t10k-labels-idx1-ubyte", 1),
}


def _names(stem: str) -> tuple[str, str]:
    return (f"{stem}.gz", stem)


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An unsigned-byte IDX array; the magic number, rank and byte count are checked."""
    data = read_bytes(path)
    if len(data) < 4 + 4 * ndim:
        raise DataFormatError(f"{path}: truncated IDX header ({len(data)} bytes)")
    zero, dtype, rank = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != UBYTE or rank != ndim:
        raise DataFormatError(f"{path}: bad IDX magic number 0x{data[:4].hex()}, expected "
                              f"0x0000{UBYTE:02x}{ndim:02x} (unsigned bytes, {ndim} dimensions)")
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataFormatError(f"{path}: truncated IDX file: header says {dims}, found {body.size} of "
                              f"{int(np.prod(dims))} bytes")
    return body.reshape(dims)


class IdxReader:
    """The four IDX files of MNIST or Fashion-MNIST (torchvision's ``raw/`` folder also works)."""

    files = tuple(f"{stem}[.gz]" for stem, _ in STEMS.values())
    subfolders = ("raw", "MNIST/raw", "FashionMNIST/raw")

    def locate(self, folders: Sequence[Path]) -> Path | None:
        return find_folder(folders, [_names(stem) for stem, _ in STEMS.values()])

    def read(self, folder: Path) -> RawImages:
        arrays = {}
        for key, (stem, ndim) in STEMS.items():
            arrays[key] = read_idx(find_file(folder, _names(stem)), ndim)
        return RawImages(
            train_x=arrays["train_x"][:, None], train_y=arrays["train_y"].astype(np.int64),
            test_x=arrays["test_x"][:, None], test_y=arrays["test_y"].astype(np.int64), origin=str(folder),
        )
