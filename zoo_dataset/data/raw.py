"""Raw images as distributed (uint8, official splits) and their turn into a zoo's inputs.

Every reader (file formats and the Hub) produces :class:`RawImages`; :func:`prepare` then applies
what the original Model Zoos applied: the seed-42 train subset of ``random_split``, greyscale /
center crop / resize on 8-bit images (as PIL did), ``ToTensor`` scaling and ``Normalize``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import DataFormatError
from .base import ImageData
from .transforms import center_crop, normalize, resize, to_greyscale

SPLIT_SEED = 42
CHUNK = 8192  # images preprocessed at a time, to bound float memory on SVHN-sized data


@dataclass
class RawImages:
    """Official train and test splits: uint8 images [N, C, H, W] and int64 labels in [0, classes)."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    origin: str  # files or hub id, for messages and metadata

    def check(self, channels: int, num_classes: int = 10) -> RawImages:
        """Raise DataFormatError unless shapes, counts, dtypes and label ranges are consistent."""
        for split, x, y in (("train", self.train_x, self.train_y), ("test", self.test_x, self.test_y)):
            if x.ndim != 4 or x.shape[1] != channels:
                raise DataFormatError(f"{self.origin}: {split} images have shape {x.shape}, "
                                      f"expected [N, {channels}, H, W]")
            if len(x) != len(y) or len(x) == 0:
                raise DataFormatError(f"{self.origin}: {split} split has {len(x)} images but {len(y)} labels")
            if y.min() < 0 or y.max() >= num_classes:
                raise DataFormatError(f"{self.origin}: {split} labels out of range "
                                      f"[{int(y.min())}, {int(y.max())}], expected 0..{num_classes - 1}")
        return self


@dataclass(frozen=True)
class Preprocessing:
    """One dataset's original pipeline: the official train split sizes and the transforms."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    official_train: int  # size of the official train split
    zoo_train: int  # size of the train part of the originals' random_split (seed 42)
    greyscale: bool = False  # PIL's luma, rounded to 8 bits (the Model Zoos)
    channel_mean: bool = False  # greyscale as the plain mean of the channels, unrounded (the Small CNN Zoo)
    crop: bool = False  # center crop (instead of resize) to the input size


def train_subset(n: int, prep: Preprocessing) -> torch.Tensor:
    """Indices of the originals' train part: ``random_split(range(n), [train, val], seed 42)[0]``.

    For a train split of another size than the official one (tiny test files, a custom cut), the
    same fraction is kept.
    """
    if prep.zoo_train == prep.official_train:  # the whole split, in file order (the Small CNN Zoo's)
        return torch.arange(n)
    n_train = prep.zoo_train if n == prep.official_train else round(n * prep.zoo_train / prep.official_train)
    return torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED))[:n_train]


def transform(images: np.ndarray, size: int, prep: Preprocessing) -> torch.Tensor:
    """uint8 [N, C, H, W] to the float inputs of the zoo (greyscale, crop/resize, scale, normalize)."""
    chunks = []
    for start in range(0, len(images), CHUNK):
        x = torch.from_numpy(np.array(images[start : start + CHUNK])).float()
        if prep.greyscale:
            x = to_greyscale(x).round()  # PIL's convert("L") yields 8-bit values
        if prep.channel_mean:
            x = x.mean(dim=1, keepdim=True)  # tf.math.reduce_mean over channels, in float
        if prep.crop:
            x = center_crop(x, size)
        elif x.shape[-1] != size or x.shape[-2] != size:
            x = resize(x, size).round().clamp(0, 255)  # PIL resizes 8-bit images
        chunks.append(x / 255.0)
    return torch.cat(chunks)


def prepare(name: str, raw: RawImages, size: int, prep: Preprocessing) -> ImageData:
    """The ImageData a zoo trains on, from checked raw images."""
    keep = train_subset(len(raw.train_x), prep).numpy()
    train_x = transform(raw.train_x[keep], size, prep)
    test_x = transform(raw.test_x, size, prep)
    train_x, test_x = normalize(train_x, test_x, prep.mean, prep.std)
    return ImageData(
        name=name,
        train_x=train_x.contiguous(),
        train_y=torch.from_numpy(raw.train_y[keep].astype(np.int64)),
        test_x=test_x.contiguous(),
        test_y=torch.from_numpy(raw.test_y.astype(np.int64)),
        meta={"origin": raw.origin, "official_train": len(raw.train_x), "train_subset_seed": SPLIT_SEED,
              "mean": prep.mean, "std": prep.std},
    )
