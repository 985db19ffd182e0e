"""Adam and SGD-with-momentum over stacked parameters [M, ...] with a learning rate and weight
decay per model.

The update is the single-tensor math of ``torch.optim.Adam`` / ``torch.optim.SGD`` (L2 weight
decay added to the gradient, momentum 0.9 without dampening), written once for all models so the
engine matches the per-model reference to float rounding.
"""

from __future__ import annotations

import torch

from .optimizers import SGD_MOMENTUM

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


class BatchedOptimizer:
    """One optimizer kind ("adam" or "sgd") for every model of a population."""

    def __init__(self, kind: str, params: list[torch.Tensor], lr: torch.Tensor, weight_decay: torch.Tensor):
        if kind not in ("adam", "sgd"):
            raise ValueError(f"unknown optimizer {kind!r}")
        self.kind, self.params, self.steps = kind, params, 0
        self.lr, self.weight_decay = lr, weight_decay
        self.decays = bool(weight_decay.any())  # known once: no host sync per step
        self.state: list[dict[str, torch.Tensor]] = [{} for _ in params]

    @staticmethod
    def _per_model(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return values.reshape(-1, *([1] * (like.dim() - 1)))

    @torch.no_grad()
    def step(self, grads: list[torch.Tensor]) -> None:
        """One update of every parameter tensor with its gradient (same order as ``params``)."""
        self.steps += 1
        for p, grad, state in zip(self.params, grads, self.state, strict=True):
            if self.decays:
                grad = grad + self._per_model(self.weight_decay, p) * p
            lr = self._per_model(self.lr, p)
            if self.kind == "adam":
                self._adam(p, grad, state, lr)
            else:
                self._sgd(p, grad, state, lr)

    def _adam(self, p: torch.Tensor, grad: torch.Tensor, state: dict, lr: torch.Tensor) -> None:
        beta1, beta2 = ADAM_BETAS
        if not state:
            state["exp_avg"], state["exp_avg_sq"] = torch.zeros_like(p), torch.zeros_like(p)
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step_size = lr / (1 - beta1**self.steps)
        denom = (exp_avg_sq.sqrt() / (1 - beta2**self.steps) ** 0.5).add_(ADAM_EPS)
        p.sub_(step_size * (exp_avg / denom))

    def _sgd(self, p: torch.Tensor, grad: torch.Tensor, state: dict, lr: torch.Tensor) -> None:
        if "momentum" not in state:
            state["momentum"] = grad.clone()
        else:
            state["momentum"].mul_(SGD_MOMENTUM).add_(grad)
        p.sub_(lr * state["momentum"])
