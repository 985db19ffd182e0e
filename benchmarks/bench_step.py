"""Engine step time against the number of models: the host-side work of a step must not grow.

Times single training steps of one group (tiny random data, CNN-s, batch 10) at 8, 64 and 256
models for plain training and VD, and counts the tensor ops a step dispatches: equal counts at
every size mean no Python loop over models; time per model-step should fall as the group grows
(per-op overhead shared by more models). Wall times on a shared machine are noisy: compare
within one run.

    .venv/bin/python benchmarks/bench_step.py [--models 8,64,256] [--steps 20] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from synthetic import group_jobs, random_data
from torch.utils._python_dispatch import TorchDispatchMode

from zoo_dataset.training.engine import TrainingGroup


class OpCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        return func(*args, **(kwargs or {}))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def step_times(method: str, models: int, steps: int, device: torch.device) -> tuple[float, int]:
    """(median seconds per step, tensor ops per step) of one group of ``models``."""
    data = random_data(200, 10)
    x, y = data.train_x.to(device), data.train_y.to(device)
    group = TrainingGroup(group_jobs(method, models), data.channels, device)
    batches = group.rng.batches(len(x), 10, epoch=1)
    group.step(x, y, batches[0], 1, 0)  # warm-up
    with OpCounter() as counter:
        group.step(x, y, batches[1], 1, 1)
    times = []
    for step in range(2, 2 + steps):
        _sync(device)
        start = time.perf_counter()
        group.step(x, y, batches[step % len(batches)], 1, step)
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), counter.ops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="8,64,256")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"device {device}, torch threads {torch.get_num_threads()}, CNN-s, batch 10, median of {args.steps} steps")
    print(f"{'method':8} {'models':>7} {'ms/step':>9} {'us/model-step':>14} {'ops/step':>9}")
    for method in ("original", "vd"):
        for models in (int(m) for m in args.models.split(",")):
            seconds, ops = step_times(method, models, args.steps, device)
            print(f"{method:8} {models:7d} {1e3 * seconds:9.2f} {1e6 * seconds / models:14.1f} {ops:9d}")


if __name__ == "__main__":
    main()
