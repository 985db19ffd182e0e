"""The GPU check: engine vs CPU reference on the device, engine throughput, a paper-size projection.

1. Equivalence: a few steps of each stage (original with dropout, MP, VD), 2 models, the engine
   on the GPU against the per-model reference on CPU (weights after 1 epoch; with PyTorch's
   default TF32 convolutions and with exact fp32), plus the generator's words, masks and
   permutations bit for bit on both devices.
2. Throughput: training steps of one MP and one VD group of 64 / 256 / 1024 / 4096 CNN-s models
   (MNIST-sized random images, batch 10), evaluation passes, one epoch's data order; and the
   per-model reference on the same GPU (model-epochs/s on a small slice, engine vs reference).
3. Projection: wall time of the 1000-model MNIST twin (MP 9 levels x 15 epochs + VD 25 epochs on
   50 000 images, each epoch evaluated on 60 000), from the measured step and evaluation times at
   the group size this device's free memory gives.

Run by ``benchmarks/device_check.sh`` (at most 8 minutes); exits 0 with one line where no GPU is.
``--cpu-smoke`` runs every part tiny on CPU (what the test suite does to keep the script working).
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np
import torch
from synthetic import group_jobs, random_data

from zoo_dataset.counter_rng import CounterRNG, philox4x32_10
from zoo_dataset.training import ReferenceTrainer
from zoo_dataset.training.device_memory import eval_chunk, group_size
from zoo_dataset.training.engine import PopulationEngine, TrainingGroup, evaluate_population

EQUIVALENCE_ATOL = 1e-4  # as tests/test_engine.py: float rounding only
MNIST = {"train": 50_000, "eval": 60_000, "batch": 10, "models": 1000, "mp_levels": 9, "mp_epochs": 15,
         "vd_epochs": 25}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def check_generator(device: torch.device) -> bool:
    cpu, dev = CounterRNG([3, 4, 2**40], ["vd/0.000000"] * 3), CounterRNG([3, 4, 2**40], ["vd/0.000000"] * 3, device)
    same = (torch.equal(cpu.words(10_001, 1, 2, 3), dev.words(10_001, 1, 2, 3).cpu())
            and torch.equal(cpu.keep_mask((999,), 0.6, 1, 2, 3), dev.keep_mask((999,), 0.6, 1, 2, 3).cpu())
            and torch.equal(cpu.permutation(5000, 4), dev.permutation(5000, 4).cpu()))
    normals = cpu.normal((99_999,), 1, 2, 3), dev.normal((99_999,), 1, 2, 3).cpu()
    normal = float((normals[0] - normals[1]).abs().max())  # designed to be 0: every step is one IEEE operation
    print(f"generator: words, masks, permutations {'bit-identical' if same else 'DIFFER'} on cpu and {device}; "
          f"normals {'bit-identical' if torch.equal(*normals) else f'max |diff| {normal:.1e}'}")
    return same and normal < 1e-5


def generator_speed(device: torch.device, words: int) -> None:
    """The integer core as int64 tensor passes (what runs) against the same core fused by torch.compile."""
    rng = CounterRNG(list(range(64)), ["vd/0.000000"] * 64, device)
    n = words // 64
    blocks = torch.arange(-(-n // 4), device=device).unsqueeze(0)

    def core(b: torch.Tensor, k0: torch.Tensor, k1: torch.Tensor) -> torch.Tensor:
        return torch.stack(philox4x32_10((b, 1, 2, 3), (k0, k1)), dim=2)

    def timed(fn) -> tuple[torch.Tensor, float]:
        fn(blocks, *rng.key)
        sync(device)
        start = time.perf_counter()
        out = fn(blocks, *rng.key)
        sync(device)
        return out, time.perf_counter() - start

    eager, eager_s = timed(core)
    try:
        fused, fused_s = timed(torch.compile(core, dynamic=True))
        note = f"torch.compile'd {1e9 * fused_s / words:.3f} ns/word, " + (
            "same bits" if torch.equal(eager, fused) else "DIFFERENT BITS")
    except Exception as exc:  # a compiler missing on the machine is a finding, not a failure
        note = f"torch.compile failed ({type(exc).__name__})"
    print(f"generator core on {device}: int64 tensor passes {1e9 * eager_s / words:.3f} ns/word; {note}")


def check_equivalence(device: torch.device) -> bool:
    data = random_data(60, 30)
    ok = check_generator(device)
    for method, dropout in (("original", 0.5), ("mp", 0.0), ("vd", 0.0)):
        jobs = group_jobs(method, 2, dropout=dropout)
        reference = {r.key: r.weights for r in ReferenceTrainer("cpu").run(jobs, data)}
        diffs = []
        for tf32 in (True, False):
            torch.backends.cudnn.allow_tf32 = tf32
            engine = {r.key: r.weights for r in PopulationEngine(str(device)).run(jobs, data)}
            diffs.append(max(float(np.abs(engine[k] - reference[k]).max()) for k in reference))
        torch.backends.cudnn.allow_tf32 = True
        print(f"equivalence {method:8} (6 steps, 2 models): max |engine on {device} - reference on cpu| "
              f"{diffs[0]:.1e} (TF32 convolutions), {diffs[1]:.1e} (fp32)")
        ok = ok and diffs[1] <= EQUIVALENCE_ATOL
    return ok


def step_seconds(group: TrainingGroup, x, y, steps: int, device: torch.device) -> float:
    batches = group.rng.batches(len(x), MNIST["batch"], epoch=1)
    group.step(x, y, batches[0], 1, 0)  # warm-up
    sync(device)
    start = time.perf_counter()
    for step in range(1, steps + 1):
        group.step(x, y, batches[step], 1, step)
    sync(device)
    return (time.perf_counter() - start) / steps


def eval_seconds_per_sample(group: TrainingGroup, x, y, device: torch.device, chunk: int) -> float:
    evaluate_population(group.net, x[:chunk], y[:chunk], chunk)  # warm-up
    sync(device)
    start = time.perf_counter()
    evaluate_population(group.net, x, y, chunk)
    sync(device)
    return (time.perf_counter() - start) / len(x)


def order_seconds(group: TrainingGroup, n: int, device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    group.rng.batches(n, MNIST["batch"], epoch=2)
    sync(device)
    return time.perf_counter() - start


def throughput(device: torch.device, sizes: list[int], steps: int, n_train: int, n_eval: int,
               deadline: float) -> dict[str, list[tuple[int, float, float, float]]]:
    """Per method: (models, s/step, s/eval sample, s/epoch order) at each size reached before ``deadline``."""
    data = random_data(n_train, n_eval)
    x, y = data.train_x.to(device), data.train_y.to(device)
    ex, ey = data.test_x.to(device), data.test_y.to(device)
    out: dict[str, list[tuple[int, float, float, float]]] = {"mp": [], "vd": []}
    for models in sizes:
        for method in out:
            if time.time() > deadline:
                print(f"  {method} at {models} models: skipped, the check's time is up")
                continue
            group = TrainingGroup(group_jobs(method, models), data.channels, device)
            step = step_seconds(group, x, y, steps, device)
            chunk = eval_chunk(device, "cnn_s", data.channels, models, len(ex))
            per_sample = eval_seconds_per_sample(group, ex, ey, device, chunk)
            order = order_seconds(group, n_train, device)
            out[method].append((models, step, per_sample, order))
            print(f"  {method:3} {models:5d} models: {1e3 * step:8.2f} ms/step = {models / step:10.0f} model-steps/s; "
                  f"eval {1e6 * per_sample:8.1f} us/sample; epoch order {1e3 * order:7.1f} ms")
            del group
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return out


def engine_vs_reference(device: torch.device, models: int, n_train: int) -> None:
    data = random_data(n_train, n_train // 4)
    for method in ("mp", "vd"):
        rates = []
        for trainer, jobs in ((ReferenceTrainer(str(device)), group_jobs(method, 2)),
                              (PopulationEngine(str(device)), group_jobs(method, models))):
            list(trainer.run(jobs[:1], data))  # warm-up
            sync(device)
            start = time.perf_counter()
            list(trainer.run(jobs, data))
            sync(device)
            rates.append(len(jobs) / (time.perf_counter() - start))
        print(f"  {method:3}: reference {rates[0]:8.2f} model-epochs/s, engine ({models} models) {rates[1]:8.2f}: "
              f"{rates[1] / rates[0]:.0f}x (goal >= 50x)")


def at_size(points: list[tuple[int, float]], size: int) -> float:
    """Seconds at ``size`` models from the smallest measured group at least that large, scaled per
    model; beyond the largest measured group, that group's per-model time (no further gain assumed)."""
    models, seconds = next(((m, s) for m, s in sorted(points) if m >= size), max(points))
    return seconds * size / models


def project(device: torch.device, measured: dict[str, list[tuple[int, float, float, float]]]) -> None:
    if not measured["mp"] or not measured["vd"]:
        print("projection: not enough measurements")
        return
    g = group_size(device, "cnn_s", 1, MNIST["batch"], MNIST["train"])
    steps = math.ceil(MNIST["train"] / MNIST["batch"])
    total = 0.0
    for method, units, epochs in (("mp", MNIST["models"] * MNIST["mp_levels"], MNIST["mp_epochs"]),
                                  ("vd", MNIST["models"], MNIST["vd_epochs"])):
        groups = math.ceil(units / g)
        size = math.ceil(units / groups)
        step, per_sample, order = (at_size([(p[0], p[i]) for p in measured[method]], size) for i in (1, 2, 3))
        evaluation = MNIST["eval"] * per_sample
        seconds = groups * (epochs * (steps * step + evaluation + order) + evaluation)
        total += seconds
        print(f"  {method}: {units} units in {groups} group(s) of {size}: {seconds / 3600:.2f} h "
              f"(a step {1e3 * step:.1f} ms, an epoch's evaluation {evaluation:.1f} s)")
    print(f"projected 1000-model MNIST twin (MP 9 x 15 + VD 25 epochs, 50 000 images) on {device}: "
          f"{total / 3600:.2f} h (goal < 1 h on one H100); group size from free memory: {g}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="every part tiny, on CPU")
    parser.add_argument("--budget", type=float, default=330,
                        help="seconds from the start after which no further throughput size begins")
    args = parser.parse_args()
    if args.cpu_smoke:
        device, sizes, steps, n_train, n_eval, ref_models = torch.device("cpu"), [2, 4], 2, 40, 20, 4
    elif not torch.cuda.is_available():
        print(f"device_check: no CUDA device (torch {torch.__version__}, built for CUDA {torch.version.cuda}); "
              "nothing to check on this machine")
        return 0
    else:
        device, sizes, steps, n_train, n_eval, ref_models = torch.device("cuda"), [64, 256, 1024, 4096], 20, \
            MNIST["train"], 10_000, 1024
        print(f"device: {torch.cuda.get_device_name(device)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    start = time.time()
    ok = check_equivalence(device)
    if not args.cpu_smoke:
        generator_speed(device, 1 << 26)
    slice_size = max(40, n_train // 25 * 2)
    print(f"engine vs reference on the same device (1 epoch of {slice_size} samples with evaluation):")
    engine_vs_reference(device, ref_models, slice_size)
    print("engine throughput (CNN-s, batch 10):")
    measured = throughput(device, sizes, steps, n_train, n_eval, deadline=start + args.budget)
    project(device, measured)
    print(f"device_check: {'passed' if ok else 'FAILED (equivalence)'} in {time.time() - start:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
