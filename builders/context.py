"""What every stage of one build shares: the spec, the store, the data, the trainer."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from zoo_dataset.data import ImageData, load_dataset
from zoo_dataset.metrics import evaluate
from zoo_dataset.model_layout import input_size
from zoo_dataset.specs import ModelConfig, ZooSpec
from zoo_dataset.store import StoreWriter, ZooStore
from zoo_dataset.training import Trainer
from zoo_dataset.training.engine import PopulationEngine


@dataclass
class BuildContext:
    """What the stages of one build share; the data is loaded once, on first use."""

    spec: ZooSpec
    store: StoreWriter
    data_dir: Path | None = None
    trainer: Trainer = field(default_factory=PopulationEngine)
    progress: bool = True

    @cached_property
    def data(self) -> ImageData:
        return load_dataset(self.spec.dataset, input_size(self.spec), self.data_dir)

    def reader(self) -> ZooStore:
        """A reader over what the store holds now (re-created so it sees newly packed shards)."""
        return ZooStore(self.store.zoo_dir)

    @cached_property
    def model_configs(self) -> dict[int, ModelConfig]:
        """Each model's generating factors as the store records them (an ingested zoo's own seeds);
        read once per build: no stage changes the models table."""
        return self.reader().model_configs()

    def final_states(self, population: str, model_ids: list[int]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """Last state of each model in ``population`` and its test predictions (for agreement)."""
        reader = self.reader()
        out = {}
        for model_id in model_ids:
            model = reader.model(population, model_id, epoch=-1)
            _, _, predictions = evaluate(model, self.data.test_x, self.data.test_y)
            out[model_id] = (reader.weights(population, model_id, epoch=-1), predictions)
        reader.close()
        return out
