"""Training and evaluating the autoencoder: the EcD loss on augmented views, reconstruction R^2.

Weights are standardised per layer (``loaders.transforms.LayerStandardization``, fitted on the
train split): the encoder reads them so, the weight stream reconstructs them so, and the
squared error there is eq. 4. The augmentations are the loader's (``loaders.transforms``): a
random neuron permutation per view, applied to weights and alpha targets alike (the model
computes the same function), then Gaussian noise and an erased run of neurons on the encoder
input only.
"""

from __future__ import annotations

import io
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
from zoo_dataset.errors import StoreError, ZooError
from zoo_dataset.inputs import read_regular
from zoo_dataset.store.files import atomic_path

from .data import TokenSamples
from .losses import alpha_mse, ecd_loss, nt_xent, weight_mse
from .model import AEConfig, HyperAE, config_from_dict


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
    alpha_weight: float = 1.0  # of L_alpha in eq. 6; 0 for states without log-alphas (weights only)


TRAIN_BOUNDS = {  # of a saved TrainConfig: what eval reads (threshold, span, seed) and what training took
    "epochs": (1, 10_000), "batch_size": (2, 4096), "lr": (0.0, 10.0), "weight_decay": (0.0, 10.0), "beta": (0.0, 1.0),
    "temperature": (1e-6, 1e6), "noise": (0.0, 1e3), "erase": (0.0, 1.0), "threshold": (-1e3, 1e3), "span": (1e-6, 1e3),
    "seed": (0, 2**63 - 1), "alpha_weight": (0.0, 1e3),
}
MAX_CHECKPOINT_BYTES = 1 << 30  # the reference model is a few MB


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
        """A checkpoint written by :meth:`save`, checked before anything is built from it: a regular
        file of at most ``MAX_CHECKPOINT_BYTES``, tensors and plain values only, every config value
        of its type and within its bounds, the weights exactly the shapes the config's model has
        (built first on the meta device, which allocates nothing, so the real model is never larger
        than the file), and every number finite (weights, scaler, threshold...). Anything else is one
        StoreError line that names the file."""
        data = read_regular(Path(path), MAX_CHECKPOINT_BYTES, "zoo-hyperrep checkpoint")
        try:
            raw = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)  # never unpickle code
        except Exception as exc:  # torch and pickle raise many types for a foreign file
            raw = exc
        if not isinstance(raw, dict) or set(raw) != {"model", "config", "train", "scaler", "history"}:
            why = type(raw).__name__ if isinstance(raw, Exception) else "not a dict of its five parts"
            raise StoreError(f"{path} is not a zoo-hyperrep checkpoint ({why}); train one with `zoo-hyperrep train`")
        try:
            config = AEConfig.from_dict({"log_magnitude": False, **raw["config"]})  # older: values only
            train = config_from_dict(TrainConfig, raw["train"], TRAIN_BOUNDS)
            scaler = LayerStandardization.from_dict(raw["scaler"])
            model = _checked_model(config, raw["model"])
            if not isinstance(raw["history"], list):
                raise ValueError("its history is not a list")
        except (ValueError, TypeError, ZooError) as exc:
            raise StoreError(f"{path} is not a usable zoo-hyperrep checkpoint: {exc}") from None
        return cls(model.to(device), scaler, train, raw["history"])

    def check_fits(self, samples: TokenSamples, zoo: str) -> None:
        """StoreError unless this autoencoder reads states of ``samples``' layout and token grid (a
        checkpoint of another architecture would fail deep inside the model)."""
        grid = (len(samples.layer_id), samples.valid.shape[1])
        if self.scaler.layout != samples.layout or (self.model.config.tokens, self.model.config.width) != grid:
            raise StoreError(f"the checkpoint was trained on states of another layout than {zoo}'s "
                             f"({self.scaler.layout!r}, not {samples.layout!r}); train one on this zoo")

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def _checked_model(config: AEConfig, state: object) -> HyperAE:
    """The model of ``config`` with the weights ``state``, once ``state`` holds exactly its tensors
    (names and shapes, compared with a skeleton on the meta device) and every float in them is finite."""
    with torch.device("meta"):
        skeleton = HyperAE(config).state_dict()
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError("its weights are not a dict of tensors")
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    wanted = {k: tuple(v.shape) for k, v in skeleton.items()}
    if shapes != wanted:
        differ = sorted(str(k) for k in set(shapes) | set(wanted) if shapes.get(k) != wanted.get(k))
        raise ValueError(f"its weights do not fit its config ({differ[0]}: {shapes.get(differ[0])}, the config's "
                         f"model has {wanted.get(differ[0])})")
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ValueError(f"its weights {bad[0]} hold NaN or infinite values")
    model = HyperAE(config)
    model.load_state_dict(state)
    return model


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
        "loss": ecd_loss(contrastive, rec_w, cfg.alpha_weight * rec_a, cfg.beta),
        "contrastive": contrastive,
        "weights": rec_w,
        "alphas": rec_a,
    }


def warmup_share(total_steps: int) -> float:
    """OneCycleLR's ``pct_start``: a 10 % warm-up, except over exactly 10 steps, where it would end
    at step 0 and torch's schedule divides by zero (a 16-model zoo's MP states in ``zoo-bench --quick``)."""
    return 0.15 if 0.1 * total_steps == 1 else 0.1


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
    total_steps = max(1, config.epochs * steps_per_epoch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.lr, total_steps=total_steps,
                                                   pct_start=warmup_share(total_steps))
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
