"""Training and evaluating the autoencoder: the EcD loss on augmented views, reconstruction R^2."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from zoo_dataset.errors import StoreError

from .augment import NeuronBlocks, noise_and_erase, permute_neurons
from .data import TokenSamples
from .losses import alpha_mse, ecd_loss, nt_xent, weight_mse
from .model import AEConfig, HyperAE


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 60
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-5
    beta: float = 0.1  # weight of the contrastive term (eq. 6)
    temperature: float = 0.1
    noise: float = 0.05
    erase: float = 0.1
    permute: bool = True
    threshold: float = 3.0  # VD pruning threshold t on log-alpha (eq. 2)
    span: float = 4.0  # range of interest r around the threshold (eq. 2)
    seed: int = 0


class LayerScaler:
    """Per-layer mean and std of the training weights, broadcast to tokens: the eq. 4 normaliser."""

    def __init__(self, mean: torch.Tensor, sigma: torch.Tensor):
        self.mean, self.sigma = mean, sigma  # [T]

    @classmethod
    def fit(cls, samples: TokenSamples) -> LayerScaler:
        mean, sigma = torch.zeros(len(samples.layer_id)), torch.ones(len(samples.layer_id))
        for layer in samples.layer_id.unique():
            rows = samples.layer_id == layer
            values = samples.weights[:, rows][:, samples.valid[rows]]
            mean[rows], sigma[rows] = values.mean(), values.std().clamp_min(1e-8)
        return cls(mean, sigma)

    def normalise(self, w: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return (w - self.mean[:, None]) / self.sigma[:, None] * valid

    def restore(self, w: torch.Tensor) -> torch.Tensor:
        return w * self.sigma[:, None] + self.mean[:, None]


@dataclass
class Trained:
    model: HyperAE
    scaler: LayerScaler
    train: TrainConfig
    history: list[dict[str, float]]

    def save(self, path: Path) -> None:
        torch.save(
            {
                "model": self.model.state_dict(),
                "config": self.model.config.to_dict(),
                "train": asdict(self.train),
                "scaler": [self.scaler.mean, self.scaler.sigma],
                "history": self.history,
            },
            path,
        )

    @classmethod
    def load(cls, path: Path, device: str = "cpu") -> Trained:
        """A checkpoint written by :meth:`save`; anything else is a StoreError that names the file."""
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)  # never unpickle code
            model = HyperAE(AEConfig(**raw["config"]))
            model.load_state_dict(raw["model"])
            scaler = LayerScaler(*raw["scaler"])
            return cls(model.to(device), scaler, TrainConfig(**raw["train"]), raw["history"])
        except Exception as exc:  # torch, pickle and dict access raise many types for a foreign file
            raise StoreError(f"{path} is not a zoo-hyperrep checkpoint ({type(exc).__name__}); "
                             "train one with `zoo-hyperrep train`") from None


def _log_alpha(cfg: TrainConfig, out: torch.Tensor) -> torch.Tensor:
    """The alpha head predicts ``(log_alpha - t) / r``: an untrained head then sits at the threshold,
    where eq. 2's tanh is steepest, instead of at log_alpha 0 with most targets (about -10) saturated."""
    return cfg.threshold + cfg.span * out


def _step_losses(
    trained: Trained,
    w: torch.Tensor,
    a: torch.Tensor,
    samples: TokenSamples,
    blocks: NeuronBlocks,
    generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    cfg, model, scaler = trained.train, trained.model, trained.scaler
    device = next(model.parameters()).device
    valid, sigma = samples.valid.to(device), scaler.sigma.to(device)
    views = []
    for _ in range(2):
        wv, av = permute_neurons(w, a, blocks, generator) if cfg.permute else (w, a)
        x = noise_and_erase(
            scaler.normalise(wv, samples.valid), samples.valid, cfg.noise, cfg.erase, generator
        )
        z, w_hat, a_hat = model(x.to(device))
        a_hat = _log_alpha(cfg, a_hat)
        views.append((z, scaler.restore(w_hat.cpu()).to(device), a_hat, wv.to(device), av.to(device)))
    (z1, *_), (z2, *_) = views
    contrastive = nt_xent(model.project(z1), model.project(z2), cfg.temperature)
    rec_w = sum(weight_mse(wh, wv, valid, sigma) for _, wh, _, wv, _ in views) / 2
    rec_a = sum(alpha_mse(ah, av, valid, cfg.threshold, cfg.span) for _, _, ah, _, av in views) / 2
    return {
        "loss": ecd_loss(contrastive, rec_w, rec_a, cfg.beta),
        "contrastive": contrastive,
        "weights": rec_w,
        "alphas": rec_a,
    }


def train_autoencoder(
    samples: TokenSamples,
    config: TrainConfig = TrainConfig(),
    ae: AEConfig | None = None,
    device: str = "cpu",
    log=None,
) -> Trained:
    """Train on every (model, epoch) sample; returns the model, its scaler and per-epoch mean losses."""
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    ae = ae or AEConfig(tokens=samples.weights.shape[1], width=samples.weights.shape[2])
    trained = Trained(HyperAE(ae).to(device), LayerScaler.fit(samples), config, [])
    blocks = NeuronBlocks.from_tokens(samples.layer_id, samples.valid)
    optimizer = torch.optim.AdamW(trained.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    for epoch in range(config.epochs):
        trained.model.train()
        totals: dict[str, float] = {}
        order = torch.randperm(len(samples), generator=generator)
        batches = [b for b in order.split(config.batch_size) if len(b) > 1]  # NT-Xent needs pairs
        for batch in batches:
            losses = _step_losses(
                trained, samples.weights[batch], samples.alphas[batch], samples, blocks, generator
            )
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            optimizer.step()
            for k, v in losses.items():
                totals[k] = totals.get(k, 0.0) + float(v.detach()) / len(batches)
        trained.history.append({"epoch": epoch + 1, **totals})
        if log is not None:
            log(trained.history[-1])
    return trained


@torch.no_grad()
def encode(trained: Trained, samples: TokenSamples, batch_size: int = 256) -> tuple[np.ndarray, ...]:
    """Embeddings and reconstructions (weights in real units, log-alphas) of un-augmented samples."""
    model = trained.model.eval()
    device = next(model.parameters()).device
    zs, ws, alphas = [], [], []
    for start in range(0, len(samples), batch_size):
        x = trained.scaler.normalise(samples.weights[start : start + batch_size], samples.valid)
        z, w_hat, a_hat = model(x.to(device))
        zs.append(z.cpu())
        ws.append(trained.scaler.restore(w_hat.cpu()))
        alphas.append(_log_alpha(trained.train, a_hat).cpu())
    return torch.cat(zs).numpy(), torch.cat(ws), torch.cat(alphas)


def reconstruction_r2(trained: Trained, train: TokenSamples, held_out: TokenSamples) -> dict[str, float]:
    """R^2 of held-out reconstructions against the training mean of every entry, in the losses' spaces:
    weights layer-normalised (eq. 4), log-alphas through ``tanh((a - t)/r)`` (eq. 2)."""
    _, w_hat, a_hat = encode(trained, held_out)
    cfg, valid = trained.train, held_out.valid

    def r2(pred: torch.Tensor, target: torch.Tensor, baseline: torch.Tensor) -> float:
        return float(1 - ((pred - target)[:, valid] ** 2).sum() / ((target - baseline)[:, valid] ** 2).sum())

    def squash(a: torch.Tensor) -> torch.Tensor:
        return torch.tanh((a - cfg.threshold) / cfg.span)

    scale = trained.scaler.sigma[:, None]
    return {
        "weights": r2(w_hat / scale, held_out.weights / scale, train.weights.mean(0) / scale),
        "alphas": r2(squash(a_hat), squash(held_out.alphas), squash(train.alphas).mean(0)),
    }
