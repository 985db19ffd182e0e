"""The embedded default: scikit-learn's handwritten digits (1797 real 8x8 greyscale scans).

They ship inside the scikit-learn wheel, so the demo zoo builds on a machine with no network.
Images are scaled to [0, 1], upsampled to the architecture's input size and standardised with
the training split's mean and std. The train/test split is fixed (stratified, seed 42, 20 % test).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .base import ImageData
from .transforms import normalize, resize

TEST_FRACTION = 0.2
SPLIT_SEED = 42


class DigitsSource:
    name = "digits"
    channels = 1
    native_size = 8

    def is_available(self, data_dir: Path | None = None) -> bool:
        return True

    def load(self, image_size: int, data_dir: Path | None = None) -> ImageData:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        images = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)
        labels = torch.from_numpy(digits.target.astype(np.int64))
        train_idx, test_idx = train_test_split(
            np.arange(len(labels)), test_size=TEST_FRACTION, stratify=digits.target, random_state=SPLIT_SEED
        )
        train_x = resize(images[train_idx], image_size)
        test_x = resize(images[test_idx], image_size)
        mean, std = float(train_x.mean()), float(train_x.std())
        train_x, test_x = normalize(train_x, test_x, (mean,), (std,))
        return ImageData(
            name=self.name,
            train_x=train_x.contiguous(),
            train_y=labels[train_idx],
            test_x=test_x.contiguous(),
            test_y=labels[test_idx],
            meta={"source": "sklearn.datasets.load_digits", "mean": mean, "std": std},
        )
