"""Magnitude-pruning twins: each original's last state pruned at every level, then fine-tuned.

A unit is (model, level). Epoch 0 is the state right after pruning; the twin keeps the original's
model id, optimizer and weight decay and uses the spec's MP learning rate and epochs. The mask
is global unstructured L1 pruning over all weights (:mod:`zoo_dataset.sparsify.magnitude`); a
subclass changes :meth:`MagnitudePruning.mask` only (see ``mp_local``).

Pruned weights stay exactly 0.0 and no optimizer state moves them: each pruned entry's gradient
is zeroed before the optimizer sees it (with the weight also 0, L2 weight decay adds 0 and Adam's
and SGD's moments stay 0), and the mask is re-applied after every step, an invariant that also
holds for engines that compute gradients without module hooks.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..errors import ZooSpecError
from ..jobs import TrainJob, UnitKey
from ..layout import ParameterLayout
from ..population_hooks import PopulationHooks
from ..sparsify.magnitude import global_magnitude_mask
from ..specs import ModelConfig, ZooSpec
from .base import Method, RecordedState, StartStates, plain_from_state, twin_seed


class MaskedNet(nn.Module):
    """A plain CNN (``plain``) plus its fixed keep-mask (True = kept).

    ``keep`` is the flat mask as stored; each weight also gets its mask as a float buffer of the
    weight's shape (``keep_conv1_weight``...), so that masking costs one multiply per step and
    follows the model across devices. Biases are never pruned and get no mask.
    """

    def __init__(self, plain: nn.Module, keep: np.ndarray):
        super().__init__()
        self.plain = plain
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
        params = dict(self.plain.named_parameters())
        for name, buffer in self.masked.items():
            params[name].mul_(getattr(self, buffer))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.plain(x)


class MaskHooks(PopulationHooks):
    """The engine's form of masked fine-tuning: masked gradients, re-masked weights, the masks stored."""

    def __init__(self, keep: torch.Tensor, layout: ParameterLayout, device: torch.device):
        self.keep = keep.cpu().numpy().astype(bool)
        weights = torch.from_numpy(layout.weight_mask())
        self.keep_flat = (keep | ~weights).to(device, torch.float32)  # biases always train

    def project_gradients(self, net, grads: list[torch.Tensor]) -> None:
        grads[0].mul_(self.keep_flat)

    @torch.no_grad()
    def project(self, net) -> None:
        net.flat_params.mul_(self.keep_flat)

    def recorded(self, net) -> tuple[np.ndarray, None]:
        return self.keep, None


class MagnitudePruning(Method):
    """Global unstructured magnitude pruning at each level, then fine-tuning under the fixed mask."""

    name = "mp"
    label = "MP (global)"
    description = "magnitude-pruning twins: global unstructured pruning of each original's last state, then fine-tuning"
    arrays = ("weights", "masks")
    order = 10

    def levels(self, spec: ZooSpec) -> list[float]:
        return list(spec.mp.levels)

    def epochs(self, spec: ZooSpec) -> int:
        return spec.mp.epochs

    def mask(self, flat: np.ndarray, layout: ParameterLayout, level: float) -> np.ndarray:
        """Keep-mask [P] (True = kept) of one start state at ``level``; biases always kept."""
        return global_magnitude_mask(flat, layout, level)

    def jobs(self, spec: ZooSpec, keys: list[UnitKey], configs: dict[int, ModelConfig], starts: StartStates,
             layout: ParameterLayout) -> list[TrainJob]:
        jobs = []
        for k in keys:
            config, (weights, predictions) = configs[k.model_id], starts[k.model_id]
            jobs.append(TrainJob(
                key=k, config=config, architecture=spec.architecture, method=self.name, epochs=spec.mp.epochs,
                lr=spec.mp.lr_for(config), batch_size=spec.batch_size, seed=twin_seed(config.seed, k.level),
                initial=weights, mask=self.mask(weights, layout, k.level), reference_predictions=predictions,
            ))
        return jobs

    def build(self, job: TrainJob, channels: int) -> nn.Module:
        if job.mask is None:
            raise ZooSpecError(f"{job.method} job for model {job.key.model_id} needs a mask")
        return MaskedNet(plain_from_state(job, channels), job.mask)

    def layout_module(self, model: MaskedNet) -> nn.Module:
        return model.plain

    def after_step(self, model: MaskedNet, job: TrainJob) -> None:
        model.apply_mask()

    def state(self, model: MaskedNet) -> RecordedState:
        weights = model.layout.flatten_module(model.plain).numpy()
        return weights, model.keep.cpu().numpy().copy(), None

    def population_hooks(self, models: list[MaskedNet], jobs: list[TrainJob], device: torch.device) -> MaskHooks:
        return MaskHooks(torch.stack([m.keep for m in models]), models[0].layout, device)


METHOD = MagnitudePruning()
