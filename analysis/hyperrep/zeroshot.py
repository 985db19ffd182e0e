"""Zero-shot sparsification: predict an original's VD log-alphas from its final weights alone,
prune where the prediction reaches the VD threshold, and evaluate the pruned network untrained.

The predictor works per weight entry: a small MLP reads features of one weight in its model
(its value and rank relative to its layer and model, the norms of the neuron it feeds and of the
input unit it reads, its layer) and predicts that weight's log-alpha. It is therefore
permutation-equivariant by construction (a neuron permutation permutes the features alike) and
learns from every weight of every training model (hundreds of thousands of entries) instead of
from a hundred-odd whole models. It is fitted with the paper's alpha loss (eq. 2) on the train
split's originals (last epoch) and their VD twins' log-alphas at one target VD epoch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from zoo_dataset.errors import StoreError
from zoo_dataset.layout import ParameterLayout

from .losses import alpha_mse


@dataclass(frozen=True)
class ZeroShotConfig:
    epochs: int = 8
    batch_size: int = 8192
    lr: float = 3e-3
    hidden: int = 64
    threshold: float = 3.0  # VD threshold t (eq. 2); the store's own threshold is used when known
    span: float = 4.0  # range of interest r (eq. 2)
    seed: int = 0


def _ranks(values: torch.Tensor) -> torch.Tensor:
    """Rank of every entry of each row in [0, 1] (0 = smallest)."""
    order = values.argsort(dim=1).argsort(dim=1).to(values.dtype)
    return order / max(values.shape[1] - 1, 1)


def entry_features(flat: torch.Tensor, layout: ParameterLayout) -> torch.Tensor:
    """[M, P] states -> [M, n_weights, F] features of every weight entry, in layout order."""
    flat = flat.double()
    entries = layout.weight_entries()
    weight_positions = torch.from_numpy(np.flatnonzero(layout.weight_mask()))
    model_rank = _ranks(flat[:, weight_positions].abs())
    parts, offset = [], 0
    for index, entry in enumerate(entries):
        w = flat[:, entry.slice].reshape(len(flat), *entry.shape)
        bias = flat[:, layout.by_name[entry.layer + ".bias"].slice]
        size = entry.size
        scale = w.flatten(1).std(dim=1).clamp_min(1e-12).view(-1, *[1] * (w.dim() - 1))
        rel = w / scale
        row_norm = rel.flatten(2).norm(dim=2)  # [M, out]
        row_norm = row_norm / row_norm.mean(dim=1, keepdim=True).clamp_min(1e-12)
        col_mag = rel.abs().mean(dim=1)  # [M, in, (kernel)]: each input unit's mean magnitude
        col_mag = col_mag.flatten(2).mean(dim=2) if w.dim() > 3 else col_mag
        col_mag = col_mag / col_mag.mean(dim=1, keepdim=True).clamp_min(1e-12)
        expand = [len(flat), *entry.shape]
        row = row_norm.view(len(flat), -1, *[1] * (w.dim() - 2)).expand(expand)
        col = col_mag.view(len(flat), 1, -1, *[1] * (w.dim() - 3)).expand(expand)
        b = (bias.view(len(flat), -1, *[1] * (w.dim() - 2)) / scale).expand(expand)
        onehot = torch.zeros(len(flat), size, len(entries), dtype=flat.dtype)
        onehot[:, :, index] = 1.0
        columns = [
            rel.flatten(1),
            rel.abs().flatten(1),
            torch.log(rel.abs().flatten(1) + 1e-6),
            _ranks(rel.abs().flatten(1)),
            model_rank[:, offset : offset + size],
            row.flatten(1),
            col.flatten(1),
            b.flatten(1),
            torch.full((len(flat), size), float(np.log(size)), dtype=flat.dtype),
        ]
        parts.append(torch.cat([torch.stack(columns, dim=2), onehot], dim=2))
        offset += size
    return torch.cat(parts, dim=1).float()


class AlphaPredictor(nn.Module):
    """Per-entry MLP: features -> ``(log_alpha - t) / r`` (starts at the threshold, eq. 2's steepest point)."""

    def __init__(self, features: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(features, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


@dataclass
class ZeroShotModel:
    """The fitted predictor, its layout-independent config and the target VD epoch."""

    net: AlphaPredictor
    config: ZeroShotConfig
    vd_epoch: int
    history: list[float] = field(default_factory=list)

    @torch.no_grad()
    def predict(self, flat: torch.Tensor, layout: ParameterLayout) -> torch.Tensor:
        """[M, P] original states -> [M, n_weights] predicted log-alphas of their weights."""
        device = next(self.net.parameters()).device
        out = self.net.eval()(entry_features(flat, layout).to(device)).cpu()
        return self.config.threshold + self.config.span * out

    def state(self) -> dict:
        """Tensors and plain values only: ``torch.load(weights_only=True)`` reads it back."""
        return {"net": self.net.state_dict(), "config": asdict(self.config), "vd_epoch": self.vd_epoch,
                "features": self.net.net[0].in_features, "history": self.history}

    @classmethod
    def from_state(cls, raw: dict, device: str = "cpu") -> ZeroShotModel:
        config = ZeroShotConfig(**raw["config"])
        net = AlphaPredictor(raw["features"], config.hidden)
        net.load_state_dict(raw["net"])
        return cls(net.to(device), config, int(raw["vd_epoch"]), list(raw["history"]))


def fit_zero_shot(
    originals: torch.Tensor,
    log_alphas: torch.Tensor,
    layout: ParameterLayout,
    vd_epoch: int,
    config: ZeroShotConfig = ZeroShotConfig(),
    device: str = "cpu",
    log=None,
) -> ZeroShotModel:
    """Fit on [M, P] original states and the [M, P] log-alphas of their VD twins (weights only are used)."""
    if len(originals) == 0:
        raise StoreError("no training models with both an original and a VD twin")
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    x = entry_features(originals, layout).flatten(0, 1)
    y = log_alphas[:, torch.from_numpy(np.flatnonzero(layout.weight_mask()))].float().flatten()
    net = AlphaPredictor(x.shape[1], config.hidden).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
    steps = config.epochs * -(-len(x) // config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.lr, total_steps=steps)
    model = ZeroShotModel(net, config, vd_epoch)
    every = torch.ones(1, dtype=torch.bool, device=device)
    for epoch in range(config.epochs):
        net.train()
        total, batches = 0.0, torch.randperm(len(x), generator=generator).split(config.batch_size)
        for batch in batches:
            xb, yb = x[batch].to(device), y[batch].to(device)
            pred = config.threshold + config.span * net(xb)
            loss = alpha_mse(pred[:, None], yb[:, None], every, config.threshold, config.span)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) / len(batches)
        model.history.append(total)
        if log is not None:
            log(epoch + 1, total)
    return model
