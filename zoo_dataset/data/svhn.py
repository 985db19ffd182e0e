"""SVHN cropped digits: ``train_32x32.mat`` and ``test_32x32.mat`` (MATLAB v5, read with scipy)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.io

from ..errors import DataFormatError
from .files import find_folder
from .raw import RawImages

FILES = ("train_32x32.mat", "test_32x32.mat")


def read_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images [N, 3, 32, 32] uint8 and labels 0..9 (the file stores digit 0 as label 10)."""
    try:
        mat = scipy.io.loadmat(path, variable_names=["X", "y"])
    except Exception as exc:  # scipy raises ValueError, OSError, MatReadError... on malformed files
        raise DataFormatError(f"{path}: not a readable SVHN .mat file ({type(exc).__name__}: {exc})") from exc
    if "X" not in mat or "y" not in mat:
        raise DataFormatError(f"{path}: SVHN .mat file without the X and y variables")
    x, y = mat["X"], mat["y"].reshape(-1).astype(np.int64)
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.dtype != np.uint8:
        raise DataFormatError(f"{path}: X has shape {x.shape} {x.dtype}, expected 32x32x3xN uint8")
    if len(y) and (y.min() < 1 or y.max() > 10):
        raise DataFormatError(f"{path}: labels out of range [{y.min()}, {y.max()}], expected 1..10")
    return np.transpose(x, (3, 2, 0, 1)), np.where(y == 10, 0, y)


class SvhnReader:
    files = FILES
    subfolders = ()

    def locate(self, folders: Sequence[Path]) -> Path | None:
        return find_folder(folders, [(name,) for name in FILES])

    def read(self, folder: Path) -> RawImages:
        train_x, train_y = read_mat(folder / FILES[0])
        test_x, test_y = read_mat(folder / FILES[1])
        return RawImages(train_x, train_y, test_x, test_y, origin=str(folder))
