"""STL-10 binaries (``stl10_binary/train_X.bin`` ...): uint8 images stored column-major, labels 1..10."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import DataFormatError
from .files import find_folder, read_bytes
from .raw import RawImages

SIDE = 96
IMAGE_BYTES = 3 * SIDE * SIDE
FILES = ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin")


def read_split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images [N, 3, 96, 96] uint8 (row-major) and labels 0..9 of the train or test split."""
    x_path, y_path = folder / f"{split}_X.bin", folder / f"{split}_y.bin"
    pixels = np.frombuffer(read_bytes(x_path), dtype=np.uint8)
    labels = np.frombuffer(read_bytes(y_path), dtype=np.uint8).astype(np.int64)
    if pixels.size % IMAGE_BYTES:
        raise DataFormatError(f"{x_path}: {pixels.size} bytes is not a whole number of 3x96x96 images "
                              "(truncated?)")
    images = pixels.reshape(-1, 3, SIDE, SIDE).transpose(0, 1, 3, 2)  # each channel is stored column-major
    if len(images) != len(labels):
        raise DataFormatError(f"{x_path}: {len(images)} images but {y_path.name} has {len(labels)} labels")
    if len(labels) and (labels.min() < 1 or labels.max() > 10):
        raise DataFormatError(f"{y_path}: labels out of range [{labels.min()}, {labels.max()}], "
                              "expected 1..10")
    return images, labels - 1


class Stl10Reader:
    files = FILES
    subfolders = ("stl10_binary",)

    def locate(self, folders: Sequence[Path]) -> Path | None:
        return find_folder(folders, [(name,) for name in FILES])

    def read(self, folder: Path) -> RawImages:
        return RawImages(*read_split(folder, "train"), *read_split(folder, "test"), origin=str(folder))
