"""Group and evaluation sizes per device, and the one-line refusals of a CUDA build without one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from builders.build import device_chunk
from builders.cli import main
from builders.executors import make_trainer
from zoo_dataset.errors import ZooSpecError
from zoo_dataset.model_layout import layout_for
from zoo_dataset.specs import get_spec
from zoo_dataset.store import StoreWriter
from zoo_dataset.training import device_memory
from zoo_dataset.training.device_memory import (
    CPU_EVAL_CHUNK,
    CPU_GROUP,
    TRAIN_SAMPLES_BOUND,
    eval_chunk,
    group_size,
    profile,
)


def test_profile_counts_cnn_s_outputs_noise_and_parameters():
    outputs, noise, parameters = profile("cnn_s", 1)
    assert noise == 8 * 24 * 24 + 6 * 8 * 8 + 4 * 3 * 3 + 20 + 10  # conv/linear outputs: VD's noise per sample
    assert parameters == (8 * 25 + 8) + (6 * 8 * 25 + 6) + (4 * 6 * 4 + 4) + (36 * 20 + 20) + (20 * 10 + 10)
    assert outputs > noise


def test_cpu_keeps_its_fixed_sizes():
    assert group_size("cpu", "cnn_s", 1, 10, 50_000) == CPU_GROUP
    assert eval_chunk("cpu", "cnn_s", 1, 64, 10_000) == CPU_EVAL_CHUNK


def test_cuda_sizes_follow_free_memory(monkeypatch):
    free = {"bytes": 8 << 30}
    monkeypatch.setattr(device_memory, "free_memory", lambda device: free["bytes"])
    small = group_size("cuda", "cnn_s", 1, 10, 50_000)
    free["bytes"] = 64 << 30
    large = group_size("cuda", "cnn_s", 1, 10, 50_000)
    assert CPU_GROUP < small < large and large // small in (7, 8)
    assert group_size("cuda", "cnn_l", 3, 10, 50_000) < large  # a bigger CNN: fewer models
    assert eval_chunk("cuda", "cnn_s", 1, 10, 10_000) == 10_000  # every sample at once where it fits
    assert eval_chunk("cuda", "cnn_s", 1, 10**6, 10_000) < 10_000
    free["bytes"] = 0
    assert group_size("cuda", "cnn_s", 1, 10, 50_000) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a CUDA device")
def test_cuda_build_without_a_device_is_one_line(tmp_path):
    result = CliRunner().invoke(main, ["--zoo", "digits_seed", "--device", "cuda", "--out", str(tmp_path)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "sees no CUDA device" in lines[0]


def test_workers_are_refused_with_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(ZooSpecError, match="--workers is for CPU builds"):
        make_trainer(device="cuda", workers=2)


def test_device_check_runs_every_part_on_cpu():
    """benchmarks/device_check.py --cpu-smoke: the GPU check's code paths, tiny, so the script keeps working."""
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, str(root / "benchmarks" / "device_check.py"), "--cpu-smoke"], cwd=root,
                         capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(root)})
    assert out.returncode == 0, out.stderr
    for part in ("bit-identical", "equivalence vd", "model-steps/s", "projected 1000-model MNIST twin", "passed"):
        assert part in out.stdout


def test_a_new_cuda_store_records_the_device_group_as_its_training_chunk(monkeypatch, tmp_path):
    spec = get_spec("digits_seed")
    assert device_chunk(spec, "cpu") is None  # CPU keeps models_per_shard
    monkeypatch.setattr(device_memory, "free_memory", lambda device: 16 << 30)
    chunk = device_chunk(spec, "cuda")
    assert chunk == group_size("cuda", "cnn_s", 1, spec.batch_size, TRAIN_SAMPLES_BOUND) > spec.models_per_shard
    layout = layout_for(spec)
    writer = StoreWriter.open(tmp_path, spec, layout, resume=False, train_chunk=chunk)
    assert writer.manifest.chunk_size == chunk
    # a resume keeps the recorded chunk, whatever the device offers now
    assert StoreWriter.open(tmp_path, spec, layout, resume=True, train_chunk=7).manifest.chunk_size == chunk
