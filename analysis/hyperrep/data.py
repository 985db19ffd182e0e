"""Samples for the autoencoder: every recorded epoch of every VD twin, as flat states of its
dense (non-sparsified) weights and its log-alphas; the tokens view is taken per batch, after the
augmentations, which work on flat states (``loaders.transforms``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from loaders import ZooTrajectoryDataset
from loaders.views import TokensView
from zoo_dataset.errors import StoreError
from zoo_dataset.layout import ParameterLayout

PROPERTIES = ("test_acc", "sparsity", "epoch", "ggap")  # what the probes predict (Table 3)
HELD_OUT = ("val", "test")


@dataclass
class TokenSamples:
    """``weights``/``alphas`` [N, P] flat states; one sample per (model, epoch)."""

    weights: torch.Tensor
    alphas: torch.Tensor
    layout: ParameterLayout
    properties: dict[str, np.ndarray]  # name -> [N]
    model_ids: np.ndarray  # [N]

    def __post_init__(self) -> None:
        self.view = TokensView(self.layout)

    @property
    def valid(self) -> torch.Tensor:
        """[T, D]: which token entries are real parameters (the rest is padding)."""
        return self.view.valid

    @property
    def layer_id(self) -> torch.Tensor:
        return self.view.layer_id

    def tokens(self, flat: torch.Tensor) -> torch.Tensor:
        """[..., P] flat states -> [..., T, D] tokens (one per output neuron, bias last)."""
        return self.view(flat)["tokens"]

    def flat(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.view.inverse({"tokens": tokens})

    def __len__(self) -> int:
        return len(self.weights)

    def subset(self, index: np.ndarray | torch.Tensor) -> TokenSamples:
        index = torch.as_tensor(index)
        return TokenSamples(
            self.weights[index],
            self.alphas[index],
            self.layout,
            {k: v[index.numpy()] for k, v in self.properties.items()},
            self.model_ids[index.numpy()],
        )


def load_samples(zoo: str | Path, root: str | Path | None, splits: tuple[str, ...]) -> TokenSamples:
    """All VD trajectory states of the models in ``splits`` (splits without VD twins are skipped)."""
    datasets = []
    for split in splits:
        try:
            # the paper's AE encodes the dense VD weights; the sparsified twin is where log_alpha < t
            datasets.append(ZooTrajectoryDataset(zoo, method="vd", split=split, root=root, view="flat",
                                                 apply_mask=False))
        except StoreError:
            continue  # e.g. a tiny store whose test split is empty
    items = [ds[i] for ds in datasets for i in range(len(ds))]
    if not items:
        raise StoreError(
            f"no VD twins of {zoo} in splits {', '.join(splits)}; build them with zoo-build --stages vd"
        )
    states = len(items[0]["epoch"])
    return TokenSamples(
        weights=torch.cat([it["twin"] for it in items]).float(),
        alphas=torch.cat([it["log_alpha"] for it in items]).float(),
        layout=datasets[0].store.layout,
        properties={
            p: np.concatenate([it["twin_properties"][p].numpy() for it in items]) for p in PROPERTIES
        },
        model_ids=np.repeat([int(it["model_id"]) for it in items], states),
    )
