"""The population engine agrees with the per-model reference trainer (the oracle).

Small populations (2 models per batched group, with different lr / weight decay / init / seed),
2 epochs on a slice of the digits, for each activation, optimizer and recipe kind (the pairs of
activation and optimizer vary across tests so that each one meets both optimizers).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from zoo_dataset.architectures import build_model
from zoo_dataset.counter_rng import CounterRNG, StepDraws, drawing
from zoo_dataset.data import ImageData, load_dataset
from zoo_dataset.errors import ZooSpecError
from zoo_dataset.layout import ParameterLayout
from zoo_dataset.methods import Method, get_method, methods
from zoo_dataset.sparsify.magnitude import global_magnitude_mask
from zoo_dataset.specs import VD_THRESHOLD, ModelConfig
from zoo_dataset.training import ReferenceTrainer, TrainJob, UnitKey
from zoo_dataset.training.batched_ops import per_model_input
from zoo_dataset.training.engine import PopulationEngine, TrainingGroup

EPOCHS = 2
WEIGHT_ATOL = 1e-4  # float rounding (grouped vs per-model conv) compounds over the steps
METRIC_ATOL = 1e-4
N_TRAIN, N_TEST = 75, 40
# Equal-up-to-rounding weights may still flip one near-tie prediction, or move one VD weight's log_alpha
# across the threshold: counted metrics may then differ by one count (the smallest layer, smallcnn's conv1,
# has 144 weights).
ONE_COUNT = {"test_acc": 1 / N_TEST, "agreement": 1 / N_TEST, "train_acc": 1 / N_TRAIN,
             "ggap": 1 / N_TEST + 1 / N_TRAIN, "sparsity": 1 / 144}


def tiny_data(image_size: int) -> ImageData:
    full = load_dataset("digits", image_size)
    # 75 samples: 7 full batches and a short last one, as real epochs end
    return ImageData("digits", full.train_x[:N_TRAIN], full.train_y[:N_TRAIN], full.test_x[:N_TEST],
                     full.test_y[:N_TEST])


@pytest.fixture(scope="module")
def data() -> ImageData:
    return tiny_data(28)


def configs(activation: str = "tanh", optimizer: str = "adam", dropout: float = 0.0) -> list[ModelConfig]:
    """Two models that share a batched group but differ in every per-model factor."""
    return [
        ModelConfig(0, seed=3, activation=activation, optimizer=optimizer, lr=1e-3, weight_decay=0.0,
                    dropout=dropout, init="kaiming_uniform"),
        ModelConfig(1, seed=11, activation=activation, optimizer=optimizer, lr=3e-3, weight_decay=1e-3,
                    dropout=dropout, init="xavier_normal"),
    ]


def plain_jobs(cfgs: list[ModelConfig], architecture: str = "cnn_s") -> list[TrainJob]:
    return [TrainJob(key=UnitKey(c.model_id), config=c, architecture=architecture, method="original", epochs=EPOCHS,
                     lr=c.lr, batch_size=10, seed=c.seed) for c in cfgs]


def twin_jobs(method: str, cfgs: list[ModelConfig], data: ImageData, variant: str = "cnn_ard",
              architecture: str = "cnn_s") -> list[TrainJob]:
    """Masked / VD jobs that start from briefly trained originals, as the MP and VD stages do. VD
    starts with a few conv biases near zero, so that cnn_ard drops them (|b| < e^-6.5) from epoch 0."""
    originals = {r.key.model_id: r for r in ReferenceTrainer().run(plain_jobs(cfgs, architecture), data)}
    layout = ParameterLayout.from_module(build_model(architecture, 1, "tanh"))
    jobs = []
    for c in cfgs:
        start = originals[c.model_id]
        weights = start.weights[-1].copy()
        if method == "vd":
            weights[layout.by_name["conv2.bias"].slice][:: 2 + c.model_id] = 1e-4
        jobs.append(TrainJob(
            key=UnitKey(c.model_id, 0.5 if method == "mp" else 0.0), config=c, architecture=architecture,
            method=method, epochs=EPOCHS, lr=c.lr, batch_size=10, seed=c.seed + 100, initial=weights,
            mask=global_magnitude_mask(weights, layout, 0.5) if method == "mp" else None,
            reference_predictions=start.test_predictions,
            options={"threshold": VD_THRESHOLD, "kl_warmup_epochs": int(variant == "elbo"), "variant": variant}
            if method == "vd" else {},
        ))
    return jobs


def run_both(jobs: list[TrainJob], data: ImageData):
    reference = {r.key: r for r in ReferenceTrainer().run(jobs, data)}
    engine = {r.key: r for r in PopulationEngine().run(jobs, data)}
    assert engine.keys() == reference.keys()
    return [(reference[j.key], engine[j.key]) for j in jobs]


def assert_metrics_close(ref_rows: list[dict], eng_rows: list[dict]) -> None:
    assert len(ref_rows) == len(eng_rows) == EPOCHS + 1
    for ref, eng in zip(ref_rows, eng_rows, strict=True):
        assert ref.keys() == eng.keys()
        for name, value in ref.items():
            atol = METRIC_ATOL + ONE_COUNT.get("sparsity" if name.startswith("sparsity") else name, 0.0)
            np.testing.assert_allclose(eng[name], value, atol=atol, err_msg=name)


def assert_same_training(pairs) -> None:
    for ref, eng in pairs:
        assert eng.weights.shape == ref.weights.shape
        np.testing.assert_allclose(eng.weights, ref.weights, atol=WEIGHT_ATOL)
        assert_metrics_close(ref.metrics, eng.metrics)
        # weights equal up to rounding may still flip a near-tie between two classes
        assert (eng.test_predictions != ref.test_predictions).sum() <= 1
    # the models really trained, and differently: equality above is not trivial
    assert not np.allclose(pairs[0][1].weights[-1], pairs[0][1].weights[0])
    assert not np.allclose(pairs[0][1].weights[-1], pairs[1][1].weights[-1])


@pytest.mark.parametrize(("activation", "optimizer"),
                         [("tanh", "adam"), ("sigmoid", "sgd"), ("relu", "sgd"), ("gelu", "adam")])
def test_plain_training_matches_reference(data, activation, optimizer):
    assert_same_training(run_both(plain_jobs(configs(activation, optimizer)), data))


def test_dropout_draws_the_reference_masks(data):
    """With dropout, each model's masks come from a generator seeded like the reference's global RNG."""
    assert_same_training(run_both(plain_jobs(configs("relu", "adam", dropout=0.3)), data))


def test_cnn_l_matches_reference():
    data = tiny_data(32)
    assert_same_training(run_both(plain_jobs(configs("relu", "sgd", dropout=0.1), "cnn_l"), data))


@pytest.mark.parametrize("method", ["original", "mp", "vd"])
def test_smallcnn_stride_two_and_global_pooling_match_reference(data, method):
    """The Small CNN Zoo's CNN (stride-2 convs, global average pooling, one dense layer) in every recipe:
    plain training with dropout, masked fine-tuning and VD through the engine's hooks."""
    cfgs = configs("relu", "sgd", dropout=0.1 if method == "original" else 0.0)
    jobs = plain_jobs(cfgs, "smallcnn") if method == "original" else twin_jobs(method, cfgs, data,
                                                                               architecture="smallcnn")
    assert_same_training(run_both(jobs, data))


def test_masked_finetuning_matches_reference_and_keeps_pruned_weights_zero(data):
    jobs = twin_jobs("mp", configs("tanh", "sgd"), data)
    pairs = run_both(jobs, data)
    assert_same_training(pairs)
    for job, (ref, eng) in zip(jobs, pairs, strict=True):
        np.testing.assert_array_equal(eng.masks, ref.masks)
        assert np.all(eng.weights[:, ~job.mask] == 0)


@pytest.mark.parametrize("variant", ["cnn_ard", "elbo"])
def test_vd_training_matches_reference(data, variant):
    pairs = run_both(twin_jobs("vd", configs("gelu", "adam"), data, variant), data)
    assert_same_training(pairs)
    conv_bias = ParameterLayout.from_module(build_model("cnn_s", 1, "gelu")).by_name["conv2.bias"].slice
    for ref, eng in pairs:
        # cnn_ard drops (and noises) conv biases, elbo never: both paths alike
        assert (not ref.masks[:, conv_bias].all()) == (variant == "cnn_ard")
        np.testing.assert_array_equal(eng.masks[:, conv_bias], ref.masks[:, conv_bias])
        # log_alpha = log sigma^2 - log theta^2 amplifies rounding where theta is small
        away_from_zero = np.abs(ref.weights) > 1e-2
        np.testing.assert_allclose(eng.log_alpha[away_from_zero], ref.log_alpha[away_from_zero], atol=1e-3)
        # the masks agree wherever rounding cannot move log_alpha across the threshold
        assert (eng.masks != ref.masks).sum(axis=-1).max() <= 1  # at most one weight per state


@pytest.mark.parametrize("variant", ["cnn_ard", "elbo"])
def test_a_vd_step_samples_penalises_and_prunes_as_the_per_model_layers(data, variant):
    """One training forward (same counter draws), its KL term and one eval forward of the stacked
    models equal each per-model VariationalNet's, with log_sigma2 (and cnn_ard's conv
    log_sigma2_bias) spread so that the bias variance alpha_b b^2, clamps and pruning all matter."""
    jobs = synthetic_jobs("vd", 2)
    for job in jobs:
        job.options["variant"] = variant
    group = TrainingGroup(jobs, channels=1, device=torch.device("cpu"))
    models = [get_method("vd").build(job, 1) for job in jobs]
    gen = torch.Generator().manual_seed(0)
    for m, model in enumerate(models):
        for name, layer in model.vd_layers():
            sigmas = [("log_sigma2", layer.log_sigma2)]
            sigmas += [("log_sigma2_bias", layer.log_sigma2_bias)] if layer.noisy_bias else []
            for extra, param in sigmas:
                with torch.no_grad():
                    param.copy_(torch.rand(param.shape, generator=gen) * 16 - 9)
                    group.net.extra(extra, name)[m].copy_(param)
    assert ("log_sigma2_bias" in group.net.flat_extras) == (variant == "cnn_ard")
    idx = group.rng.batches(len(data.train_x), 10, epoch=1)[0]
    stacked = group.net.forward(per_model_input(data.train_x[idx]), StepDraws(group.rng, 1, 0))
    kl = group.hooks.loss_term(group.net, epoch=3, n_train=len(data.train_x))
    evaluated = group.net.forward(data.test_x, draws=None)
    for m, (job, model) in enumerate(zip(jobs, models, strict=True)):
        rng = CounterRNG.for_jobs([job], "vd")
        with drawing(StepDraws(rng, 1, 0)):
            torch.testing.assert_close(stacked[m], model.train()(data.train_x[idx[m]]), rtol=1e-4, atol=1e-4)
        with torch.no_grad():
            torch.testing.assert_close(evaluated[m], model.eval()(data.test_x), rtol=1e-4, atol=1e-4)
    expected = sum(model.kl_factor(3, len(data.train_x)) * float(model.kl().detach()) for model in models)
    assert float(kl.detach()) == pytest.approx(expected, rel=1e-5)
    assert expected > 0


def test_mixed_jobs_are_grouped_and_all_returned(data):
    jobs = plain_jobs(configs("tanh", "adam")) + plain_jobs(
        [replace(c, model_id=c.model_id + 10) for c in configs("relu", "sgd")])
    jobs = [replace(j, key=UnitKey(j.config.model_id)) for j in jobs]
    results = list(PopulationEngine(max_models=1).run(jobs, data))
    assert sorted(r.key.model_id for r in results) == [0, 1, 10, 11]


class UnbatchedMethod(Method):
    """A registered method that gives the engine no hooks: its per-model recipe is the plain one."""

    name = "unbatched"
    label = description = "test method without a batched form"

    def build(self, job, channels):
        return methods()["original"].build(job, channels)


def test_methods_without_batched_form_are_refused_by_the_engine(data, monkeypatch):
    """No silent ~5x slower fallback: the engine says so in one line, the reference still trains it."""
    monkeypatch.setitem(methods(), "unbatched", UnbatchedMethod())
    jobs = [replace(j, method="unbatched") for j in plain_jobs(configs()[:1])]
    with pytest.raises(ZooSpecError, match="no batched form.*--engine reference"):
        list(PopulationEngine().run(jobs, data))
    (reference,) = ReferenceTrainer().run(jobs, data)
    (original,) = ReferenceTrainer().run(plain_jobs(configs()[:1]), data)
    # the same model and recipe; its data order is its own (the method names the counter stream)
    np.testing.assert_array_equal(reference.weights[0], original.weights[0])
    assert not np.array_equal(reference.weights[-1], reference.weights[0])
    assert not np.array_equal(reference.weights[-1], original.weights[-1])


def test_groups_split_into_equal_chunks(data, monkeypatch):
    """6 jobs with room for 4 per computation train as 3 + 3, not 4 + 2 (small groups waste the batching)."""
    sizes = []
    monkeypatch.setattr(PopulationEngine, "run_group",
                        lambda self, jobs, *args, **kwargs: sizes.append(len(jobs)) or [])
    cfgs = [replace(configs()[0], model_id=i, seed=i) for i in range(6)]
    list(PopulationEngine(max_models=4).run(plain_jobs(cfgs), data))
    assert sizes == [3, 3]
    sizes.clear()
    list(PopulationEngine(max_models=6).run(plain_jobs(cfgs), data))
    assert sizes == [6]


class _OpCounter(TorchDispatchMode):
    """Counts the tensor ops dispatched inside the block (forward and backward)."""

    def __init__(self):
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        return func(*args, **(kwargs or {}))


def synthetic_jobs(method: str, n: int) -> list[TrainJob]:
    """``n`` jobs of one group (dropout on: every kind of draw), started from an untrained state."""
    layout = ParameterLayout.from_module(build_model("cnn_s", 1, "tanh"))
    start = layout.flatten_module(build_model("cnn_s", 1, "tanh")).numpy()
    cfgs = [ModelConfig(m, seed=m + 1, activation="tanh", optimizer="adam", lr=1e-3, weight_decay=1e-4, dropout=0.5,
                        init="uniform") for m in range(n)]
    return [TrainJob(key=UnitKey(c.model_id, 0.5 if method == "mp" else 0.0), config=c, architecture="cnn_s",
                     method=method, epochs=1, lr=c.lr, batch_size=10, seed=c.seed,
                     initial=None if method == "original" else start,
                     mask=global_magnitude_mask(start, layout, 0.5) if method == "mp" else None)
            for c in cfgs]


@pytest.mark.parametrize("method", ["original", "mp", "vd"])
def test_a_training_step_dispatches_the_same_ops_for_any_number_of_models(data, method):
    """No Python loop over models inside a step: its host-side work does not grow with the group."""
    counts = []
    for n in (2, 5):
        group = TrainingGroup(synthetic_jobs(method, n), channels=1, device=torch.device("cpu"))
        idx = group.rng.batches(len(data.train_x), 10, epoch=1)[0]
        with _OpCounter() as counter:
            group.step(data.train_x, data.train_y, idx, epoch=1, step=0)
        counts.append(counter.ops)
    assert counts[0] == counts[1] > 0
