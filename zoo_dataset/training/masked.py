"""The "masked" recipe: fine-tuning a pruned CNN whose mask never changes.

Pruned weights must stay exactly 0.0 and no optimizer state may move them. Two mechanisms:

- a gradient hook multiplies each parameter's gradient by its mask, so a pruned entry's gradient
  is 0 before the optimizer sees it. With the weight also 0, L2 weight decay adds 0, SGD momentum
  stays 0 and Adam's moments stay 0, so the optimizer's update of that entry is exactly 0;
- ``after_step`` re-applies the mask to the weights, an invariant that also holds for engines
  that compute gradients without module hooks (e.g. ``torch.func``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..architectures import build_model
from ..errors import ZooSpecError
from ..layout import ParameterLayout
from .jobs import TrainJob


class MaskedNet(nn.Module):
    """A plain CNN (``layout_module``) plus its fixed keep-mask (True = kept).

    ``keep`` is the flat mask as stored; each weight also gets its mask as a float buffer of the
    weight's shape (``keep_conv1_weight``...), so that masking costs one multiply per step and
    follows the model across devices. Biases are never pruned and get no mask.
    """

    def __init__(self, plain: nn.Module, keep: np.ndarray):
        super().__init__()
        self.layout_module = plain
        self.layout = ParameterLayout.from_module(plain)
        self.register_buffer("keep", torch.as_tensor(np.asarray(keep, dtype=bool)).clone())
        params = dict(plain.named_parameters())
        self.masked = {}  # parameter name -> buffer name
        for entry in self.layout.weight_entries():
            buffer = "keep_" + entry.name.replace(".", "_")
            self.register_buffer(buffer, self.keep[entry.slice].reshape(entry.shape).float())
            self.masked[entry.name] = buffer
            params[entry.name].register_hook(lambda grad, buffer=buffer: grad * getattr(self, buffer))
        self.apply_mask()

    def param_masks(self) -> dict[str, torch.Tensor]:
        """The keep-mask of each pruned parameter (the weights), shaped like it."""
        return {name: getattr(self, buffer).bool() for name, buffer in self.masked.items()}

    @torch.no_grad()
    def apply_mask(self) -> None:
        params = dict(self.layout_module.named_parameters())
        for name, buffer in self.masked.items():
            params[name].mul_(getattr(self, buffer))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layout_module(x)


class MaskedRecipe:
    """Cross-entropy fine-tuning of ``job.initial`` under the fixed keep-mask ``job.mask``."""

    def build(self, job: TrainJob, channels: int) -> tuple[nn.Module, torch.Generator]:
        if job.initial is None or job.mask is None:
            raise ZooSpecError(f"masked job for model {job.key.model_id} needs a start state and a mask")
        c = job.config
        plain = build_model(job.architecture, channels, c.activation, c.dropout)
        ParameterLayout.from_module(plain).load_into(plain, job.initial)
        return MaskedNet(plain, job.mask), torch.Generator().manual_seed(int(job.seed))

    def loss(self, model, logits, y, n_train, epoch):
        return nn.functional.cross_entropy(logits, y)

    def after_step(self, model: MaskedNet, job: TrainJob) -> None:
        model.apply_mask()

    def state(self, model: MaskedNet) -> tuple[np.ndarray, np.ndarray, None]:
        weights = model.layout.flatten_module(model.layout_module).numpy()
        return weights, model.keep.cpu().numpy().copy(), None
