"""The one interface every benchmark model plugs into, for properties and for masks.

A property predictor is fitted on the training side's :class:`Samples` and predicts every target
it was fitted on; a mask predictor is fitted on the training models' dense originals and their VD
twins, and gives a keep-mask of any global sparsity for held-out originals. A user's own model
needs only these methods (and a ``name``) to be scored beside the baselines.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from zoo_dataset.layout import ParameterLayout

from .samples import Samples


@runtime_checkable
class PropertyPredictor(Protocol):
    name: str

    def fit(self, train: Samples) -> PropertyPredictor:
        """Fit on ``train.weights`` [N, P] and every target in ``train.targets``."""
        ...

    def predict(self, samples: Samples) -> dict[str, np.ndarray]:
        """Target name -> [len(samples)] predictions, for every target seen in :meth:`fit`."""
        ...


@runtime_checkable
class MaskPredictor(Protocol):
    name: str

    def fit(self, train: Samples) -> MaskPredictor:
        """Fit on the training models' dense originals (``train.weights``, last epoch) and their VD
        twins (``train.extra["vd_log_alpha"]``, ``train.extra["vd_keep"]``, last VD epoch)."""
        ...

    def keep(self, originals: np.ndarray, layout: ParameterLayout, sparsity: float) -> np.ndarray:
        """Bool [M, P] keep-masks of [M, P] originals that prune exactly
        ``prune_count(sparsity, layout.num_weights)`` weight entries of each (biases are kept)."""
        ...
