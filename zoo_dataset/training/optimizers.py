"""The zoos' optimizers, shared by the per-model reference and the batched optimizer."""

from __future__ import annotations

from collections.abc import Iterable

import torch

SGD_MOMENTUM = 0.9


def make_optimizer(name: str, params: Iterable[torch.Tensor], lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """The zoos' optimizers: Adam, or SGD with momentum 0.9, both with L2 weight decay."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=SGD_MOMENTUM, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}")
