"""The benchmark's property baselines, each a :class:`~analysis.bench.predictors.PropertyPredictor`:
the training mean, weight statistics with gradient boosting (Unterthiner et al. 2020), ridge on
flat weights, a neural functional (the ``nfn`` package) and the hyper-representation autoencoder
(``zoo-hyperrep``) with a probe on its embedding.

Every one is fitted on a :class:`Samples` (flat states, pruned entries exact zeros), predicts
every target it was fitted on, gives the same numbers for the same ``seed`` and takes ``quick``
for CI-sized runs. The learned ones reuse the toolkit's pieces (the statistics baseline, the
loaders' ``nfn`` view and transforms, the autoencoder's training and readout) rather than copies.
"""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import numpy as np
import torch
from sklearn.exceptions import NotFittedError
from sklearn.metrics import r2_score
from sklearn.model_selection import GroupKFold
from torch import nn

from analysis.hyperrep.baseline import WeightStatisticsBaseline, boosted
from analysis.hyperrep.data import TokenSamples
from analysis.hyperrep.model import AEConfig
from analysis.hyperrep.readout import readout_features
from analysis.hyperrep.train import TrainConfig, encode, train_autoencoder
from loaders.nfn_view import NfnView
from loaders.transforms import LayerStandardization
from zoo_dataset.errors import ZooSpecError

from .predictors import PropertyPredictor
from .samples import Samples

QUICK_ESTIMATORS = 20  # boosting stages per target in quick runs (scikit-learn's default: 100)


class _Baseline:
    """What every baseline shares: its settings, the layout it was fitted on, and the check that
    it is asked to predict states of that layout."""

    name = ""

    def __init__(self, quick: bool = False, seed: int = 0):
        self.quick, self.seed = quick, seed
        self.layout = None

    def _fitted(self, train: Samples) -> None:
        if not train.targets or len(train) == 0:
            raise ZooSpecError(f"{self.name}: nothing to fit (no training states or no targets)")
        self.layout = train.layout

    def _check(self, samples: Samples) -> None:
        if self.layout is None:
            raise NotFittedError(f"fit the {self.name} baseline before predicting")
        if samples.layout != self.layout:
            raise ZooSpecError(f"the {self.name} baseline was fitted on states of another layout "
                               f"({self.layout!r}, not {samples.layout!r})")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(quick={self.quick}, seed={self.seed})"


class MeanPredictor(_Baseline):
    """Every state gets the training mean of each target: the zero of R²."""

    name = "mean"

    def fit(self, train: Samples) -> MeanPredictor:
        self._fitted(train)
        self.means = {name: float(np.mean(y)) for name, y in train.targets.items()}
        return self

    def predict(self, samples: Samples) -> dict[str, np.ndarray]:
        self._check(samples)
        return {name: np.full(len(samples), mean) for name, mean in self.means.items()}


class WeightStatisticsPredictor(_Baseline):
    """Per-layer statistics of weights and biases, gradient boosting per target
    (:class:`~analysis.hyperrep.baseline.WeightStatisticsBaseline`). ``quick``: fewer stages."""

    name = "statistics"

    def fit(self, train: Samples) -> WeightStatisticsPredictor:
        self._fitted(train)
        stages = QUICK_ESTIMATORS if self.quick else 100
        self.baseline = WeightStatisticsBaseline(train.layout, self.seed, stages).fit(train.weights, train.targets)
        return self

    def predict(self, samples: Samples) -> dict[str, np.ndarray]:
        self._check(samples)
        return self.baseline.predict(samples.weights)


class _StandardRidge:
    """Ridge regressions of targets ``y`` [N, T] on inputs ``x`` [N, P] with every entry standardised
    (scikit-learn's ``StandardScaler`` then ``Ridge``, intercept unpenalised), for any strengths at
    once: one eigendecomposition of the smaller Gram matrix (the states' where there are fewer
    states than entries) serves them all."""

    def __init__(self, x: np.ndarray, y: np.ndarray):
        x = x.astype(np.float64)
        self.x_mean, std = x.mean(0), x.std(0)
        self.x_std = np.where(std > 0, std, 1.0)  # a constant entry (always pruned) reads as 0
        self.y_mean = y.mean(0)
        xs, yc = (x - self.x_mean) / self.x_std, y - self.y_mean
        if len(xs) <= xs.shape[1]:  # x.T (K + a)^-1 y with K = x x.T = U diag(e) U.T
            eigenvalues, u = np.linalg.eigh(xs @ xs.T)
            self.basis, self.coef = xs.T @ u, u.T @ yc
        else:  # (x.T x + a)^-1 x.T y with x.T x = V diag(e) V.T
            eigenvalues, v = np.linalg.eigh(xs.T @ xs)
            self.basis, self.coef = v, v.T @ (xs.T @ yc)
        self.eigenvalues = np.clip(eigenvalues, 0.0, None)  # rounding can leave tiny negatives

    def _project(self, x: np.ndarray) -> np.ndarray:
        return ((x.astype(np.float64) - self.x_mean) / self.x_std) @ self.basis

    def _shrink(self, alphas: np.ndarray) -> np.ndarray:
        return 1.0 / (self.eigenvalues + np.asarray(alphas, dtype=np.float64)[:, None])

    def path(self, x: np.ndarray, alphas: np.ndarray) -> np.ndarray:
        """[A, M, T]: the predictions for ``x`` [M, P] at each strength."""
        return self.y_mean + np.einsum("mk,ak,kt->amt", self._project(x), self._shrink(alphas), self.coef)

    def predict(self, x: np.ndarray, alphas: np.ndarray) -> np.ndarray:
        """[M, T]: the predictions for ``x`` at one strength per target."""
        return self.y_mean + np.einsum("mk,tk,kt->mt", self._project(x), self._shrink(alphas), self.coef)


RIDGE_ALPHAS = np.logspace(-2, 6, 17)


class RidgePredictor(_Baseline):
    """Ridge regression per target on the flat weights, each entry standardised; the strength per
    target by grid search with ``GroupKFold`` over the training models (no model on both sides of
    a fold), scored by R² as scikit-learn's ``GridSearchCV`` does. ``quick``: five strengths and
    three folds."""

    name = "ridge"

    def fit(self, train: Samples) -> RidgePredictor:
        self._fitted(train)
        groups = len(np.unique(train.model_ids))
        if groups < 2:
            raise ZooSpecError("the ridge baseline needs at least 2 training models (its folds are models)")
        self.alphas_tried, folds = (RIDGE_ALPHAS[::4], 3) if self.quick else (RIDGE_ALPHAS, 5)
        alphas, self.names = self.alphas_tried, list(train.targets)
        y = np.stack([train.targets[n] for n in self.names], axis=1)
        scores = np.zeros((len(alphas), len(self.names)))
        for fit_rows, test_rows in GroupKFold(min(folds, groups)).split(train.weights, groups=train.model_ids):
            if len(test_rows) < 2:  # one state has no R² (e.g. task 2's one row per model, few models)
                continue
            path = _StandardRidge(train.weights[fit_rows], y[fit_rows]).path(train.weights[test_rows], alphas)
            fold = np.stack([r2_score(y[test_rows], p, multioutput="raw_values") for p in path])
            scores += np.nan_to_num(fold, nan=0.0)  # a target without spread in the fold ranks no strength
        self.alphas = alphas[scores.argmax(0)]
        self.ridge = _StandardRidge(train.weights, y)
        return self

    def predict(self, samples: Samples) -> dict[str, np.ndarray]:
        self._check(samples)
        out = self.ridge.predict(samples.weights, self.alphas)
        return {name: out[:, i] for i, name in enumerate(self.names)}


def nfn_modules() -> SimpleNamespace:
    """The ``nfn`` classes the NFN baseline uses; a one-line error when the package is missing."""
    try:
        from nfn.common import WeightSpaceFeatures, network_spec_from_wsfeat
        from nfn.layers import HNPPool, NPLinear, TupleOp
    except ImportError:
        raise ZooSpecError("the NFN baseline needs the nfn package: pip install 'zoo-twins[nfn]'") from None
    return SimpleNamespace(WeightSpaceFeatures=WeightSpaceFeatures, network_spec_from_wsfeat=network_spec_from_wsfeat,
                           HNPPool=HNPPool, NPLinear=NPLinear, TupleOp=TupleOp)


def nfn_network(spec, hidden: int = 16, outputs: int = 1, channels: int = 1) -> nn.Module:
    """The invariant NFN of the ``nfn`` examples for the network ``spec``: NPLinear -> ReLU ->
    NPLinear -> ReLU -> HNPPool -> Linear to ``outputs`` values; ``channels`` values per weight."""
    m = nfn_modules()
    return nn.Sequential(
        m.NPLinear(spec, channels, hidden), m.TupleOp(nn.ReLU()), m.NPLinear(spec, hidden, hidden),
        m.TupleOp(nn.ReLU()), m.HNPPool(spec), nn.Flatten(start_dim=-2),
        nn.Linear(hidden * m.HNPPool.get_num_outs(spec), outputs),
    )


class NFNPredictor(_Baseline):
    """:func:`nfn_network` on the loaders' ``nfn`` view of layer-standardised weights (a pruned zero
    stays zero), each weight read as its value and its magnitude, trained with Adam on the mean
    squared error of all targets at once, each standardised by its training mean and std, the
    learning rate annealed to 0 (cosine); CPU. Invariant to hidden-neuron permutations of its
    input. ``quick``: 8 channels and 2 epochs (else 16 and ``epochs``). Needs the ``nfn`` extra,
    checked when the predictor is made.

    The magnitude channel is there because what tells states apart (a layer's mean magnitude, its
    spread) is what mean pooling of ReLU features of signed values forms poorly: on the originals
    of ``digits_256`` (179 training models, 77 held out) the held-out R² of test accuracy, ggap and
    epoch were 0.52, -0.20 and 0.16 with the value alone and 0.80, 0.11 and 0.69 with both."""

    name = "nfn"

    def __init__(self, quick: bool = False, seed: int = 0, epochs: int = 20, batch_size: int = 64, lr: float = 1e-3):
        super().__init__(quick, seed)
        self.modules = nfn_modules()  # fail before any other baseline has spent its time
        self.epochs, self.hidden = (2, 8) if quick else (epochs, 16)
        self.batch_size, self.lr = batch_size, lr

    def _features(self, weights: np.ndarray):
        flat = torch.as_tensor(weights, dtype=torch.float32)
        viewed = self.view(self.scaler.standardize(flat, mask=flat != 0))
        return self.modules.WeightSpaceFeatures(*(tuple(torch.cat([t, t.abs()], dim=1) for t in part)
                                                  for part in viewed))

    def fit(self, train: Samples) -> NFNPredictor:
        self._fitted(train)
        self.view = NfnView(train.layout)
        self.scaler = LayerStandardization.from_states(train.layout, train.weights)
        self.names = list(train.targets)
        y = np.stack([train.targets[n] for n in self.names], axis=1)
        self.y_mean, self.y_std = y.mean(0), np.where(y.std(0) > 0, y.std(0), 1.0)
        y = torch.as_tensor((y - self.y_mean) / self.y_std, dtype=torch.float32)
        torch.manual_seed(self.seed)
        generator = torch.Generator().manual_seed(self.seed)
        spec = self.modules.network_spec_from_wsfeat(self._features(train.weights[:1]))
        self.net = nfn_network(spec, self.hidden, len(self.names), channels=2)
        optimizer = torch.optim.Adam(self.net.parameters(), lr=self.lr)
        steps = self.epochs * -(-len(train) // self.batch_size)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)  # settles on one fit
        for _ in range(self.epochs):
            for batch in torch.randperm(len(train), generator=generator).split(self.batch_size):
                loss = nn.functional.mse_loss(self.net(self._features(train.weights[batch.numpy()])), y[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
        return self

    @torch.no_grad()
    def predict(self, samples: Samples) -> dict[str, np.ndarray]:
        self._check(samples)
        out = torch.cat([self.net(self._features(samples.weights[start:start + 1024]))
                         for start in range(0, len(samples), 1024)]).double().numpy()
        out = out * self.y_std + self.y_mean
        return {name: out[:, i] for i, name in enumerate(self.names)}


QUICK_AE = {"d_model": 16, "heads": 2, "depth": 1, "token_latent": 2, "projection": 8, "alpha_hidden": 8}


class HyperRepPredictor(_Baseline):
    """The ``zoo-hyperrep`` autoencoder (:func:`~analysis.hyperrep.train.train_autoencoder`, its
    defaults) trained on the training states, then per target gradient boosting on its embedding
    pooled per layer plus statistics of the states it decodes
    (:func:`~analysis.hyperrep.readout.readout_features`), the best probe of docs/analysis.md.

    The reference trains on VD states with their log-alphas as a second reconstruction target.
    Here the weights are those of any population: where ``train.extra["log_alpha"]`` ([N, P],
    e.g. a VD population's) is given the alphas are reconstructed as in the reference, else the
    autoencoder learns the weights alone (the alpha term weighs 0 and the probe skips the decoded
    log-alphas). Predictions read the weights only. ``quick``: a tiny autoencoder, 2 epochs and
    fewer boosting stages."""

    name = "hyperrep"

    def __init__(self, quick: bool = False, seed: int = 0, epochs: int = 40):
        super().__init__(quick, seed)
        self.epochs = 2 if quick else epochs

    @staticmethod
    def _tokens(samples: Samples, alphas: np.ndarray | None = None) -> TokenSamples:
        weights = torch.as_tensor(samples.weights, dtype=torch.float32)
        alphas = torch.zeros_like(weights) if alphas is None else torch.as_tensor(alphas, dtype=torch.float32)
        return TokenSamples(weights, alphas, samples.layout, samples.targets, samples.model_ids)

    def _features(self, tokens: TokenSamples) -> np.ndarray:
        return readout_features(encode(self.trained, tokens), tokens, self.trained.train)[1]

    def fit(self, train: Samples) -> HyperRepPredictor:
        self._fitted(train)
        alphas = train.extra.get("log_alpha")
        tokens = self._tokens(train, alphas)
        config = TrainConfig(epochs=self.epochs, seed=self.seed, alpha_weight=0.0 if alphas is None else 1.0)
        ae = AEConfig(tokens=len(tokens.layer_id), width=tokens.valid.shape[1], **(QUICK_AE if self.quick else {}))
        self.trained = train_autoencoder(tokens, config, ae)
        stages = QUICK_ESTIMATORS if self.quick else 100
        self.models = boosted(self._features(tokens), train.targets, self.seed, stages)
        return self

    def predict(self, samples: Samples) -> dict[str, np.ndarray]:
        self._check(samples)
        features = self._features(self._tokens(samples))
        return {name: model.predict(features) for name, model in self.models.items()}


def default_property_predictors(quick: bool = False, seed: int = 0, epochs: int | None = None
                                ) -> list[PropertyPredictor]:
    """The benchmark's property baselines, simplest first; the NFN only where the ``nfn`` package
    is installed (the ``nfn`` extra). ``epochs``: the NFN's and the autoencoder's training epochs
    instead of their defaults."""
    trained = {"epochs": epochs} if epochs else {}
    predictors: list[PropertyPredictor] = [MeanPredictor(quick, seed), WeightStatisticsPredictor(quick, seed),
                                           RidgePredictor(quick, seed)]
    if importlib.util.find_spec("nfn") is not None:
        predictors.append(NFNPredictor(quick, seed, **trained))
    predictors.append(HyperRepPredictor(quick, seed, **trained))
    return predictors
