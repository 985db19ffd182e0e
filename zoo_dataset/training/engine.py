"""The population engine: trains many jobs of a stage as one batched computation.

It implements the :class:`~.jobs.Trainer` protocol like the per-model reference and reuses its
parts wherever they fix the numbers: each job's model comes from the method's ``build`` (same
init), data order, dropout masks and noise from the counter-based generator keyed as the
reference keys it (:mod:`zoo_dataset.counter_rng`), recorded rows from
:func:`~.reference.state_metrics`. A training step has no Python loop over models. Jobs that
can share one computation (same method, architecture, activation, dropout rate, optimizer kind,
epochs, batch size and method options) form a group; learning rate, weight decay, data order,
start state, mask and noise stay per model. What a method changes comes in through its
:class:`~zoo_dataset.methods.PopulationHooks`; a method without them is refused with one line (it
would silently run ~5x slower otherwise), and trains with the reference trainer only.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import groupby

import numpy as np
import torch
import torch.nn.functional as F

from ..counter_rng import CounterRNG, StepDraws
from ..data import ImageData
from ..jobs import EpochCallback, JobResult, TrainJob
from ..layout import ParameterLayout
from ..methods import get_method
from .batched_ops import PopulationNet, per_model_input
from .batched_optim import BatchedOptimizer
from .device_memory import CPU_EVAL_CHUNK, eval_chunk, group_size
from .host_memory import keep_freed_memory
from .reference import state_metrics


def group_key(job: TrainJob) -> tuple:
    """Jobs with equal keys run as one batched computation."""
    c = job.config
    return (job.method, job.architecture, c.activation, c.dropout, c.optimizer, job.epochs, job.batch_size,
            tuple(sorted(job.options.items())))


class PopulationEngine:
    """Trains jobs in groups of up to ``max_models`` stacked models on ``device`` (cpu or cuda).

    ``max_models`` None: 64 on CPU, as many as free memory allows on CUDA
    (:func:`~.device_memory.group_size`); a build passes the size its store records.
    """

    def __init__(self, device: str = "cpu", max_models: int | None = None):
        self.device = torch.device(device)
        self.max_models = max_models

    def run(
        self, jobs: Sequence[TrainJob], data: ImageData, on_epoch: EpochCallback | None = None
    ) -> Iterator[JobResult]:
        tensors = [t.to(self.device) for t in (data.train_x, data.train_y, data.test_x, data.test_y)]
        for _, group in groupby(sorted(jobs, key=group_key), key=group_key):
            group = list(group)
            limit = self.max_models or group_size(self.device, group[0].architecture, data.channels,
                                                  group[0].batch_size, len(data.train_x), data.image_size)
            # equal chunks of at most the limit: 72 jobs train as 36 + 36, not as 64 + an inefficient 8
            chunk = -(-len(group) // -(-len(group) // limit))
            for start in range(0, len(group), chunk):
                yield from self.run_group(group[start : start + chunk], data.channels, *tensors, on_epoch=on_epoch)

    def run_group(
        self, jobs: list[TrainJob], channels: int, train_x, train_y, test_x, test_y,
        on_epoch: EpochCallback | None = None,
    ) -> list[JobResult]:
        """Train jobs that share a :func:`group_key` together; returns their results in job order."""
        group = TrainingGroup(jobs, channels, self.device)
        chunk = eval_chunk(self.device, jobs[0].architecture, channels, len(jobs), len(train_x), train_x.shape[-1])
        recorder = _Recorder(group.net, jobs, chunk, train_x, train_y, test_x, test_y)
        recorder.record()
        for epoch in range(1, jobs[0].epochs + 1):
            for step, idx in enumerate(group.rng.batches(len(train_x), jobs[0].batch_size, epoch)):
                group.step(train_x, train_y, idx, epoch, step)
            recorder.record()
            if on_epoch:
                on_epoch(epoch, jobs[0].epochs, len(jobs))
        return recorder.results()


class TrainingGroup:
    """The stacked models of one group, their optimizer and their generator: one training step at a
    time, with the same ops whatever the number of models (no Python loop over models)."""

    def __init__(self, jobs: list[TrainJob], channels: int, device: torch.device):
        if device.type == "cpu":  # a step's layer-sized temporaries would fault their pages in again
            keep_freed_memory()
        method = get_method(jobs[0].method)
        models = [method.build(job, channels) for job in jobs]
        self.hooks = method.population_hooks(models, jobs, device)
        plain = [method.layout_module(m) for m in models]
        layout = ParameterLayout.from_module(plain[0])
        self.net = PopulationNet(plain[0], torch.stack([layout.flatten_module(m) for m in plain]), device, self.hooks)
        self.optimizer = BatchedOptimizer(
            jobs[0].config.optimizer, self.net.parameters(),
            lr=torch.tensor([j.lr for j in jobs], device=device),
            weight_decay=torch.tensor([j.config.weight_decay for j in jobs], device=device),
        )
        self.rng = CounterRNG.for_jobs(jobs, method.noise_stream(), device)

    def step(self, train_x: torch.Tensor, train_y: torch.Tensor, idx: torch.Tensor, epoch: int, step: int) -> None:
        """One optimizer step of every model on its own batch ``train_x[idx[m]]`` (``idx`` [M, batch])."""
        net, hooks = self.net, self.hooks
        logits = net.forward(per_model_input(train_x[idx]), StepDraws(self.rng, epoch, step))
        loss = F.cross_entropy(logits.flatten(0, 1), train_y[idx].flatten(), reduction="none")
        loss = loss.view(net.size, -1).mean(dim=1).sum()  # each model's gradient is that of its own mean
        extra = hooks.loss_term(net, epoch, len(train_x))
        if extra is not None:
            loss = loss + extra
        grads = net.gradients(loss)
        hooks.project_gradients(net, grads)
        self.optimizer.step(grads)
        hooks.project(net)


class _Recorder:
    """Evaluates and records every model's state after each epoch, as the reference does."""

    def __init__(self, net: PopulationNet, jobs: list[TrainJob], chunk: int, train_x, train_y, test_x, test_y):
        self.net, self.jobs, self.chunk = net, jobs, chunk
        self.train, self.test = (train_x, train_y), (test_x, test_y)
        self.weights: list[np.ndarray] = []
        self.masks: list[np.ndarray] = []
        self.log_alpha: list[np.ndarray] = []
        self.metrics: list[list[dict[str, float]]] = [[] for _ in jobs]
        self.predictions: np.ndarray | None = None

    def record(self) -> None:
        net, layout = self.net, self.net.layout
        weights = net.flat().numpy().astype(np.float32)
        masks, log_alpha = net.hooks.recorded(net)
        if log_alpha is not None:
            self.log_alpha.append(log_alpha)
        train_loss, train_acc, _ = evaluate_population(net, *self.train, self.chunk)
        test_loss, test_acc, test_pred = evaluate_population(net, *self.test, self.chunk)
        epoch = len(self.weights)
        for m, job in enumerate(self.jobs):
            self.metrics[m].append({"epoch": epoch, **state_metrics(
                layout, weights[m], None if masks is None else masks[m], (train_loss[m], train_acc[m]),
                (test_loss[m], test_acc[m]), test_pred[m], job.reference_predictions)})
        self.weights.append(weights)
        if masks is not None:
            self.masks.append(masks)
        self.predictions = test_pred

    def results(self) -> list[JobResult]:
        weights = np.stack(self.weights, axis=1)  # [M, E+1, P]
        masks = np.stack(self.masks, axis=1) if self.masks else None
        log_alpha = np.stack(self.log_alpha, axis=1) if self.log_alpha else None
        return [
            JobResult(key=job.key, weights=weights[m], metrics=self.metrics[m],
                      masks=None if masks is None else masks[m],
                      log_alpha=None if log_alpha is None else log_alpha[m],
                      test_predictions=self.predictions[m])
            for m, job in enumerate(self.jobs)
        ]


@torch.inference_mode()
def evaluate_population(net: PopulationNet, x: torch.Tensor, y: torch.Tensor, chunk: int = CPU_EVAL_CHUNK):
    """Per-model mean cross-entropy [M], accuracy [M] and predicted classes [M, N], in eval mode,
    ``chunk`` samples (shared by all models) per forward pass."""
    total = torch.zeros(net.size, dtype=torch.float64, device=x.device)
    preds = []
    for start in range(0, len(x), chunk):
        logits = net.forward(x[start : start + chunk], draws=None)  # [M, chunk, classes]
        target = y[start : start + chunk].expand(net.size, -1)
        losses = F.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="none")
        total += losses.view(net.size, -1).sum(dim=1)
        preds.append(logits.argmax(dim=2))
    pred = torch.cat(preds, dim=1)
    acc = (pred == y).float().mean(dim=1)
    return (total / len(x)).cpu().numpy(), acc.cpu().numpy().astype(float), pred.cpu().numpy()
