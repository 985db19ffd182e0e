"""Population engine vs per-model reference: each stage's first epochs on the same slice of a zoo.

Prints model-epochs/s of both trainers and their ratio, the engine's achieved GFLOP/s (conv and
linear FLOPs of training forward + backward and of every recorded evaluation pass: a run of E
epochs evaluates E + 1 states) and, measured in the same run, the GFLOP/s of a plain fp32 matmul.
The reference is timed on fewer models (its cost per model does not depend on how many it
trains); the engine on the whole slice. Two epochs by default (``--epochs``).

    .venv/bin/python benchmarks/bench_build.py                 # 32 CNN-s models of digits_seed, batch 10
    .venv/bin/python benchmarks/bench_build.py --models 64 --reference-models 4 --device cuda
    .venv/bin/python benchmarks/bench_build.py --processes 2   # one trainer per core, as --executor ray runs
    .venv/bin/python benchmarks/bench_build.py --zoo smallcnn_cifar10gs --random-data 5000,1000  # no data files

With ``--processes N`` each trainer runs as ``zoo-build --workers N`` runs it: in N worker processes
at once (torch threads split between them), each on its share of the models. That is also how
``--executor ray`` uses a machine's cores, and how the original zoos were trained (one model per CPU).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch
from synthetic import random_data
from torch import nn

from builders.executors import make_trainer
from zoo_dataset.architectures import build_model
from zoo_dataset.data import get_source, load_dataset
from zoo_dataset.layout import ParameterLayout
from zoo_dataset.methods import methods
from zoo_dataset.model_layout import input_size
from zoo_dataset.specs import PUBLISHED, get_spec
from zoo_dataset.training import TrainJob, UnitKey
from zoo_dataset.training.engine import PopulationEngine

MP_LEVEL = 0.5


def forward_flops(model: nn.Module, channels: int, size: int) -> tuple[int, int]:
    """(all conv/linear FLOPs of one forward pass of one sample, FLOPs of the first layer alone)."""
    flops = []
    hooks = [m.register_forward_hook(lambda m, i, o: flops.append(2 * o[0].numel() * (m.weight[0].numel())))
             for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    with torch.no_grad():
        model(torch.zeros(1, channels, size, size))
    for h in hooks:
        h.remove()
    return sum(flops), flops[0]


def flops_per_model(kind: str, arch: str, channels: int, size: int, n_train: int, n_test: int, epochs: int) -> float:
    """What one model's timed run computes: ``epochs`` of training (forward + weight gradients +
    input gradients, none for the first layer; VD a mean and a variance pass per layer) and
    ``epochs + 1`` evaluation forwards over train and test (the start state is recorded too)."""
    fwd, first = forward_flops(build_model(arch, channels, "tanh"), channels, size)
    passes = 2 if kind == "vd" else 1
    train = n_train * passes * (3 * fwd - first)
    evaluation = (n_train + n_test) * fwd
    return float(epochs * train + (epochs + 1) * evaluation)


def matmul_gflops(device: torch.device, n: int = 1024, repeats: int = 10) -> float:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(trainer, jobs, data, device: torch.device) -> tuple[list, float]:
    list(trainer.run(jobs[: max(2, getattr(trainer, "workers", 1))], data))  # warm-up (every worker)
    _sync(device)
    start = time.perf_counter()
    results = list(trainer.run(jobs, data))
    _sync(device)
    return results, time.perf_counter() - start


def make(trainer: str, device: str, processes: int):
    """The trainer as zoo-build runs it: in this process, or in ``processes`` workers (--workers)."""
    engine = {"reference": "reference", "engine": "population"}[trainer]
    return make_trainer("local", engine, device, workers=processes)


def models_per_second(trainer: str, jobs: list[TrainJob], data, device: str, processes: int) -> float:
    """Models/s of ``trainer`` on ``jobs`` (the warm-up also starts the worker processes)."""
    runner = make(trainer, device, processes)
    seconds = timed(runner, jobs, data, torch.device(device))[1]
    if hasattr(runner, "close"):  # stopped workers, so they cannot slow the next measurement
        runner.close()
    return len(jobs) / seconds


def stage_jobs(spec, n_models: int, channels: int, data, device: str, epochs: int = 1) -> dict[str, list[TrainJob]]:
    """``epochs`` of every registered method's jobs; twins (MP-like ones at level 0.5) start from
    one-epoch originals."""
    base = spec.models()[0]
    configs = {i: replace(base, model_id=i, seed=base.seed + i) for i in range(n_models)}
    layout = ParameterLayout.from_module(build_model(spec.architecture, channels, "tanh"))
    out, starts = {}, {}
    for method in methods().values():
        level = MP_LEVEL if len(method.levels(spec)) > 1 else 0.0
        keys = [UnitKey(i, level) for i in configs]
        jobs = [replace(j, epochs=epochs) for j in method.jobs(spec, keys, configs, starts, layout)]
        if method.requires is None:
            results = PopulationEngine(device).run([replace(j, epochs=1) for j in jobs], data)
            starts = {r.key.model_id: (r.weights[-1], r.test_predictions) for r in results}
        out[method.name] = jobs
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--zoo", default="digits_seed")
    parser.add_argument("--models", type=int, default=32, help="models the engine trains per stage")
    parser.add_argument("--reference-models", type=int, default=2, help="models the reference trains per stage")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--stages", default="original,mp,vd", help="methods to time")
    parser.add_argument("--processes", type=int, default=1, help="worker processes per trainer (one per core)")
    parser.add_argument("--random-data", metavar="TRAIN,TEST",
                        help="time on random images (TRAIN and TEST of them, at the zoo's input size) instead of "
                             "the zoo's data: step time does not depend on the pixels")
    parser.add_argument("--epochs", type=int, default=2,
                        help="epochs per timed run (each run also records the start state: a build's stage "
                             "of E epochs evaluates E + 1 times)")
    args = parser.parse_args()
    device = torch.device(args.device)
    spec = get_spec(args.zoo)
    if spec.variant == PUBLISHED:  # timing only: the engine trains any zoo's models alike
        spec = replace(spec, variant="seed")
    if args.random_data:
        n_train, n_test = (int(n) for n in args.random_data.split(","))
        data = random_data(n_train, n_test, spec.architecture, get_source(spec.dataset).channels, input_size(spec))
    else:
        data = load_dataset(spec.dataset, input_size(spec))
    jobs = stage_jobs(spec, args.models, data.channels, data, args.device, args.epochs)
    print(f"{spec.name}: {spec.architecture}, batch {spec.batch_size}, {len(data.train_x)} train / "
          f"{len(data.test_x)} test samples, {args.epochs} epoch(s) per stage, device {device}, torch threads "
          f"{torch.get_num_threads()}, {args.processes} process(es) per trainer")
    print(f"{'stage':8} {'reference':>14} {'engine':>14} {'ratio':>7} {'GFLOP/s ref':>12} {'engine':>7} "
          f"{'matmul':>7} {'engine %':>8}")
    engine_gflops = {}
    for kind in args.stages.split(","):
        ref_rate, eng_rate = (
            models_per_second(trainer, jobs[kind][:n], data, args.device, args.processes)
            for trainer, n in (("reference", args.reference_models), ("engine", args.models))
        )
        peak = matmul_gflops(device)
        flops = flops_per_model(kind, spec.architecture, data.channels, data.image_size, len(data.train_x),
                                len(data.test_x), args.epochs)
        ref_me, eng_me = ref_rate * args.epochs, eng_rate * args.epochs  # model-epochs/s
        print(f"{kind:8} {ref_me:9.2f} me/s {eng_me:9.2f} me/s {eng_rate / ref_rate:6.1f}x "
              f"{flops * ref_rate / 1e9:12.2f} {flops * eng_rate / 1e9:7.2f} {peak:7.1f} "
              f"{100 * flops * eng_rate / 1e9 / peak:7.1f}%")
        engine_gflops[kind] = flops * eng_rate / 1e9
    if {"original", "vd"} <= engine_gflops.keys():  # VD's extra cost beyond its ~1.7x FLOPs (noise, sampling)
        ratio = engine_gflops["vd"] / engine_gflops["original"]
        print(f"VD / plain (original) engine GFLOP/s in this run: {ratio:.2f}x (goal >= 0.9x)")


if __name__ == "__main__":
    main()
