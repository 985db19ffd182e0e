"""Samples for the autoencoder: every recorded epoch of every VD twin, as per-neuron tokens of its
dense (non-sparsified) weights and its log-alphas."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from loaders import ZooTrajectoryDataset
from zoo_dataset.errors import StoreError

PROPERTIES = ("test_acc", "sparsity", "epoch", "ggap")  # what the probes predict (Table 3)
HELD_OUT = ("val", "test")


@dataclass
class TokenSamples:
    """``weights``/``alphas`` [N, T, D] with ``valid`` [T, D]; one sample per (model, epoch)."""

    weights: torch.Tensor
    alphas: torch.Tensor
    valid: torch.Tensor
    layer_id: torch.Tensor  # [T]
    properties: dict[str, np.ndarray]  # name -> [N]
    model_ids: np.ndarray  # [N]

    def __len__(self) -> int:
        return len(self.weights)

    def subset(self, index: np.ndarray | torch.Tensor) -> TokenSamples:
        index = torch.as_tensor(index)
        return TokenSamples(
            self.weights[index],
            self.alphas[index],
            self.valid,
            self.layer_id,
            {k: v[index.numpy()] for k, v in self.properties.items()},
            self.model_ids[index.numpy()],
        )


def load_samples(zoo: str | Path, root: str | Path | None, splits: tuple[str, ...]) -> TokenSamples:
    """All VD trajectory states of the models in ``splits`` (splits without VD twins are skipped)."""
    datasets = []
    for split in splits:
        try:
            # the paper's AE encodes the dense VD weights; the sparsified twin is where log_alpha < t
            datasets.append(ZooTrajectoryDataset(zoo, method="vd", split=split, root=root, view="tokens",
                                                 apply_mask=False))
        except StoreError:
            continue  # e.g. a tiny store whose test split is empty
    items = [ds[i] for ds in datasets for i in range(len(ds))]
    if not items:
        raise StoreError(
            f"no VD twins of {zoo} in splits {', '.join(splits)}; build them with zoo-build --stages vd"
        )
    first = items[0]
    states = len(first["epoch"])
    return TokenSamples(
        weights=torch.cat([it["twin"]["tokens"] for it in items]).float(),
        alphas=torch.cat([it["log_alpha"]["tokens"] for it in items]).float(),
        valid=first["twin"]["valid"][0],
        layer_id=first["twin"]["layer_id"][0],
        properties={
            p: np.concatenate([it["twin_properties"][p].numpy() for it in items]) for p in PROPERTIES
        },
        model_ids=np.repeat([int(it["model_id"]) for it in items], states),
    )
