"""The benchmark's property baselines through the predictor interface: every target predicted, in
the right shape, the same for the same seed; the mean is the training mean, the statistics
baseline finds a target that is a function of a layer's mean weight, the NFN is invariant to the
loaders' neuron permutations, and a missing ``nfn`` package is one clear error."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from _analysis_store import synthetic_store
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score
from sklearn.model_selection import GridSearchCV, GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from analysis.bench.predictors import PropertyPredictor
from analysis.bench.property_baselines import (
    HyperRepPredictor,
    MeanPredictor,
    NFNPredictor,
    RidgePredictor,
    WeightStatisticsPredictor,
    _StandardRidge,
    default_property_predictors,
)
from analysis.bench.samples import PROPERTIES, Population, Samples, population_samples
from analysis.hyperrep.readout import alpha_statistics
from loaders.transforms import NeuronPermuter, permute
from zoo_dataset.errors import ZooSpecError

TRAIN, TEST = [0, 1, 2, 3], [4, 5]
NAMES = [p.name for p in default_property_predictors(quick=True)]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return synthetic_store(tmp_path_factory.mktemp("bench"), n_models=6, populations=("original", "vd"),
                           original_epochs=3, vd_epochs=2)


@pytest.fixture(scope="module")
def samples(store):
    return population_samples(store, Population("original"), TRAIN + TEST)


def _predictor(name: str, seed: int = 0) -> PropertyPredictor:
    return next(p for p in default_property_predictors(quick=True, seed=seed) if p.name == name)


@pytest.fixture(scope="module")
def fitted(samples):
    """Each quick baseline fitted once on the training models: name -> (predictor, test predictions)."""
    torch.set_num_threads(1)
    out = {}
    for name in NAMES:
        predictor = _predictor(name).fit(samples.of_models(TRAIN))
        out[name] = predictor, predictor.predict(samples.of_models(TEST))
    return out


def test_every_baseline_is_offered_and_speaks_the_interface():
    predictors = default_property_predictors(quick=True, seed=3)
    assert NAMES == ["mean", "statistics", "ridge", "nfn", "hyperrep"]  # nfn is installed with the tests
    assert all(isinstance(p, PropertyPredictor) and p.seed == 3 and p.quick for p in predictors)


@pytest.mark.parametrize("name", NAMES)
def test_a_baseline_predicts_every_target_for_every_state(fitted, samples, name):
    _, predictions = fitted[name]
    test = samples.of_models(TEST)
    assert set(predictions) == set(PROPERTIES)
    for values in predictions.values():
        assert values.shape == (len(test),) and np.isfinite(values).all()


@pytest.mark.parametrize("name", NAMES)
def test_the_same_seed_gives_the_same_predictions(fitted, samples, name):
    again = _predictor(name).fit(samples.of_models(TRAIN)).predict(samples.of_models(TEST))
    for target, values in fitted[name][1].items():
        np.testing.assert_allclose(again[target], values, rtol=1e-6, atol=1e-9)


def test_the_mean_baseline_predicts_the_training_mean(fitted, samples):
    train = samples.of_models(TRAIN)
    for target, values in fitted["mean"][1].items():
        np.testing.assert_allclose(values, train.targets[target].mean())


def test_predicting_before_fitting_or_on_another_layout_is_one_clear_error(fitted, samples, tmp_path):
    with pytest.raises(NotFittedError, match="fit the mean baseline"):
        MeanPredictor().predict(samples)
    other = population_samples(synthetic_store(tmp_path, n_models=2, populations=("original",), architecture="cnn_l"),
                               Population("original"), [0, 1])
    with pytest.raises(ZooSpecError, match="another layout"):
        fitted["statistics"][0].predict(other)


def _known_samples(layout, models: int, states: int = 2, seed: int = 0) -> Samples:
    """Random states whose conv1 weights are shifted by a per-model amount ``s``; ``test_acc`` is
    ``s**2`` and ``epoch`` is ``s``, functions of that layer's mean weight; ``ggap`` is noise."""
    rng = np.random.default_rng(seed)
    shift = np.repeat(rng.uniform(-1, 1, models), states)
    weights = rng.normal(scale=0.5, size=(models * states, layout.num_params))
    weights[:, layout.by_name["conv1.weight"].slice] += shift[:, None]
    targets = {"test_acc": shift**2, "epoch": shift, "ggap": rng.normal(size=len(shift))}
    return Samples(weights.astype(np.float32), targets, np.repeat(np.arange(models), states),
                   np.tile(np.arange(states), models), layout, "cnn_s")


def test_the_statistics_baseline_finds_a_function_of_a_layers_mean_weight(store):
    train, test = _known_samples(store.layout, 40), _known_samples(store.layout, 20, seed=1)
    statistics = WeightStatisticsPredictor(quick=True).fit(train).predict(test)
    mean = MeanPredictor().fit(train).predict(test)
    assert r2_score(test.targets["test_acc"], statistics["test_acc"]) > 0.8
    assert r2_score(test.targets["test_acc"], mean["test_acc"]) < 0.05


def test_the_ridge_baseline_is_scikit_learns_ridge_with_its_grid_search_over_models(store):
    train, test = _known_samples(store.layout, 12, states=3), _known_samples(store.layout, 4, seed=1)
    ridge = RidgePredictor(quick=True).fit(train)
    x, x_test = train.weights.astype(np.float64), test.weights.astype(np.float64)
    search = GridSearchCV(make_pipeline(StandardScaler(), Ridge()), {"ridge__alpha": ridge.alphas_tried},
                          cv=GroupKFold(3)).fit(x, train.targets["epoch"], groups=train.model_ids)
    assert ridge.alphas[ridge.names.index("epoch")] == search.best_params_["ridge__alpha"]
    predictions = ridge.predict(test)
    for alpha, name in zip(ridge.alphas, ridge.names, strict=True):
        expected = make_pipeline(StandardScaler(), Ridge(alpha=alpha)).fit(x, train.targets[name]).predict(x_test)
        np.testing.assert_allclose(predictions[name], expected, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("shape", [(40, 12), (12, 40)])  # more states than entries, and fewer
def test_every_ridge_strength_matches_scikit_learn(shape):
    rng = np.random.default_rng(0)
    x, x_test, y = rng.normal(size=shape), rng.normal(size=(5, shape[1])), rng.normal(size=(shape[0], 2))
    x[:, 3] = 1.5  # a constant entry, as an always-pruned weight is
    alphas = np.array([1e-2, 1.0, 1e3])
    path = _StandardRidge(x, y).path(x_test, alphas)
    for alpha, predicted in zip(alphas, path, strict=True):
        expected = make_pipeline(StandardScaler(), Ridge(alpha=alpha)).fit(x, y).predict(x_test)
        np.testing.assert_allclose(predicted, expected, rtol=1e-6, atol=1e-9)


def test_nfn_predictions_do_not_change_when_the_neurons_are_permuted(fitted, samples, store):
    nfn, predictions = fitted["nfn"]
    test = samples.of_models(TEST)
    index = NeuronPermuter(store.layout).random((len(test),), torch.Generator().manual_seed(0))
    permuted = permute(torch.from_numpy(test.weights), index).numpy()
    assert not np.array_equal(permuted, test.weights)
    again = nfn.predict(Samples(permuted, test.targets, test.model_ids, test.epochs, test.layout, test.architecture))
    for target, values in predictions.items():
        np.testing.assert_allclose(again[target], values, rtol=1e-4, atol=1e-5 * np.abs(values).max())


def test_without_the_nfn_package_the_nfn_baseline_says_how_to_install_it(monkeypatch):
    for module in ("nfn", "nfn.common", "nfn.layers"):
        monkeypatch.setitem(sys.modules, module, None)  # import nfn... raises ImportError
    with pytest.raises(ZooSpecError, match=r"pip install 'zoo-twins\[nfn\]'"):
        NFNPredictor(quick=True)
    assert "nfn" not in [p.name for p in default_property_predictors(quick=True)]


def test_the_hyperrep_baseline_learns_log_alphas_where_the_samples_have_them(store):
    layout = store.layout
    vd = population_samples(store, Population("vd"), TRAIN)
    plain = HyperRepPredictor(quick=True).fit(vd)
    vd.extra["log_alpha"] = np.concatenate([store.array("log_alpha", "vd", m, slice(None)) for m in TRAIN])
    with_alphas = HyperRepPredictor(quick=True).fit(vd)
    assert (plain.trained.train.alpha_weight, with_alphas.trained.train.alpha_weight) == (0.0, 1.0)
    width = alpha_statistics(torch.zeros(1, layout.num_params), layout, 3.0, 4.0).shape[1]
    tokens = HyperRepPredictor._tokens(vd)
    assert with_alphas._features(tokens).shape[1] == plain._features(tokens).shape[1] + width
