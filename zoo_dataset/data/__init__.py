"""Image data sources: one small class per dataset format, all behind :class:`DataSource`."""

from __future__ import annotations

from pathlib import Path

from ..errors import DataUnavailableError
from .base import DATA_DIR_ENV, DataSource, ImageData, default_data_dir
from .catalog import IMAGE_SOURCES
from .digits import DigitsSource

SOURCES: dict[str, DataSource] = {"digits": DigitsSource(), **IMAGE_SOURCES}


def get_source(name: str) -> DataSource:
    if name not in SOURCES:
        raise DataUnavailableError(
            f"no reader for dataset {name!r} in this version; known datasets: {', '.join(SOURCES)}"
        )
    return SOURCES[name]


def load_dataset(name: str, image_size: int, data_dir: Path | str | None = None) -> ImageData:
    """Load a dataset by name, preprocessed to ``image_size`` (28 for CNN-s, 32 for CNN-l)."""
    return get_source(name).load(image_size, Path(data_dir) if data_dir else None)


def is_available(name: str, data_dir: Path | str | None = None) -> bool:
    return name in SOURCES and SOURCES[name].is_available(Path(data_dir) if data_dir else None)


__all__ = ["DATA_DIR_ENV", "DataSource", "ImageData", "SOURCES", "default_data_dir", "get_source",
           "is_available", "load_dataset"]
