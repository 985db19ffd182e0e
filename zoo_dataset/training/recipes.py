"""Recipes: how one kind of job builds its model, computes its loss and reports its state.

The reference trainer and the population engine share recipes by name, so a new kind of twin
(a new sparsifier) only adds a recipe.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..architectures import build_model, seeded_model
from ..layout import ParameterLayout
from .jobs import TrainJob
from .masked import MaskedRecipe
from .vd_recipe import VDRecipe

SGD_MOMENTUM = 0.9


class Recipe(Protocol):
    def build(self, job: TrainJob, channels: int) -> tuple[nn.Module, torch.Generator]:
        """The model at epoch 0 (on CPU) and the generator that orders its training data."""

    def loss(self, model: nn.Module, logits: torch.Tensor, y: torch.Tensor, n_train: int, epoch: int) -> torch.Tensor:
        """The training objective for one batch (``epoch`` counts from 1)."""

    def after_step(self, model: nn.Module, job: TrainJob) -> None:
        """Called after every optimizer step (e.g. to keep pruned weights at zero)."""

    def state(self, model: nn.Module) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """(flat weights, keep-mask or None, log_alpha or None) in the plain layout."""


def make_optimizer(name: str, params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """The zoos' optimizers: Adam, or SGD with momentum 0.9, both with L2 weight decay."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=SGD_MOMENTUM, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}")


def seeded_generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def plain_model(job: TrainJob, channels: int) -> tuple[nn.Module, torch.Generator]:
    """A plain CNN for ``job`` and its data-order generator.

    From scratch, init and data order follow the model's seed as in the original zoos; from a
    given state (twins), the order follows the job's own seed.
    """
    c = job.config
    if job.initial is None:
        return seeded_model(job.architecture, channels, c.activation, c.dropout, c.init, c.seed)
    model = build_model(job.architecture, channels, c.activation, c.dropout)
    ParameterLayout.from_module(model).load_into(model, job.initial)
    return model, seeded_generator(job.seed)


class PlainRecipe:
    """Original training: cross-entropy on a plain CNN."""

    def build(self, job: TrainJob, channels: int) -> tuple[nn.Module, torch.Generator]:
        return plain_model(job, channels)

    def loss(self, model, logits, y, n_train, epoch):
        return F.cross_entropy(logits, y)

    def after_step(self, model, job):
        pass

    def state(self, model):
        return ParameterLayout.from_module(model).flatten_module(model).numpy(), None, None


RECIPES: dict[str, Recipe] = {"plain": PlainRecipe(), "masked": MaskedRecipe(), "vd": VDRecipe()}
