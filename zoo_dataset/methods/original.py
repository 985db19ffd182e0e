"""The original population: every model trained from its generating factors."""

from __future__ import annotations

import torch
from torch import nn

from ..architectures import seeded_model
from ..errors import ZooSpecError
from ..jobs import TrainJob, UnitKey
from ..layout import ParameterLayout
from ..population_hooks import PopulationHooks
from ..specs import PUBLISHED, ModelConfig, ZooSpec
from .base import Method, StartStates


class Original(Method):
    """Cross-entropy training from the seed's initialisation, as the original zoos did."""

    name = "original"
    label = "original"
    description = "the original models, trained from their generating factors"
    requires = None
    order = 0

    def epochs(self, spec: ZooSpec) -> int:
        return spec.epochs

    def jobs(self, spec: ZooSpec, keys: list[UnitKey], configs: dict[int, ModelConfig], starts: StartStates,
             layout: ParameterLayout) -> list[TrainJob]:
        if spec.variant == PUBLISHED and keys:
            raise ZooSpecError(published_only(spec.name))
        return [
            TrainJob(key=k, config=configs[k.model_id], architecture=spec.architecture, method=self.name,
                     epochs=spec.epochs, lr=configs[k.model_id].lr, batch_size=spec.batch_size,
                     seed=configs[k.model_id].seed)
            for k in keys
        ]

    def build(self, job: TrainJob, channels: int) -> nn.Module:
        """From scratch, the init follows the model's seed as in the original zoos."""
        if job.initial is not None:
            return super().build(job, channels)
        c = job.config
        return seeded_model(job.architecture, channels, c.activation, c.dropout, c.init, c.seed)

    def population_hooks(self, models: list[nn.Module], jobs: list[TrainJob],
                         device: torch.device) -> PopulationHooks:
        return PopulationHooks()


def published_only(zoo: str) -> str:
    """Why the original stage refuses a published zoo's models: their factors are not a recipe."""
    return (f"zoo {zoo} is published models only (its factors come with its checkpoints); ingest them with "
            f"`zoo-build --zoo {zoo} --from-original DIR`, then build its twins")


METHOD = Original()
