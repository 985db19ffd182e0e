"""The paper's self-supervised losses (App. H): NT-Xent, layer-normalised weight MSE (eq. 4),
tanh-normalised alpha MSE (eq. 2/5) and their beta-weighted sum (eq. 6)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def nt_xent(z_i: torch.Tensor, z_j: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's NT-Xent over a batch of positive pairs (eq. 3): cosine similarity, all others negatives."""
    z = F.normalize(torch.cat([z_i, z_j]), dim=1)
    similarity = z @ z.T / temperature
    n = len(z_i)
    similarity.fill_diagonal_(float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(similarity, targets)


def weight_mse(
    w_hat: torch.Tensor, w: torch.Tensor, valid: torch.Tensor, token_sigma: torch.Tensor
) -> torch.Tensor:
    """Eq. 4: squared error divided by the variance of each weight's layer, averaged over real entries."""
    error = ((w_hat - w) / token_sigma[:, None]) ** 2
    return error[:, valid].mean()


def alpha_mse(
    a_hat: torch.Tensor, a: torch.Tensor, valid: torch.Tensor, threshold: float, span: float
) -> torch.Tensor:
    """Eq. 2: ``tanh((a_hat - t)/r) - tanh((a - t)/r)`` squared; averaged per entry like eq. 4, so both
    reconstruction terms share one scale (the paper writes the sum over a model's entries)."""
    error = (torch.tanh((a_hat - threshold) / span) - torch.tanh((a - threshold) / span)) ** 2
    return error[:, valid].mean()


def ecd_loss(
    contrastive: torch.Tensor, weights: torch.Tensor, alphas: torch.Tensor, beta: float
) -> torch.Tensor:
    """Eq. 6: ``beta * L_C + (1 - beta) * (L_w + L_alpha)``."""
    return beta * contrastive + (1 - beta) * (weights + alphas)
