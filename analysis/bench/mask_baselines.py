"""Zero-shot mask predictors for the masks task: magnitude, random, the VD twins' per-layer
allocation and the hyper-representation's zero-shot predictor.

Every predictor prunes exactly ``prune_count(sparsity, layout.num_weights)`` weight entries of each
model and never a bias, so that all of them are compared at the same sparsity. They differ only in
*which* weights they score lowest; the scoring, the per-layer budgets and the exact cut are shared
here. Ties are broken the same way everywhere: by a second score where one is given, then by the
position in the flat vector (earlier first), so every mask is a deterministic function of its inputs.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from analysis.hyperrep.zeroshot import ZeroShotConfig, ZeroShotModel, fit_zero_shot
from zoo_dataset.errors import StoreError, ZooSpecError
from zoo_dataset.layout import ParameterLayout
from zoo_dataset.sparsify.magnitude import global_magnitude_mask, prune_count

from .samples import Samples

SPARSITY_GRID = np.linspace(0.0, 1.0, 101)  # where StatisticsThresholds records the VD allocation
QUICK_EPOCHS = 2  # ZeroShotMasks' epochs in a CI-sized run (the predictor's default is 8)


def weight_rows(originals: np.ndarray, layout: ParameterLayout) -> np.ndarray:
    """[M, P] originals -> [M, n_weights] their weight entries (biases dropped), in layout order."""
    originals = np.asarray(originals)
    if originals.ndim != 2 or originals.shape[1] != layout.num_params:
        raise ZooSpecError(f"expected [models, {layout.num_params}] original states, got {originals.shape}")
    return originals[:, layout.weight_mask()]


def layer_sizes(layout: ParameterLayout) -> np.ndarray:
    """Number of weights of each layer, in layout order."""
    return np.array([e.size for e in layout.weight_entries()], dtype=np.int64)


def prune_lowest(scores: np.ndarray, k: int, tiebreak: np.ndarray | None = None) -> np.ndarray:
    """Bool [M, n] keep-mask that drops the ``k`` lowest ``scores`` of each row (ties: lower
    ``tiebreak`` first, then the earlier entry)."""
    order = np.lexsort((scores,) if tiebreak is None else (tiebreak, scores), axis=1)  # stable
    keep = np.ones(scores.shape, dtype=bool)
    np.put_along_axis(keep, order[:, :k], False, axis=1)
    return keep


def prune_per_layer(scores: np.ndarray, counts: np.ndarray, layout: ParameterLayout) -> np.ndarray:
    """Bool [M, n_weights] keep-mask dropping ``counts[l]`` lowest-scored weights within each layer."""
    keep, start = np.ones(scores.shape, dtype=bool), 0
    for size, count in zip(layer_sizes(layout), counts, strict=True):
        part = slice(start, start + size)
        keep[:, part] = prune_lowest(scores[:, part], int(count))
        start += size
    return keep


def allocate(total: int, shares: np.ndarray, capacity: np.ndarray) -> np.ndarray:
    """Whole counts per layer that sum to ``total``, proportional to ``shares``, none above its
    ``capacity``: a layer whose share would exceed its capacity is filled and the rest is shared
    among the others; the floors of the real amounts are then topped up one each in the layers
    with the largest fractional parts (the earlier layer on ties)."""
    shares = np.clip(np.asarray(shares, dtype=np.float64), 0.0, None)
    capacity = np.asarray(capacity, dtype=np.int64)
    if not 0 <= total <= capacity.sum():
        raise ZooSpecError(f"cannot prune {total} of {capacity.sum()} weights")
    amounts, full = np.zeros(len(shares)), np.zeros(len(shares), dtype=bool)
    while True:  # each pass fills at least one layer, and the last open layer always fits
        free = ~full
        weight = shares[free] if shares[free].sum() > 0 else capacity[free].astype(np.float64)
        amounts[free] = (total - capacity[full].sum()) * weight / weight.sum()
        over = free & (amounts > capacity)
        if not over.any():
            break
        full |= over
        amounts[full] = capacity[full]
    counts = np.floor(amounts).astype(np.int64)
    missing = total - int(counts.sum())
    open_layers = np.flatnonzero(counts < capacity)
    top = open_layers[np.argsort(-(amounts - counts)[open_layers], kind="stable")[:missing]]
    counts[top] += 1
    return counts


def to_flat(keep_weights: np.ndarray, layout: ParameterLayout) -> np.ndarray:
    """[M, n_weights] keep-mask over weights -> [M, P] over the flat vector, biases kept."""
    keep = np.ones((len(keep_weights), layout.num_params), dtype=bool)
    keep[:, layout.weight_mask()] = keep_weights
    return keep


def _vd(train: Samples, name: str) -> np.ndarray:
    if name not in train.extra:
        raise StoreError(f"the training samples carry no {name!r}: mask predictors learn from VD twins")
    value = np.asarray(train.extra[name])
    if value.shape != train.weights.shape:
        raise ZooSpecError(f"{name!r} has shape {value.shape}; the training weights have {train.weights.shape}")
    return value


def _fitted(layout: ParameterLayout | None, name: str) -> ParameterLayout:
    if layout is None:
        raise StoreError(f"{name} is not fitted: call fit(train) before keep()")
    return layout


def _same_layout(fitted: ParameterLayout | None, layout: ParameterLayout, name: str) -> None:
    if _fitted(fitted, name) != layout:
        raise ZooSpecError(f"{name} was fitted on {fitted}, not on {layout}")


class GlobalMagnitude:
    """Global magnitude pruning without fine-tuning: the smallest weights of the whole model
    (``zoo_dataset.sparsify.magnitude.global_magnitude_mask``, the MP twins' first step)."""

    name = "global MP"

    def fit(self, train: Samples) -> GlobalMagnitude:
        return self

    def keep(self, originals: np.ndarray, layout: ParameterLayout, sparsity: float) -> np.ndarray:
        weight_rows(originals, layout)
        return np.stack([global_magnitude_mask(row, layout, sparsity) for row in originals])


class LayerwiseMagnitude:
    """Magnitude pruning of every layer to the same fraction. Of the ``k`` pruned weights, layer
    ``l`` with ``n_l`` of the ``n`` weights takes ``floor(k n_l / n)``, and the ``k`` minus the sum
    of floors left over go one each to the layers with the largest fractional parts of ``k n_l / n``
    (the earlier layer on ties): every layer's fraction is within ``1 / n_l`` of ``k / n`` and the
    total is exact."""

    name = "layer-wise MP"

    def fit(self, train: Samples) -> LayerwiseMagnitude:
        return self

    def keep(self, originals: np.ndarray, layout: ParameterLayout, sparsity: float) -> np.ndarray:
        weights = weight_rows(originals, layout)
        sizes = layer_sizes(layout)
        counts = allocate(prune_count(sparsity, layout.num_weights), sizes.astype(np.float64), sizes)
        return to_flat(prune_per_layer(np.abs(weights.astype(np.float32)), counts, layout), layout)


class RandomMask:
    """Uniformly random pruned sets: the floor any predictor must clear. The scores are drawn
    once per call from ``seed``, so one seed gives the same masks, and the pruned sets of a batch
    are nested across sparsities (a row's 90 % set holds its 80 % set)."""

    name = "random"

    def __init__(self, seed: int = 0):
        self.seed = seed

    def fit(self, train: Samples) -> RandomMask:
        return self

    def keep(self, originals: np.ndarray, layout: ParameterLayout, sparsity: float) -> np.ndarray:
        weights = weight_rows(originals, layout)
        scores = np.random.default_rng(self.seed).random(weights.shape)
        return to_flat(prune_lowest(scores, prune_count(sparsity, layout.num_weights)), layout)


class StatisticsThresholds:
    """Per-layer thresholds from the statistics of the training models' VD twins, then magnitude
    within each layer.

    VD decides how much of each layer to drop; magnitude pruning at one global threshold does not
    (it empties layers with small weights first). Ranking a training twin's weights by their
    log-alpha (highest first: the weights VD drops first; ties by smaller original magnitude) gives
    its pruned set at any sparsity; ``fit`` records, on :data:`SPARSITY_GRID`, the mean fraction of
    each layer those sets prune. At a target sparsity the fractions (interpolated on the grid) set
    each layer's budget, :func:`allocate` makes the budgets whole numbers that sum to the exact
    total, and each layer drops its smallest weights.
    """

    name = "VD layer statistics"

    def __init__(self) -> None:
        self.layout: ParameterLayout | None = None
        self.fractions: np.ndarray | None = None  # [grid, layers] mean pruned fraction per layer

    def fit(self, train: Samples) -> StatisticsThresholds:
        layout, log_alpha = train.layout, _vd(train, "vd_log_alpha")
        weights, alphas = weight_rows(train.weights, layout), weight_rows(log_alpha, layout)
        sizes = layer_sizes(layout)
        layer_of = np.repeat(np.arange(len(sizes)), sizes)
        order = np.lexsort((np.abs(weights), -alphas), axis=1)  # the VD twin's pruning order
        ks = np.array([prune_count(s, layout.num_weights) for s in SPARSITY_GRID])
        counts = np.zeros((len(ks), len(sizes)))
        for row in order:  # pruned weights per layer after each of the first k in this order
            cumulative = np.vstack([np.zeros(len(sizes)), np.cumsum(np.eye(len(sizes))[layer_of[row]], axis=0)])
            counts += cumulative[ks]
        self.fractions = counts / len(order) / sizes
        self.layout = layout
        return self

    def layer_counts(self, sparsity: float) -> np.ndarray:
        """Weights each layer prunes at ``sparsity``: whole numbers summing to the exact total."""
        layout = _fitted(self.layout, self.name)
        sizes = layer_sizes(layout)
        total = prune_count(sparsity, layout.num_weights)
        learned = np.array([np.interp(sparsity, SPARSITY_GRID, f) for f in self.fractions.T])
        return allocate(total, learned * sizes, sizes)

    def keep(self, originals: np.ndarray, layout: ParameterLayout, sparsity: float) -> np.ndarray:
        _same_layout(self.layout, layout, self.name)
        weights = weight_rows(originals, layout)
        counts = self.layer_counts(sparsity)
        return to_flat(prune_per_layer(np.abs(weights.astype(np.float32)), counts, layout), layout)


class ZeroShotMasks:
    """The hyper-representation's zero-shot predictor (``analysis.hyperrep.zeroshot``): it predicts
    every weight's VD log-alpha from the dense original and prunes the highest predictions (ties:
    the smaller weight first), so the cut is by rank and the count exact at any sparsity.

    Which log-alphas it learns depends on the target: where the training samples carry the VD
    trajectory (``extra["vd_log_alpha_epochs"]``, as :func:`~analysis.bench.twins.mask_samples`
    gives it), the VD epoch whose mean training sparsity is nearest the target sparsity, one
    predictor per epoch, fitted on first use. A predictor of the last epoch ranks the weights VD
    keeps at 87 % sparsity well, but not those it drops first (on ``digits_256``, 75.7 % against
    global MP's 85.7 % at 50 %). Without the trajectory: the last epoch (``extra["vd_log_alpha"]``).
    ``quick`` fits :data:`QUICK_EPOCHS` epochs instead of the predictor's default."""

    name = "zero-shot"

    def __init__(self, quick: bool = False, seed: int = 0, config: ZeroShotConfig | None = None):
        config = config or ZeroShotConfig()
        self.config = replace(config, seed=seed, epochs=QUICK_EPOCHS if quick else config.epochs)
        self.models: dict[int, ZeroShotModel] = {}  # VD epoch -> its predictor
        self.layout: ParameterLayout | None = None

    def fit(self, train: Samples) -> ZeroShotMasks:
        self.train, self.layout, self.models = train, train.layout, {}
        if "vd_log_alpha_epochs" in train.extra:
            self.epochs = np.asarray(train.extra["vd_epochs"][0])
            self.epoch_sparsity = np.asarray(train.extra["vd_sparsity_epochs"]).mean(axis=0)
        else:  # vd_epoch -1: the samples hold the VD twins' last epoch
            _vd(train, "vd_log_alpha")
            self.epochs, self.epoch_sparsity = np.array([-1]), np.array([np.nan])
        return self

    def target_epoch(self, sparsity: float) -> int:
        """The VD epoch whose mean training sparsity is nearest ``sparsity`` (-1: the last)."""
        if np.isnan(self.epoch_sparsity).all():
            return int(self.epochs[-1])
        return int(self.epochs[np.nanargmin(np.abs(self.epoch_sparsity - sparsity))])

    def _model(self, epoch: int) -> ZeroShotModel:
        if epoch not in self.models:
            originals = torch.from_numpy(np.asarray(self.train.weights, dtype=np.float32))
            if epoch == -1:
                alphas = _vd(self.train, "vd_log_alpha")
            else:
                alphas = self.train.extra["vd_log_alpha_epochs"][:, int(np.flatnonzero(self.epochs == epoch)[0])]
            alphas = torch.from_numpy(np.asarray(alphas, dtype=np.float32))
            self.models[epoch] = fit_zero_shot(originals, alphas, self.layout, epoch, self.config)
        return self.models[epoch]

    def predict(self, originals: np.ndarray, layout: ParameterLayout, sparsity: float = 1.0) -> np.ndarray:
        """[M, n_weights] predicted log-alphas of the originals' weights at the VD epoch for
        ``sparsity`` (default: the sparsest epoch's)."""
        _same_layout(self.layout, layout, self.name)
        weight_rows(originals, layout)
        model = self._model(self.target_epoch(sparsity))
        return model.predict(torch.from_numpy(np.asarray(originals, dtype=np.float32)), layout).numpy()

    def keep(self, originals: np.ndarray, layout: ParameterLayout, sparsity: float) -> np.ndarray:
        predicted = self.predict(originals, layout, sparsity)
        magnitude = np.abs(weight_rows(originals, layout).astype(np.float32))
        return to_flat(prune_lowest(-predicted, prune_count(sparsity, layout.num_weights), magnitude), layout)
