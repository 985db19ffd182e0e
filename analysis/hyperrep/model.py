"""The attention autoencoder of App. G (after Schürholt et al. 2022a), with two decoder streams.

Encoder: each token's entries (values and, by default, their log-magnitudes) embedded, a position
encoding, a transformer, and each token's output linearly compressed to ``token_latent`` values;
``z`` is their concatenation (per-token codes where the paper compresses a CLS token). Decoder:
``z`` linearly expanded to two token sequences (weights and alphas), each with position and type
encodings, one transformer over both (so each stream sees the other), then split and mapped back to
token width. The alpha stream's output then passes a small per-entry head that also reads that
entry's reconstructed weight: a VD log-alpha is ``log sigma^2 - log theta^2``, a function of the
weight it belongs to, which a linear map from a token's hidden state to 201 entries expresses
poorly.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import torch
from torch import nn

from zoo_dataset.specs import bounded

LOG_FLOOR = 1e-4  # added to |w| (in layer standard deviations) before the log: exact zeros stay finite
C = TypeVar("C")


def config_from_dict(cls: type[C], data: Any, bounds: dict[str, tuple[float, float]]) -> C:
    """The dataclass ``cls`` from a checkpoint's dict, every value checked before anything is sized
    from it: known keys only, each of its field's type (a bool is no number, 2.5 no whole number),
    numbers finite and within ``bounds`` (inclusive; a field without bounds only finite); missing
    keys take the field's default. ValueError naming the first value refused."""
    if not isinstance(data, dict):
        raise ValueError(f"the {cls.__name__} is a {type(data).__name__}, not an object")
    kinds = {f.name: f.type for f in dataclasses.fields(cls)}
    unknown = sorted(str(k) for k in set(data) - set(kinds))
    if unknown:
        raise ValueError(f"{cls.__name__} has unknown keys {unknown}")
    values = {}
    for name, value in data.items():
        low, high = bounds.get(name, (-math.inf, math.inf))
        if kinds[name] == "bool":
            if not isinstance(value, bool):
                raise ValueError(f"{name} = {value!r} is not true or false")
        elif kinds[name] == "int":
            value = bounded(value, name, *(int(x) if math.isfinite(x) else int(math.copysign(2**63, x))
                                           for x in (low, high)))
        elif isinstance(value, bool) or not isinstance(value, int | float) or not (
                math.isfinite(value) and low <= value <= high):
            raise ValueError(f"{name} = {value!r} is not a finite number in [{low}, {high}]")
        values[name] = value
    return cls(**values)


@dataclass(frozen=True)
class AEConfig:
    """Sizes of the autoencoder: ``tokens`` x ``width`` input, transformer width, depth and bottleneck."""

    tokens: int
    width: int
    d_model: int = 64
    heads: int = 4
    depth: int = 2
    token_latent: int = 16  # bottleneck width per token; z has tokens * token_latent entries
    projection: int = 32
    dropout: float = 0.0
    alpha_hidden: int = 32  # width of the per-entry alpha head; 0: alphas from the alpha stream alone
    log_magnitude: bool = True  # the encoder also reads log |w| of each entry (see HyperAE.encode)

    @property
    def latent(self) -> int:
        return self.tokens * self.token_latent

    def to_dict(self) -> dict[str, int | float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> AEConfig:
        """A saved config, bounded before a model is built from it (a depth of 1e6 would never finish
        building); the widths the model's weights need are then checked against the weights themselves."""
        config = config_from_dict(cls, data, AE_BOUNDS)
        if config.d_model % config.heads:
            raise ValueError(f"d_model = {config.d_model} is not a multiple of heads = {config.heads}")
        return config


AE_BOUNDS = {  # the train command's own ranges (d_model, token_latent), the rest far above any zoo's
    "tokens": (1, 1 << 16), "width": (1, 1 << 16), "d_model": (8, 1024), "heads": (1, 64), "depth": (1, 64),
    "token_latent": (1, 256), "projection": (1, 1 << 16), "dropout": (0.0, 0.99), "alpha_hidden": (0, 1 << 16),
}


def _transformer(config: AEConfig) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(
        config.d_model, config.heads, 4 * config.d_model, config.dropout, batch_first=True, norm_first=True
    )
    return nn.TransformerEncoder(layer, config.depth, enable_nested_tensor=False)


class HyperAE(nn.Module):
    """Encodes a twin's weight tokens (and its VD alphas) to ``z`` and decodes both streams back.

    ``forward`` returns the reconstructions and the projection used by the contrastive loss;
    ``encode`` gives the embedding ``z`` that the downstream probes read.
    """

    def __init__(self, config: AEConfig, valid: torch.Tensor | None = None):
        super().__init__()
        self.config = config
        # [T, D]: real entries of the token grid (the rest is padding); saved with the weights
        self.register_buffer(
            "valid", torch.ones(config.tokens, config.width, dtype=torch.bool) if valid is None else valid.bool()
        )
        d, t, k = config.d_model, config.tokens, config.token_latent
        self.embed = nn.Linear(config.width * (2 if config.log_magnitude else 1), d)
        self.position = nn.Parameter(0.02 * torch.randn(t, d))
        self.encoder = _transformer(config)
        self.compress = nn.Linear(d, k)
        self.expand = nn.Linear(k, 2 * d)
        self.decoder_position = nn.Parameter(0.02 * torch.randn(t, d))
        self.stream_type = nn.Parameter(0.02 * torch.randn(2, 1, d))  # 0: weights, 1: alphas
        self.decoder = _transformer(config)
        self.to_weights = nn.Linear(d, config.width)
        self.to_alphas = nn.Linear(d, config.width)
        self.alpha_head = (
            nn.Sequential(nn.Linear(4, config.alpha_hidden), nn.GELU(), nn.Linear(config.alpha_hidden, 1))
            if config.alpha_hidden
            else None
        )
        self.project = nn.Sequential(
            nn.Linear(config.latent, config.projection), nn.ReLU(), nn.Linear(config.projection, config.projection)
        )

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """[B, T, D] tokens -> [B, T * token_latent] embedding. With ``log_magnitude`` each entry is
        read as its value and its log-magnitude: the weights VD prunes sit near zero, where values
        differ by orders of magnitude that a linear embedding of the value cannot tell apart."""
        if self.config.log_magnitude:
            tokens = torch.cat([tokens, torch.log(tokens.abs() + LOG_FLOOR)], dim=-1)
        x = self.encoder(self.embed(tokens) + self.position)
        return self.compress(x).flatten(1)

    def decode(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, latent] -> standardised weight tokens and ``(log_alpha - t) / r`` tokens, each [B, T, D]."""
        t, d = self.config.tokens, self.config.d_model
        streams = self.expand(z.view(len(z), t, -1)).view(len(z), t, 2, d).transpose(1, 2)
        streams = streams + self.decoder_position + self.stream_type
        out = self.decoder(streams.reshape(len(z), 2 * t, d))
        w_hat, a_base = self.to_weights(out[:, :t]), self.to_alphas(out[:, t:])
        if self.alpha_head is None:
            return w_hat, a_base
        return w_hat, self.refine_alphas(w_hat.detach(), a_base)  # the weight stream learns from L_w only

    def refine_alphas(self, w: torch.Tensor, a_base: torch.Tensor) -> torch.Tensor:
        """The per-entry head on the real (non-padding) entries only: a quarter of the CNN-s token grid."""
        w_real, a_real = w[:, self.valid], a_base[:, self.valid]
        entry = torch.stack([w_real, w_real.abs(), torch.log(w_real.abs() + 1e-2), a_real], dim=-1)
        out = a_base.clone()
        out[:, self.valid] = a_real + self.alpha_head(entry).squeeze(-1)
        return out

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z = self.encode(tokens)
        w_hat, a_hat = self.decode(z)
        return z, w_hat, a_hat
