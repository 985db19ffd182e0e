"""The "vd" recipe: sparse variational-dropout training from a given (original) state."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..architectures import build_model
from ..errors import ZooSpecError
from ..layout import ParameterLayout
from ..sparsify.variational import DEFAULT_THRESHOLD, VariationalNet, flat_state, to_variational
from .jobs import TrainJob


class VDRecipe:
    """Converts the job's start state to VD layers and minimises the negative ELBO per sample.

    Job options: ``threshold`` (log_alpha at which a weight is dropped, default 3),
    ``kl_warmup_epochs`` (linear KL warm-up, default 0 = full KL from the first epoch) and
    ``kl_objective`` ("elbo", default, or "original": see :meth:`VariationalNet.kl_factor`).
    """

    def build(self, job: TrainJob, channels: int) -> tuple[nn.Module, torch.Generator]:
        if job.initial is None:
            raise ZooSpecError(f"VD job for model {job.key.model_id} needs a start state (an original's)")
        c = job.config
        plain = build_model(job.architecture, channels, c.activation, c.dropout)
        ParameterLayout.from_module(plain).load_into(plain, job.initial)
        order = torch.Generator().manual_seed(int(job.seed))
        model = to_variational(
            plain,
            threshold=float(job.options.get("threshold", DEFAULT_THRESHOLD)),
            kl_warmup_epochs=int(job.options.get("kl_warmup_epochs", 0)),
            kl_objective=str(job.options.get("kl_objective", "elbo")),
        )
        return model, order

    def loss(self, model: VariationalNet, logits, y, n_train: int, epoch: int) -> torch.Tensor:
        return model.objective(logits, y, n_train, epoch)

    def after_step(self, model, job):
        pass

    def state(self, model: VariationalNet) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return flat_state(model)
