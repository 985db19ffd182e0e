"""VD's output sampling on CPU as one compiled pass (numba).

On CPU the sampling is bound by memory traffic, not arithmetic: a 32-model group's conv1 output
is 1.5 M numbers (5.9 MB), and the tensor-op form (add, sqrt, addcmul, and div, mul in place)
makes eight passes over such tensors. This pass reads ``mean``, ``variance`` and ``noise`` once
and writes the output and the backward's derivative by the variance. Kept apart so that importing the toolkit
does not load numba.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

_HALF = np.float32(0.5)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _sample(mean: np.ndarray, variance: np.ndarray, noise: np.ndarray, out: np.ndarray,
            d_variance: np.ndarray, eps: np.float32) -> None:
    for i in range(out.shape[0]):
        std = np.sqrt(variance[i] + eps)
        out[i] = mean[i] + std * noise[i]
        d_variance[i] = noise[i] * _HALF / std


def sample_compiled(mean: torch.Tensor, variance: torch.Tensor, noise: torch.Tensor, out: torch.Tensor,
                    d_variance: torch.Tensor, eps: float) -> bool:
    """``out = mean + sqrt(variance + eps) * noise`` and ``d_variance = noise / (2 sqrt(variance
    + eps))`` where all five are float32 CPU tensors of one dense layout (any order of axes);
    False, and nothing done, otherwise."""
    tensors = (mean, variance, noise, out, d_variance)
    if any(t.device.type != "cpu" or t.dtype != torch.float32 or t.stride() != mean.stride() for t in tensors):
        return False
    flat = [_flat(t.detach()) for t in tensors]
    if any(f is None for f in flat):
        return False
    _sample(*(f.numpy() for f in flat), np.float32(eps))
    return True


def _flat(t: torch.Tensor) -> torch.Tensor | None:
    """The tensor's memory as a 1-D view in order of its strides, or None where it is not dense."""
    order = sorted(range(t.dim()), key=lambda d: -t.stride(d))
    dense = t.permute(order)
    return dense.view(-1) if dense.is_contiguous() else None
