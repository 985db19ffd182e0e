"""USPS: the LIBSVM files ``usps.bz2`` / ``usps.t.bz2`` (torchvision's source) or one HDF5 ``usps.h5``.

LIBSVM rows hold a label 1..10 and 256 pixel values in [-1, 1]; like torchvision we map labels to
0..9 and pixels to uint8 with ``((v + 1) / 2 * 255)`` truncated. The HDF5 variant (Kaggle's
``usps.h5``: groups ``train``/``test`` with ``data`` [N, 256] in [0, 1] and ``target`` 0..9) is
scaled by 255 and rounded.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from ..errors import DataFormatError
from ..hdf5_files import hdf5_errors
from .files import find_file, find_folder, read_bytes
from .raw import RawImages

LIBSVM = (("usps.bz2", "usps"), ("usps.t.bz2", "usps.t"))
HDF5 = ("usps.h5",)
SIDE = 16


def read_libsvm(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images [N, 1, 16, 16] uint8 and labels 0..9 from one LIBSVM file (bz2 or plain)."""
    from sklearn.datasets import load_svmlight_file

    try:
        x, y = load_svmlight_file(io.BytesIO(read_bytes(path)), n_features=SIDE * SIDE)
    except ValueError as exc:
        raise DataFormatError(f"{path}: not a USPS LIBSVM file ({exc})") from exc
    pixels = x.toarray()
    if pixels.size and (pixels.min() < -1 or pixels.max() > 1):
        raise DataFormatError(f"{path}: pixel values outside [-1, 1]")
    labels = y.astype(np.int64)
    if len(labels) and (labels.min() < 1 or labels.max() > 10 or not np.array_equal(labels, y)):
        raise DataFormatError(f"{path}: labels out of range [{y.min()}, {y.max()}], expected integers 1..10")
    images = ((pixels + 1) / 2 * 255).astype(np.uint8).reshape(-1, 1, SIDE, SIDE)
    return images, labels - 1


def read_h5(path: Path) -> RawImages:
    with hdf5_errors(path, "USPS HDF5 file", DataFormatError, "it must hold train/test data and target"), \
            h5py.File(path, "r") as f:
        splits = {s: (f[s]["data"][()], f[s]["target"][()]) for s in ("train", "test")}
    out = {}
    for split, (data, target) in splits.items():
        if data.ndim != 2 or data.shape[1] != SIDE * SIDE or data.min() < 0 or data.max() > 1:
            raise DataFormatError(f"{path}: {split}/data must be [N, 256] values in [0, 1], got {data.shape}")
        images = np.round(data * 255).astype(np.uint8).reshape(-1, 1, SIDE, SIDE)
        out[split] = (images, target.astype(np.int64))
    return RawImages(*out["train"], *out["test"], origin=str(path))


class UspsReader:
    files = ("usps.bz2 + usps.t.bz2 (or usps.h5)",)
    subfolders = ()

    def locate(self, folders: Sequence[Path]) -> Path | None:
        return find_folder(folders, LIBSVM) or find_folder(folders, [HDF5])

    def read(self, folder: Path) -> RawImages:
        train, test = (find_file(folder, names) for names in LIBSVM)
        if train is None or test is None:
            return read_h5(folder / HDF5[0])
        return RawImages(*read_libsvm(train), *read_libsvm(test), origin=str(folder))
