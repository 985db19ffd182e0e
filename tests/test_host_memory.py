"""Freed tensor memory stays in the process on CPU: a training step does not fault its memory in again."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

ENGINE_STEPS = """
import dataclasses, resource, statistics, torch
import zoo_dataset.training.engine as engine
from zoo_dataset.data import load_dataset
from zoo_dataset.specs import get_spec
from zoo_dataset.training import TrainJob, UnitKey
spec = get_spec("digits_seed")
base = spec.models()[0]
configs = [dataclasses.replace(base, model_id=i, seed=base.seed + i) for i in range(32)]  # a 32-model group
jobs = [TrainJob(key=UnitKey(c.model_id), config=c, architecture=spec.architecture, method="original", epochs=1,
                 lr=c.lr, batch_size=spec.batch_size, seed=c.seed) for c in configs]
data = load_dataset("digits", 28)
group = engine.TrainingGroup(jobs, data.channels, torch.device("cpu"))
faults = []
for step, idx in enumerate(group.rng.batches(len(data.train_x), spec.batch_size, epoch=1)[:12]):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    group.step(data.train_x, data.train_y, idx, 1, step)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(statistics.median(faults[4:]))  # after the first steps, which grow the heap
"""


REALLOCATION = """
import resource, sys, torch
from zoo_dataset.training.host_memory import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
torch.ones(6 << 20)  # 24 MB, touched and freed
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
torch.ones(6 << 20)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _run(script: str, mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    return float(out.stdout.strip())


glibc_only = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="glibc's mallopt")


@glibc_only
def test_a_freed_block_is_reused_without_faulting_its_pages_in_again():
    """glibc by default unmaps a freed 24 MB block and serves the next one from fresh heap pages
    (~6 000 faults); kept, the freed block itself is reused. The kernel may now and then take
    pages of an idle heap back, so the kept case counts the fewest of three runs."""
    kept = min(_run(REALLOCATION, "keep") for _ in range(3))
    assert kept * 10 < _run(REALLOCATION, "default")


@glibc_only
def test_training_steps_after_the_first_fault_almost_no_pages():
    """A 32-model CNN-s step allocates thousands of pages of layer-sized tensors; glibc's defaults
    fault 3 000-5 000 of them in again per step on most runs. A training group keeps freed memory:
    after the first steps, which grow the heap, a step reuses it (the median step counts)."""
    assert _run(ENGINE_STEPS, "keep") < 100
