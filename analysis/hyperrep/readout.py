"""What the probes read from a hyper-representation: the embedding ``z`` pooled over each layer's
neurons, and statistics of the twin that ``z`` decodes to.

Both are functions of ``z`` alone, so a probe on them predicts from the embedding; the decoded
statistics give gradient boosting the nonlinear readouts (how many decoded log-alphas pass the
threshold, how a layer's decoded weights spread) that it cannot build from ``z``'s raw codes.
"""

from __future__ import annotations

import numpy as np
import torch

from zoo_dataset.layout import ParameterLayout

from .baseline import weight_statistics
from .data import TokenSamples
from .train import TrainConfig


def pooled(z: np.ndarray, samples: TokenSamples) -> np.ndarray:
    """Per layer, the mean and the std of its tokens' codes: a neuron permutation leaves them as
    they are, so a probe reads what a model is, not in which order its neurons happen to sit."""
    codes = torch.from_numpy(z).view(len(z), len(samples.layer_id), -1)
    parts = []
    for layer in samples.layer_id.unique(sorted=True):
        rows = codes[:, samples.layer_id == layer]
        parts += [rows.mean(dim=1), rows.std(dim=1, correction=0)]
    return torch.cat(parts, dim=1).numpy()


def alpha_statistics(alphas: torch.Tensor, layout: ParameterLayout, threshold: float, span: float) -> np.ndarray:
    """[N, P] log-alphas -> per layer's weights, the share at or above the VD threshold (its
    sparsity, were these the twin's alphas) and the mean of eq. 2's ``tanh((a - t) / r)``; then the
    share over all weights."""
    weights = [layout.by_name[f"{layer}.weight"].slice for layer in layout.layers]
    parts = []
    for part in weights:
        a = alphas[:, part].double()
        parts += [(a >= threshold).double().mean(1), torch.tanh((a - threshold) / span).mean(1)]
    every = torch.cat([alphas[:, part] for part in weights], dim=1)
    parts.append((every >= threshold).double().mean(1))
    return torch.stack(parts, dim=1).numpy()


def readout_features(
    encoded: tuple[np.ndarray, torch.Tensor, torch.Tensor], samples: TokenSamples, cfg: TrainConfig
) -> tuple[np.ndarray, np.ndarray]:
    """``(pooled z, pooled z + statistics of the decoded weights and log-alphas)`` of every sample,
    from ``train.encode``'s output for ``samples``; without the log-alphas' when the autoencoder
    was not trained on any (``cfg.alpha_weight`` 0: its alpha stream decodes noise)."""
    z, w_hat, a_hat = encoded
    pooled_z = pooled(z, samples)
    decoded = [weight_statistics(w_hat, samples.layout)]
    if cfg.alpha_weight:
        decoded.append(alpha_statistics(a_hat, samples.layout, cfg.threshold, cfg.span))
    return pooled_z, np.concatenate([pooled_z, *decoded], axis=1)
