"""Export twin pairs to a Hugging Face ``datasets.Dataset`` (tables + flat weights) for that API's users."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .datasets import ZooTwinDataset


def to_hf_dataset(
    zoo: str | Path,
    method: str = "mp",
    level: float | None = None,
    split: str | None = "train",
    epoch: int = -1,
    root: str | Path | None = None,
    cache_dir: str | Path | None = None,
):
    """One row per (model, twin): ids, factors, both states' properties as columns, flat weight lists.

    Rows are written through ``datasets``' Arrow cache (``cache_dir``, default the ``datasets``
    cache), so zoos larger than memory export too; ``.with_format("torch")`` gives tensors back.
    """
    from datasets import Dataset  # deferred: importing datasets is slow and most users do not need it

    pairs = ZooTwinDataset(zoo, method=method, level=level, split=split, epoch=epoch, root=root)
    return Dataset.from_generator(
        _rows, gen_kwargs={"pairs": pairs}, cache_dir=str(cache_dir) if cache_dir else None
    )


def _rows(pairs: ZooTwinDataset) -> Iterator[dict[str, Any]]:
    for item in pairs:
        row: dict[str, Any] = {
            "model_id": int(item["model_id"]),
            "level": float(item["level"]),
            "epoch": int(item["epoch"]),
            **item["factors"],
        }
        for side in ("original", "twin"):
            row.update({f"{side}_{k}": float(v) for k, v in item[f"{side}_properties"].items()})
        for array in ("original", "twin", "mask", "log_alpha"):
            if array in item:
                row[array] = item[array].tolist()
        yield row
