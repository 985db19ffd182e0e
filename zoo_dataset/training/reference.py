"""The per-model reference trainer: plain PyTorch, one model at a time.

It is the correctness oracle for the population engine and the baseline of its benchmark.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from ..counter_rng import CounterRNG, StepDraws, drawing
from ..data import ImageData
from ..jobs import EpochCallback, JobResult, TrainJob
from ..layout import ParameterLayout
from ..methods import get_method
from ..metrics import agreement, evaluate
from .optimizers import make_optimizer


def state_metrics(
    layout: ParameterLayout,
    weights: np.ndarray,
    mask: np.ndarray | None,
    train: tuple[float, float],
    test: tuple[float, float],
    test_pred: np.ndarray,
    reference_predictions: np.ndarray | None,
) -> dict[str, float]:
    """The recorded properties of one state (sparsity: :func:`sparsity_columns`)."""
    row = {
        "train_loss": train[0], "train_acc": train[1], "test_loss": test[0], "test_acc": test[1],
        "ggap": train[1] - test[1],
        **sparsity_columns(layout, weights, mask),
    }
    row["agreement"] = (
        agreement(test_pred, reference_predictions) if reference_predictions is not None else float("nan")
    )
    return row


def sparsity_columns(layout: ParameterLayout, weights: np.ndarray, mask: np.ndarray | None) -> dict[str, float]:
    """``sparsity`` and ``sparsity_<layer>``, over weights only (biases excluded): the fraction of
    weights the keep-mask drops (for VD the original code's ``sparsity_ratio``, dropped weights /
    weights), or without a mask the fraction that are zero."""
    dropped = weights == 0 if mask is None else ~np.asarray(mask, dtype=bool)
    row = {"sparsity": float(dropped[layout.weight_mask()].mean())}
    row.update({f"sparsity_{e.layer}": float(dropped[e.slice].mean()) for e in layout.weight_entries()})
    return row


class ReferenceTrainer:
    """Trains jobs one after the other with a standard optimizer loop."""

    def __init__(self, device: str = "cpu"):
        self.device = torch.device(device)

    def run(
        self, jobs: Sequence[TrainJob], data: ImageData, on_epoch: EpochCallback | None = None
    ) -> Iterator[JobResult]:
        tensors = [t.to(self.device) for t in (data.train_x, data.train_y, data.test_x, data.test_y)]
        for job in jobs:
            yield self.run_one(job, data.channels, *tensors, on_epoch=on_epoch)

    def run_one(
        self, job: TrainJob, channels: int, train_x, train_y, test_x, test_y, on_epoch: EpochCallback | None = None
    ) -> JobResult:
        recipe = get_method(job.method)
        model = recipe.build(job, channels).to(self.device)
        rng = CounterRNG.for_jobs([job], recipe.noise_stream(), self.device)  # data order, masks and noise
        layout = ParameterLayout.from_module(recipe.layout_module(model))
        optimizer = make_optimizer(
            job.config.optimizer, [p for p in model.parameters() if p.requires_grad], job.lr, job.config.weight_decay
        )
        weights, masks, alphas, metrics = [], [], [], []

        def record() -> np.ndarray:
            w, m, a = recipe.state(model)
            train = evaluate(model, train_x, train_y)
            test = evaluate(model, test_x, test_y)
            weights.append(w)
            masks.append(m)
            alphas.append(a)
            metrics.append({"epoch": len(metrics), **state_metrics(
                layout, w, m, train[:2], test[:2], test[2], job.reference_predictions)})
            return test[2]

        predictions = record()
        model.train()
        for epoch in range(1, job.epochs + 1):
            for step, (idx,) in enumerate(rng.batches(len(train_x), job.batch_size, epoch)):
                with drawing(StepDraws(rng, epoch, step)):  # the model's random layers draw from it
                    logits = model(train_x[idx])
                loss = recipe.loss(model, logits, train_y[idx], len(train_x), epoch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                recipe.after_step(model, job)
            predictions = record()
            if on_epoch:
                on_epoch(epoch, job.epochs, 1)
        return JobResult(
            key=job.key,
            weights=np.stack(weights).astype(np.float32),
            metrics=metrics,
            masks=None if masks[0] is None else np.stack(masks).astype(bool),
            log_alpha=None if alphas[0] is None else np.stack(alphas).astype(np.float32),
            test_predictions=predictions,
        )

