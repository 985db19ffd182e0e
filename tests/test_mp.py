"""Magnitude-pruning twins: masks, zero preservation, metrics, store, CLI and resume."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
import torch
from _digits import small_digits
from click.testing import CliRunner
from torch.nn.utils import prune

import builders.context
from builders.build import build_zoo
from builders.cli import main
from zoo_dataset.architectures import parametrised_layers, seeded_model
from zoo_dataset.layout import ParameterLayout
from zoo_dataset.methods import get_method
from zoo_dataset.metrics import agreement, evaluate
from zoo_dataset.sparsify.magnitude import global_magnitude_mask, prune_count
from zoo_dataset.specs import get_spec
from zoo_dataset.training import ReferenceTrainer, TrainJob, UnitKey
from zoo_dataset.training.optimizers import make_optimizer

LEVELS = (0.5, 0.9)


@pytest.fixture(scope="module")
def spec():
    overrides = {"model_subset": range(2), "epochs": 1, "mp_epochs": 1, "mp_levels": LEVELS}
    return get_spec("digits_seed").with_overrides(**overrides)


@pytest.fixture(scope="module")
def small_data():
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(builders.context, "load_dataset", small_digits)
        yield


@pytest.fixture(scope="module")
def originals(tmp_path_factory, spec, small_data):
    """A store holding only the original population of ``spec``."""
    root = tmp_path_factory.mktemp("originals")
    store, _ = build_zoo(spec, root, stages=["original"], progress=False)
    return store


@pytest.fixture(scope="module")
def mp_store(tmp_path_factory, originals, spec, small_data):
    root = tmp_path_factory.mktemp("mp")
    shutil.copytree(originals.zoo_dir, root / spec.name)
    store, _ = build_zoo(spec, root, stages=["mp"], resume=True, progress=False)
    return store


def torch_prune_mask(model: torch.nn.Module, level: float) -> np.ndarray:
    """The flat keep-mask torch's own global unstructured L1 pruning gives (biases kept)."""
    layers = [layer for _, layer in parametrised_layers(model)]
    prune.global_unstructured([(layer, "weight") for layer in layers], prune.L1Unstructured, amount=level)
    masks = {f"{name}.weight": layer.weight_mask for name, layer in parametrised_layers(model)}
    layout = ParameterLayout.from_module(model)
    return np.concatenate([
        masks[e.name].reshape(-1).bool().numpy() if e.kind == "weight" else np.ones(e.size, dtype=bool)
        for e in layout.entries
    ])


@pytest.mark.parametrize("architecture,init,seed", [
    ("cnn_s", "kaiming_uniform", 1), ("cnn_s", "normal", 7), ("cnn_l", "kaiming_normal", 3),
])
@pytest.mark.parametrize("level", [0.1, 0.33, 0.5, 0.9])
def test_mask_equals_torch_global_unstructured(architecture, init, seed, level):
    model = seeded_model(architecture, 3, "tanh", 0.0, init, seed)
    layout = ParameterLayout.from_module(model)
    flat = layout.flatten_module(model).numpy()
    ours = global_magnitude_mask(flat, layout, level)
    np.testing.assert_array_equal(ours, torch_prune_mask(model, level))
    assert (~ours).sum() == prune_count(level, layout.num_weights) == round(level * layout.num_weights)
    assert ours[~layout.weight_mask()].all()  # biases are never pruned


def test_ties_at_threshold_prune_earlier_weights_first():
    model = seeded_model("cnn_s", 1, "tanh", 0.0, "uniform", 1)
    layout = ParameterLayout.from_module(model)
    flat = np.full(layout.num_params, 0.5, dtype=np.float32)  # every weight ties
    keep = global_magnitude_mask(flat, layout, 0.25)
    weight_positions = np.flatnonzero(layout.weight_mask())
    k = prune_count(0.25, layout.num_weights)
    assert not keep[weight_positions[:k]].any()
    assert keep[weight_positions[k:]].all()


def masked_job(optimizer: str, weight_decay: float, level: float = 0.7, epochs: int = 2) -> TrainJob:
    first = get_spec("digits_seed").models()[0]
    config = dataclasses.replace(first, optimizer=optimizer, weight_decay=weight_decay)
    model = seeded_model("cnn_s", 1, config.activation, 0.0, config.init, config.seed)
    layout = ParameterLayout.from_module(model)
    flat = layout.flatten_module(model).numpy()
    mask = global_magnitude_mask(flat, layout, level)
    return TrainJob(key=UnitKey(0, level), config=config, architecture="cnn_s", method="mp", epochs=epochs,
                    lr=1e-2, batch_size=10, seed=5, initial=flat, mask=mask)


@pytest.mark.parametrize("optimizer,weight_decay", [("adam", 1e-2), ("sgd", 1e-2)])
def test_optimizer_state_never_touches_pruned_weights(optimizer, weight_decay):
    job = masked_job(optimizer, weight_decay)
    recipe = get_method("mp")
    model = recipe.build(job, channels=1)
    opt = make_optimizer(optimizer, list(model.parameters()), job.lr, weight_decay)
    data = small_digits()
    start = model.layout.flatten_module(model.plain).numpy()
    for idx in torch.randperm(50, generator=torch.Generator().manual_seed(job.seed)).split(10):
        loss = recipe.loss(model, model(data.train_x[idx]), data.train_y[idx], 50, 1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    weights, keep, _ = recipe.state(model)
    np.testing.assert_array_equal(keep, job.mask)
    assert (weights[~job.mask] == 0.0).all()
    assert (weights[job.mask] != start[job.mask]).mean() > 0.5  # the kept weights did train
    buffers = ["exp_avg", "exp_avg_sq"] if optimizer == "adam" else ["momentum_buffer"]
    params = dict(model.plain.named_parameters())
    for name, keep in model.param_masks().items():
        pruned, param = ~keep, params[name]
        assert pruned.any()
        for buffer in buffers:
            assert (opt.state[param][buffer][pruned] == 0).all(), f"{buffer} of {name} moved where pruned"


@pytest.mark.parametrize("optimizer,weight_decay", [("adam", 1e-3), ("sgd", 1e-2)])
def test_trained_twin_keeps_zeros_mask_and_level(optimizer, weight_decay):
    job = masked_job(optimizer, weight_decay)
    result = next(ReferenceTrainer().run([job], small_digits()))
    layout = ParameterLayout.from_module(seeded_model("cnn_s", 1, "tanh", 0.0, "uniform", 1))
    assert result.weights.shape[0] == job.epochs + 1
    assert (result.masks == job.mask).all()
    assert (result.weights[:, ~job.mask] == 0.0).all()
    assert not np.array_equal(result.weights[0], result.weights[-1])
    for row in result.metrics:
        assert abs(row["sparsity"] - job.key.level) <= 1 / layout.num_weights


def test_stored_epoch0_mask_is_torch_prune_of_original(originals, mp_store, spec):
    for model_id in spec.model_subset:
        for level in LEVELS:
            model = originals.model("original", model_id, epoch=-1)
            expected = torch_prune_mask(model, level)
            stored = mp_store.array("masks", "mp", model_id, epoch=0, level=level)
            np.testing.assert_array_equal(stored, expected)
            masks = mp_store.array("masks", "mp", model_id, epoch=slice(None), level=level)
            assert (masks == expected).all()  # the mask never changes
            weights = mp_store.array("weights", "mp", model_id, epoch=slice(None), level=level)
            assert (weights[:, ~expected] == 0.0).all()


def test_states_table_sparsity_and_agreement(originals, mp_store, spec):
    states = mp_store.states("mp")
    layout = mp_store.layout
    assert len(states) == len(spec.model_subset) * len(LEVELS) * (spec.mp.epochs + 1)
    assert sorted(states.model_id.unique()) == sorted(originals.states("original").model_id.unique())
    assert (abs(states.sparsity - states.level) <= 1 / layout.num_weights).all()
    data = small_digits()
    for row in states[states.epoch.isin([0, spec.mp.epochs])].itertuples():
        weights = mp_store.weights("mp", row.model_id, epoch=row.epoch, level=row.level)
        for layer, value in layout.layer_sparsity(weights).items():
            assert getattr(row, f"sparsity_{layer}") == pytest.approx(value)
        _, _, original_pred = evaluate(originals.model("original", row.model_id), data.test_x, data.test_y)
        twin = mp_store.model("mp", row.model_id, epoch=row.epoch, level=row.level)
        _, test_acc, twin_pred = evaluate(twin, data.test_x, data.test_y)
        assert row.agreement == pytest.approx(agreement(twin_pred, original_pred))
        assert row.test_acc == pytest.approx(test_acc)


def test_cli_mp_without_originals_fails_with_one_line(tmp_path):
    args = ["--zoo", "digits_seed", "--stages", "mp", "--out", str(tmp_path), "--quiet"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "original" in lines[0] and "--stages original" in lines[0]


class Interrupted(Exception):
    pass


class StopAfter(ReferenceTrainer):
    """A trainer killed after ``n`` finished units."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n

    def run(self, jobs, data, on_epoch=None):
        for i, result in enumerate(super().run(jobs, data, on_epoch)):
            if i == self.n:
                raise Interrupted
            yield result


def test_interrupted_mp_resumes_to_identical_population(tmp_path, originals, spec, small_data):
    """Same trainer (the per-model reference) for both builds, so results must match bit for bit."""
    for name in ("whole", "resumed"):
        shutil.copytree(originals.zoo_dir, tmp_path / name / spec.name)
    whole, _ = build_zoo(spec, tmp_path / "whole", stages=["mp"], resume=True, trainer=ReferenceTrainer(),
                         progress=False)
    with pytest.raises(Interrupted):
        build_zoo(spec, tmp_path / "resumed", stages=["mp"], resume=True, trainer=StopAfter(1), progress=False)
    resumed, reports = build_zoo(spec, tmp_path / "resumed", stages=["mp"], resume=True,
                                 trainer=ReferenceTrainer(), progress=False)
    assert reports[0].units_trained == len(spec.model_subset) * len(LEVELS) - 1
    for model_id in spec.model_subset:
        for level in LEVELS:
            for array in ("weights", "masks"):
                np.testing.assert_array_equal(resumed.array(array, "mp", model_id, slice(None), level),
                                              whole.array(array, "mp", model_id, slice(None), level))
    columns = ["model_id", "level", "epoch", "test_acc", "train_loss", "agreement", "sparsity"]
    sort = ["model_id", "level", "epoch"]
    np.testing.assert_array_equal(resumed.states("mp")[columns].sort_values(sort).to_numpy(),
                                  whole.states("mp")[columns].sort_values(sort).to_numpy())
