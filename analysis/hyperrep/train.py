"""Training and evaluating the autoencoder: the EcD loss on augmented views, reconstruction R^2.

Weights are standardised per layer (``loaders.transforms.LayerStandardization``, fitted on the
train split): the encoder reads them so, the weight stream reconstructs them so, and the
squared error there is eq. 4. The augmentations are the loader's (``loaders.transforms``): a
random neuron permutation per view, applied to weights and alpha targets alike (the model
computes the same function), then Gaussian noise and an erased run of neurons on the encoder
input only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from loaders.transforms import (
    LayerStandardization,
    NeuronErasing,
    NeuronPermuter,
    erase_neurons,
    gaussian_noise,
    permute,
)
from zoo_dataset.errors import StoreError
from zoo_dataset.store.files import atomic_path

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


@dataclass
class Trained:
    model: HyperAE
    scaler: LayerStandardization
    train: TrainConfig
    history: list[dict[str, float]]

    def save(self, path: Path) -> None:
        checkpoint = {
            "model": self.model.state_dict(),
            "config": self.model.config.to_dict(),
            "train": asdict(self.train),
            "scaler": self.scaler.to_dict(),
            "history": self.history,
        }
        with atomic_path(path) as tmp:  # never written through a link
            torch.save(checkpoint, tmp)

    @classmethod
    def load(cls, path: Path, device: str = "cpu") -> Trained:
        """A checkpoint written by :meth:`save`; anything else is a StoreError that names the file."""
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)  # never unpickle code
            model = HyperAE(AEConfig(**{"log_magnitude": False, **raw["config"]}))  # older: values only
            model.load_state_dict(raw["model"])
            scaler = LayerStandardization.from_dict(raw["scaler"])
            return cls(model.to(device), scaler, TrainConfig(**raw["train"]), raw["history"])
        except Exception as exc:  # torch, pickle and dict access raise many types for a foreign file
            raise StoreError(f"{path} is not a zoo-hyperrep checkpoint ({type(exc).__name__}); "
                             "train one with `zoo-hyperrep train`") from None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def _log_alpha(cfg: TrainConfig, out: torch.Tensor) -> torch.Tensor:
    """The alpha head predicts ``(log_alpha - t) / r``: an untrained head then sits at the threshold,
    where eq. 2's tanh is steepest, instead of at log_alpha 0 with most targets (about -10) saturated."""
    return cfg.threshold + cfg.span * out


class Augmenter:
    """Two views of a batch of flat states with the loader's transforms (see the module docstring)."""

    def __init__(self, samples: TokenSamples, config: TrainConfig):
        self.samples, self.config = samples, config
        self.permuter, self.erasing = NeuronPermuter(samples.layout), NeuronErasing(samples.layout)

    def view(
        self, w: torch.Tensor, a: torch.Tensor, scaler: LayerStandardization, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(encoder input, weight target, alpha target) as tokens; weights standardised."""
        cfg = self.config
        if cfg.permute:
            index = self.permuter.random((len(w),), generator)
            w, a = permute(w, index), permute(a, index)
        w = scaler.standardize(w)
        x = erase_neurons(gaussian_noise(w, cfg.noise, generator=generator), self.erasing, cfg.erase, generator)
        tokens = self.samples.tokens
        return tokens(x), tokens(w), tokens(a)


def _step_losses(
    trained: Trained, w: torch.Tensor, a: torch.Tensor, augmenter: Augmenter, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    cfg, model, device = trained.train, trained.model, trained.device
    valid = augmenter.samples.valid.to(device)
    ones = torch.ones(valid.shape[0], device=device)  # targets are standardised: eq. 4's sigma is 1
    zs, rec_w, rec_a = [], 0.0, 0.0
    for _ in range(2):
        x, w_target, a_target = (t.to(device) for t in augmenter.view(w, a, trained.scaler, generator))
        z, w_hat, a_hat = model(x)
        zs.append(z)
        rec_w = rec_w + weight_mse(w_hat, w_target, valid, ones) / 2
        rec_a = rec_a + alpha_mse(_log_alpha(cfg, a_hat), a_target, valid, cfg.threshold, cfg.span) / 2
    contrastive = nt_xent(model.project(zs[0]), model.project(zs[1]), cfg.temperature)
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
    ae = ae or AEConfig(tokens=len(samples.layer_id), width=samples.valid.shape[1])
    scaler = LayerStandardization.from_states(samples.layout, samples.weights)
    trained = Trained(HyperAE(ae, samples.valid).to(device), scaler, config, [])
    augmenter = Augmenter(samples, config)
    optimizer = torch.optim.AdamW(trained.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = sum(1 for b in range(0, len(samples), config.batch_size) if len(samples) - b > 1)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, config.lr, total_steps=max(1, config.epochs * steps_per_epoch), pct_start=0.1
    )
    for epoch in range(config.epochs):
        trained.model.train()
        totals: dict[str, float] = {}
        order = torch.randperm(len(samples), generator=generator)
        batches = [b for b in order.split(config.batch_size) if len(b) > 1]  # NT-Xent needs pairs
        for batch in batches:
            losses = _step_losses(trained, samples.weights[batch], samples.alphas[batch], augmenter, generator)
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            optimizer.step()
            schedule.step()
            for k, v in losses.items():
                totals[k] = totals.get(k, 0.0) + float(v.detach()) / len(batches)
        trained.history.append({"epoch": epoch + 1, **totals})
        if log is not None:
            log(trained.history[-1])
    return trained


@torch.no_grad()
def encode(trained: Trained, samples: TokenSamples, batch_size: int = 256) -> tuple[np.ndarray, ...]:
    """Embeddings [N, latent], reconstructed weights (flat, real units) and log-alphas (flat) of
    un-augmented samples."""
    model, device = trained.model.eval(), trained.device
    zs, ws, alphas = [], [], []
    for start in range(0, len(samples), batch_size):
        x = samples.tokens(trained.scaler.standardize(samples.weights[start : start + batch_size]))
        z, w_hat, a_hat = model(x.to(device))
        zs.append(z.cpu())
        ws.append(trained.scaler.inverse(samples.flat(w_hat.cpu())))
        alphas.append(samples.flat(_log_alpha(trained.train, a_hat).cpu()))
    return torch.cat(zs).numpy(), torch.cat(ws), torch.cat(alphas)


def reconstruction_r2(
    trained: Trained, train: TokenSamples, held_out: TokenSamples, w_hat: torch.Tensor, a_hat: torch.Tensor
) -> dict[str, float]:
    """R^2 of held-out reconstructions (``w_hat``, ``a_hat``: :func:`encode`'s for ``held_out``) against
    the training mean of every parameter, in the losses' spaces: weights layer-standardised (eq. 4),
    log-alphas through ``tanh((a - t)/r)`` (eq. 2)."""
    cfg, standardize = trained.train, trained.scaler.standardize

    def r2(pred: torch.Tensor, target: torch.Tensor, baseline: torch.Tensor) -> float:
        return float(1 - ((pred - target) ** 2).sum() / ((target - baseline) ** 2).sum())

    def squash(a: torch.Tensor) -> torch.Tensor:
        return torch.tanh((a - cfg.threshold) / cfg.span)

    return {
        "weights": r2(standardize(w_hat), standardize(held_out.weights), standardize(train.weights).mean(0)),
        "alphas": r2(squash(a_hat), squash(held_out.alphas), squash(train.alphas).mean(0)),
    }
