"""Freed tensor memory stays in the process on CPU: a training step does not fault its memory in again."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

STEP_LIKE = """
import resource, sys, torch
from zoo_dataset.training.host_memory import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def step():  # layer-sized temporaries of mixed lifetimes, as a 32-model CNN-s step allocates
    kept = [torch.ones(10, 256, 24, 24) for _ in range(4)]
    for _ in range(6):
        t = torch.ones(10, 256, 24, 24) * 2
        kept.append(t + 1)
        del t
    return sum(float(k[0, 0, 0, 0]) for k in kept)
step(); step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _page_faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", STEP_LIKE, mode], capture_output=True, text=True, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    return int(out.stdout.strip())


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_repeated_steps_fault_far_fewer_pages_with_freed_memory_kept():
    """glibc's defaults fault each fresh 5.9 MB tensor in again (~1 400 pages); kept memory is reused."""
    default, kept = _page_faults("default"), _page_faults("keep")
    assert kept * 3 < default, (kept, default)
