"""The one interface every image dataset source implements."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import platformdirs
import torch

DATA_DIR_ENV = "ZOO_TWINS_DATA"


def default_data_dir() -> Path:
    """``$ZOO_TWINS_DATA``, else ``data/`` in the platform's user cache folder for zoo_twins
    (``platformdirs``: ``$XDG_CACHE_HOME/zoo_twins`` or ``~/.cache/zoo_twins`` on Linux,
    ``~/Library/Caches/zoo_twins`` on macOS, ``%LOCALAPPDATA%\\zoo_twins\\Cache`` on Windows)."""
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV])
    return platformdirs.user_cache_path("zoo_twins", appauthor=False) / "data"


@dataclass
class ImageData:
    """Train and test images, preprocessed to the architecture's input (N, C, H, W) float32."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int = 10
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train_x.shape[-1])


class DataSource(Protocol):
    """A dataset in one distribution format."""

    name: str
    channels: int  # channels the zoos use (after any greyscale conversion)
    native_size: int  # side of the distributed images (what an architecture without a fixed input size gets)

    def is_available(self, data_dir: Path | None = None) -> bool:
        """True when :meth:`load` can work without the network."""

    def load(self, image_size: int, data_dir: Path | None = None) -> ImageData:
        """Read, check and preprocess the data; raises DataUnavailableError / DataFormatError."""
