"""How many models train together, and how many samples one evaluation pass takes, on a device.

On CPU a group of 64 models already keeps the cores busy; bigger groups only cost memory. A GPU
needs thousands of models per op to be busy, so there the group is as large as the free device
memory allows when a build starts (a resume reuses the recorded size: the grouping fixes the
float rounding). The sizes below are estimates from the architecture's layer outputs, with room
to spare: a step keeps every layer output for the backward pass (VD about 3x more), draws noise
through int64 Philox temporaries, and holds each model's data order for the epoch.
"""

from __future__ import annotations

import torch
from torch import nn

from ..architectures import build_model, get_architecture

CPU_GROUP = 64  # models per batched computation on CPU; bounds memory, not speed
CPU_EVAL_CHUNK = 32  # samples per evaluation pass on CPU: small stays in cache
MEMORY_SHARE = 0.5  # of the free device memory, for one group's training or evaluation
BYTES_PER_OUTPUT = 4 * 4  # float32 layer outputs kept for backward, VD's extra passes included
BYTES_PER_NOISE = 48  # transient bytes per random number: int64 Philox state, uniforms, normals
BYTES_PER_SAMPLE_ORDER = 8  # per training sample and model: the epoch's order (sorted in slices of models)
BYTES_PER_PARAMETER = 4 * 8  # weights, log_sigma2, gradients, Adam moments
TRAIN_SAMPLES_BOUND = 100_000  # for a chunk chosen before the data is loaded: no supported split is larger


def profile(architecture: str, channels: int, size: int | None = None) -> tuple[int, int, int]:
    """(numbers all layers output per sample, of which conv/linear outputs = VD noise, parameters) at
    input side ``size`` (default: the architecture's fixed input size)."""
    size = size or get_architecture(architecture).input_size
    model = build_model(architecture, channels, "relu", dropout=0.5)
    sizes: list[tuple[int, bool]] = []
    hooks = [m.register_forward_hook(lambda m, i, o: sizes.append((o.numel(), isinstance(m, nn.Conv2d | nn.Linear))))
             for m in model.children()]
    with torch.no_grad():
        model.eval()(torch.zeros(1, channels, size, size))
    for h in hooks:
        h.remove()
    return sum(n for n, _ in sizes), sum(n for n, noisy in sizes if noisy), sum(p.numel() for p in model.parameters())


def free_memory(device: torch.device) -> int | None:
    """Free bytes on a CUDA device; None on CPU (no limit that matters here)."""
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return int(free)


def group_size(device: torch.device | str, architecture: str, channels: int, batch_size: int, n_train: int,
               size: int | None = None) -> int:
    """Models per batched computation on ``device``: CPU_GROUP on CPU, from free memory on CUDA (inputs
    of side ``size``, default the architecture's)."""
    free = free_memory(torch.device(device))
    if free is None:
        return CPU_GROUP
    outputs, noise, parameters = profile(architecture, channels, size)
    per_model = (batch_size * (outputs * BYTES_PER_OUTPUT + noise * BYTES_PER_NOISE)
                 + n_train * BYTES_PER_SAMPLE_ORDER + parameters * BYTES_PER_PARAMETER)
    return max(1, int(free * MEMORY_SHARE) // per_model)


def eval_chunk(device: torch.device | str, architecture: str, channels: int, models: int, samples: int,
               size: int | None = None) -> int:
    """Samples per evaluation pass of ``models`` stacked models: all of them where memory allows."""
    free = free_memory(torch.device(device))
    if free is None:
        return CPU_EVAL_CHUNK
    outputs, _, _ = profile(architecture, channels, size)
    per_sample = models * outputs * 4 * 2  # a layer's input and output alive at once
    return max(1, min(samples, int(free * MEMORY_SHARE) // per_sample))
