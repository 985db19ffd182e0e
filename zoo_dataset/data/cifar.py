"""CIFAR-10 python batches (``cifar-10-batches-py/data_batch_1..5``, ``test_batch``).

The official format is a pickle. We read it with an unpickler that resolves only the globals a
numpy array needs, so a crafted file cannot run code: anything else raises DataFormatError.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataFormatError
from .files import find_folder, read_bytes
from .raw import RawImages

TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST = "test_batch"
SIDE = 32
ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),  # protocol-2 pickles written by Python 3 encode bytes this way
}


class ArrayOnlyUnpickler(pickle.Unpickler):
    """Plain containers, numbers, strings and numpy arrays; no other class or function."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch")


def load_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images [N, 3, 32, 32] uint8 and labels of one batch file."""
    try:
        batch = ArrayOnlyUnpickler(io.BytesIO(read_bytes(path)), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise DataFormatError(f"{path}: not a CIFAR-10 python batch ({type(exc).__name__}: {exc})") from exc
    if not isinstance(batch, dict):
        raise DataFormatError(f"{path}: a CIFAR-10 batch is a dict, found {type(batch).__name__}")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    data, labels = batch.get("data"), batch.get("labels")
    shape_ok = isinstance(data, np.ndarray) and data.ndim == 2 and data.shape[1] == 3 * SIDE**2
    if not shape_ok or data.dtype != np.uint8:
        raise DataFormatError(f"{path}: 'data' must be a uint8 array [N, 3072]")
    labels = np.asarray(labels if labels is not None else [], dtype=np.int64)
    if len(labels) != len(data):
        raise DataFormatError(f"{path}: {len(data)} images but {len(labels)} labels")
    return data.reshape(-1, 3, SIDE, SIDE), labels


class CifarReader:
    files = (*TRAIN, TEST)
    subfolders = ("cifar-10-batches-py",)

    def locate(self, folders: Sequence[Path]) -> Path | None:
        return find_folder(folders, [(name,) for name in self.files])

    def read(self, folder: Path) -> RawImages:
        train = [load_batch(folder / name) for name in TRAIN]
        test_x, test_y = load_batch(folder / TEST)
        return RawImages(np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]),
                         test_x, test_y, origin=str(folder))
