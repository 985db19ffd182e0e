"""Augmented views for the contrastive loss: neuron permutation, noise, erasing.

A permutation of a hidden layer's neurons, undone by the same permutation of the next layer's
input blocks, yields the same function: the view keeps what a model computes. Permutations move
weights and alphas together (they are targets); noise and erasing touch only the encoder input.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class NeuronBlocks:
    """Token rows of each layer and the width of each input block of the next layer."""

    rows: list[torch.Tensor]  # per layer: token indices of its neurons
    next_block: list[int]  # per layer but the last: input columns per neuron in the next layer

    @classmethod
    def from_tokens(cls, layer_id: torch.Tensor, valid: torch.Tensor) -> NeuronBlocks:
        layers = int(layer_id.max()) + 1
        rows = [torch.nonzero(layer_id == i).flatten() for i in range(layers)]
        fan_in = [int(valid[r[0]].sum()) - 1 for r in rows]  # valid columns minus the bias
        return cls(rows, [fan_in[i + 1] // len(rows[i]) for i in range(layers - 1)])


def permute_neurons(
    weights: torch.Tensor,
    alphas: torch.Tensor,
    blocks: NeuronBlocks,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One random permutation per hidden layer, applied to a batch [B, T, D] (same for the whole batch)."""
    weights, alphas = weights.clone(), alphas.clone()
    for layer, block in enumerate(blocks.next_block):
        rows, nxt = blocks.rows[layer], blocks.rows[layer + 1]
        perm = torch.randperm(len(rows), generator=generator)
        columns = (perm[:, None] * block + torch.arange(block)).flatten()
        for x in (weights, alphas):
            x[:, rows] = x[:, rows[perm]]
            x[:, nxt, : len(columns)] = x[:, nxt][:, :, columns]
    return weights, alphas


def noise_and_erase(
    weights: torch.Tensor,
    valid: torch.Tensor,
    noise: float,
    erase: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Gaussian noise (relative to each sample's weight std) and a random erased run of tokens."""
    scale = weights[:, valid].std(dim=1).view(-1, 1, 1)
    out = weights + noise * scale * torch.randn(weights.shape, generator=generator)
    tokens = weights.shape[1]
    length = int(round(erase * tokens))
    if length:
        starts = torch.randint(0, tokens - length + 1, (len(weights),), generator=generator)
        span = (torch.arange(tokens)[None] >= starts[:, None]) & (
            torch.arange(tokens)[None] < starts[:, None] + length
        )
        out = out.masked_fill(span[:, :, None], 0.0)
    return out * valid
