"""Sparse variational dropout: layers, KL, thresholding, the vd recipe and the vd stage."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from builders.build import build_zoo
from zoo_dataset.architectures import build_model, initialize
from zoo_dataset.data import load_dataset
from zoo_dataset.errors import StoreError
from zoo_dataset.layout import ParameterLayout
from zoo_dataset.methods import vd as vd_method
from zoo_dataset.metrics import evaluate
from zoo_dataset.sparsify import sampling_cpu
from zoo_dataset.sparsify.variational import (
    BIAS_LOG_ALPHA,
    LOG_ALPHA_MAX,
    LOG_ALPHA_MIN,
    THETA_EPS,
    VAR_EPS,
    VDConv2d,
    VDLinear,
    flat_state,
    kl_approx,
    sampled_output,
    to_plain,
    to_variational,
)
from zoo_dataset.specs import ModelConfig, get_spec
from zoo_dataset.training import ReferenceTrainer, TrainJob, UnitKey

THRESHOLD = 3.0


def numpy_log_alpha(theta: np.ndarray, log_sigma2: np.ndarray) -> np.ndarray:
    return np.clip(
        log_sigma2 - np.log(theta.astype(np.float64) ** 2 + THETA_EPS), LOG_ALPHA_MIN, LOG_ALPHA_MAX
    )


def numpy_kl(log_alpha: np.ndarray) -> float:
    k1, k2, k3 = 0.63576, 1.87320, 1.48695
    neg_kl = k1 / (1 + np.exp(-(k2 + k3 * log_alpha))) - 0.5 * np.log1p(np.exp(-log_alpha)) - k1
    return float(-neg_kl.sum())


def randomise(layer, rng: np.random.Generator) -> None:
    """Spread log_sigma2 so that log_alpha covers the clip range on both sides of the threshold."""
    with torch.no_grad():
        layer.log_sigma2.copy_(torch.from_numpy(rng.uniform(-14, 6, layer.weight.shape).astype(np.float32)))
        layer.bias.copy_(torch.from_numpy(rng.normal(size=layer.bias.shape).astype(np.float32)))


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def conv_by_patches(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Valid, stride-1 convolution written as a sum over kernel offsets (no torch conv)."""
    n, _, h, width = x.shape
    o, _, kh, kw = w.shape
    out = np.zeros((n, o, h - kh + 1, width - kw + 1))
    for i in range(kh):
        for j in range(kw):
            patch = x[:, :, i : i + h - kh + 1, j : j + width - kw + 1]
            out += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j])
    return out


def test_kl_matches_the_formula(rng):
    layer = VDLinear(30, 7)
    randomise(layer, rng)
    expected = numpy_kl(numpy_log_alpha(layer.weight.detach().numpy(), layer.log_sigma2.detach().numpy()))
    assert float(layer.kl().detach()) == pytest.approx(expected, rel=1e-5)
    net = to_variational(build_model("cnn_s", 1, "tanh"))
    for _, vd in net.vd_layers():
        randomise(vd, rng)
    total = sum(
        numpy_kl(numpy_log_alpha(v.weight.detach().numpy(), v.log_sigma2.detach().numpy()))
        for _, v in net.vd_layers()
    )
    assert float(net.kl().detach()) == pytest.approx(total, rel=1e-5)


@pytest.mark.parametrize(("objective", "warmup", "epoch", "n_train", "factor"), [
    ("elbo", 0, 1, 500, 1 / 500),          # the negative ELBO per sample
    ("elbo", 4, 1, 500, 0.25 / 500),       # linear warm-up
    ("elbo", 4, 9, 500, 1 / 500),
    ("original", 4, 1, 500, 0.0),          # the original code's ramp starts at 0 and ignores N and warm-up
    ("original", 0, 25, 500, 0.01 * 24 / 25),
])
def test_kl_factor_follows_the_chosen_objective(objective, warmup, epoch, n_train, factor, rng):
    net = to_variational(build_model("cnn_s", 1, "tanh"), kl_warmup_epochs=warmup, kl_objective=objective)
    assert net.kl_factor(epoch, n_train) == pytest.approx(factor)
    x, y = torch.randn(6, 1, 28, 28), torch.randint(0, 10, (6,))
    net.eval()  # deterministic forward: the objective is exactly CE + factor * KL
    with torch.no_grad():
        logits = net(x)
        expected = torch.nn.functional.cross_entropy(logits, y) + factor * net.kl()
        assert float(net.objective(logits, y, n_train, epoch)) == pytest.approx(float(expected), rel=1e-6)


def test_unknown_kl_objective_is_refused():
    with pytest.raises(ValueError, match="unknown VD KL objective 'elbow'"):
        to_variational(build_model("cnn_s", 1, "tanh"), kl_objective="elbow")


def test_kl_falls_as_alpha_grows_and_stays_positive():
    """Noisier weights cost less: the penalty pushes log_alpha up, towards dropping weights."""
    log_alpha = torch.linspace(LOG_ALPHA_MIN, LOG_ALPHA_MAX, 50)
    kls = np.array([float(kl_approx(a.reshape(1))) for a in log_alpha])
    assert np.all(np.diff(kls) < 0) and kls[-1] > 0


def _fixed_noise(monkeypatch, value: float) -> None:
    monkeypatch.setattr(torch, "randn_like", lambda t: torch.full_like(t, value))


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_train_mode_mean_and_variance_match_the_formulas(kind, rng, monkeypatch):
    layer = VDLinear(12, 5) if kind == "linear" else VDConv2d(3, 4, 3)
    randomise(layer, rng)
    x_np = rng.normal(size=(6, 12) if kind == "linear" else (6, 3, 7, 7)).astype(np.float32)
    w = layer.weight.detach().numpy().astype(np.float64)
    alpha = np.exp(numpy_log_alpha(w, layer.log_sigma2.detach().numpy()))
    b = layer.bias.detach().numpy()
    if kind == "linear":
        mean = x_np @ w.T + b
        var = (x_np**2) @ (alpha * w**2).T
    else:
        mean = conv_by_patches(x_np, w) + b[None, :, None, None]
        var = conv_by_patches(x_np**2, alpha * w**2)
    layer.train()
    x = torch.from_numpy(x_np)
    _fixed_noise(monkeypatch, 0.0)
    np.testing.assert_allclose(layer(x).detach().numpy(), mean, rtol=1e-4, atol=1e-4)
    _fixed_noise(monkeypatch, 1.0)
    np.testing.assert_allclose(layer(x).detach().numpy(), mean + np.sqrt(var + VAR_EPS), rtol=1e-4, atol=1e-4)


def test_sampled_output_and_its_gradient_are_those_of_the_formula(rng):
    """The fused sample (one pass forward, its own backward) against autograd of the plain formula."""
    mean, variance, noise = (torch.from_numpy(a) for a in (
        rng.normal(size=(4, 6)), rng.uniform(1e-4, 2.0, size=(4, 6)), rng.normal(size=(4, 6))))
    mean.requires_grad_(), variance.requires_grad_()
    assert torch.autograd.gradcheck(lambda m, v: sampled_output(m, v, noise), (mean, variance))
    upstream = torch.from_numpy(rng.normal(size=(4, 6)))
    fused = torch.autograd.grad(sampled_output(mean, variance, noise), (mean, variance), upstream)
    formula = mean + torch.sqrt(variance + VAR_EPS) * noise
    plain = torch.autograd.grad(formula, (mean, variance), upstream)
    torch.testing.assert_close(sampled_output(mean, variance, noise), formula)
    for got, expected in zip(fused, plain, strict=True):
        torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_compiled_cpu_sample_matches_the_formula_and_its_gradient(rng, layout, monkeypatch):
    """float32 on CPU takes the compiled pass (in whatever dense order the engine's tensors lie):
    its output and gradients are those of autograd over the formula, to float32 rounding."""
    shape = (3, 8, 5, 4)
    mean, variance, noise = (torch.from_numpy(a.astype(np.float32)) for a in (
        rng.normal(size=shape), rng.uniform(0.0, 2.0, size=shape), rng.normal(size=shape)))
    if layout == "channels_last":
        mean, variance, noise = (t.contiguous(memory_format=torch.channels_last) for t in (mean, variance, noise))
    mean.requires_grad_(), variance.requires_grad_()
    upstream = torch.from_numpy(rng.normal(size=shape).astype(np.float32))
    compiled, passes = sampling_cpu._sample, []
    monkeypatch.setattr(sampling_cpu, "_sample", lambda *arrays: passes.append(compiled(*arrays)))
    drawn = noise.clone()
    fused = sampled_output(mean, variance, noise)
    assert len(passes) == 1
    formula = mean + torch.sqrt(variance + VAR_EPS) * noise
    torch.testing.assert_close(fused, formula)
    assert fused.stride() == mean.stride()
    for got, expected in zip(torch.autograd.grad(fused, (mean, variance), upstream),
                             torch.autograd.grad(formula, (mean, variance), upstream), strict=True):
        torch.testing.assert_close(got, expected)
    assert torch.equal(noise, drawn)  # the caller's draw is left as it was


def test_train_mode_samples_have_that_mean_and_variance(rng):
    torch.manual_seed(0)
    layer = VDLinear(8, 3)
    randomise(layer, rng)
    x = torch.from_numpy(rng.normal(size=(1, 8)).astype(np.float32)).expand(20000, 8)
    w = layer.weight.detach().numpy().astype(np.float64)
    alpha = np.exp(numpy_log_alpha(w, layer.log_sigma2.detach().numpy()))
    x0 = x[0].numpy()
    with torch.no_grad():
        samples = layer.train()(x).numpy()
    np.testing.assert_allclose(
        samples.mean(0),
        x0 @ w.T + layer.bias.detach().numpy(),
        atol=4 * np.sqrt(((x0**2) @ (alpha * w**2).T).max() / 20000) + 1e-4,
    )
    np.testing.assert_allclose(samples.var(0), (x0**2) @ (alpha * w**2).T + VAR_EPS, rtol=0.06)


def test_eval_mode_equals_a_plain_model_masked_at_the_threshold(rng):
    plain = build_model("cnn_s", 1, "relu")
    vd = to_variational(plain, threshold=THRESHOLD)
    for _, layer in vd.vd_layers():
        randomise(layer, rng)
    # an independent masked plain model: weights with log_alpha >= 3 set to zero
    masked = build_model("cnn_s", 1, "relu")
    dropped = 0
    with torch.no_grad():
        for name, layer in vd.vd_layers():
            w = layer.weight.numpy()
            keep = numpy_log_alpha(w, layer.log_sigma2.numpy()) < THRESHOLD
            dropped += int((~keep).sum())
            getattr(masked, name).weight.copy_(torch.from_numpy(np.where(keep, w, 0.0)))
            getattr(masked, name).bias.copy_(layer.bias)
    assert 0 < dropped < sum(layer.weight.numel() for _, layer in vd.vd_layers())
    x = torch.from_numpy(rng.normal(size=(16, 1, 28, 28)).astype(np.float32))
    with torch.no_grad():
        expected = masked.eval()(x)
        np.testing.assert_allclose(vd.eval()(x).numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(to_plain(vd).eval()(x).numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)


def test_conversion_keeps_weights_layout_and_dropout():
    torch.manual_seed(3)
    plain = build_model("cnn_l", 3, "gelu", dropout=0.5)
    initialize(plain, "kaiming_uniform")
    vd = to_variational(plain)
    layout = ParameterLayout.from_module(plain)
    assert ParameterLayout.from_module(vd) == layout
    assert torch.equal(layout.flatten_module(vd), layout.flatten_module(plain))
    assert [n for n, _ in vd.named_children()] == [n for n, _ in plain.named_children()]
    assert isinstance(vd.drop1, torch.nn.Dropout) and vd.drop1.p == 0.5
    theta, mask, log_alpha = flat_state(vd)
    weights = layout.weight_mask()
    assert np.all(log_alpha[~weights] == BIAS_LOG_ALPHA) and mask[~weights].all()
    np.testing.assert_array_equal(mask, log_alpha < THRESHOLD)
    np.testing.assert_allclose(theta, layout.flatten_module(plain).numpy())


def _tiny_job(arch: str, activation: str, dropout: float, init: str) -> tuple[TrainJob, tuple]:
    size, channels = (28, 1) if arch == "cnn_s" else (32, 3)
    gen = torch.Generator().manual_seed(1)
    train_x, test_x = (
        torch.randn(40, channels, size, size, generator=gen),
        torch.randn(20, channels, size, size, generator=gen),
    )
    train_y, test_y = torch.randint(0, 10, (40,), generator=gen), torch.randint(0, 10, (20,), generator=gen)
    torch.manual_seed(5)
    start = build_model(arch, channels, activation, dropout)
    initialize(start, init)
    config = ModelConfig(0, 5, activation, "adam", 1e-2, 1e-3, dropout, init)
    job = TrainJob(
        key=UnitKey(0),
        config=config,
        architecture=arch,
        method="vd",
        epochs=2,
        lr=1e-2,
        batch_size=10,
        seed=5,
        initial=ParameterLayout.from_module(start).flatten_module(start).numpy(),
    )
    return job, (channels, train_x, train_y, test_x, test_y)


@pytest.mark.parametrize(
    ("arch", "activation", "dropout", "init"),
    [
        ("cnn_s", "sigmoid", 0.0, "uniform"),
        ("cnn_s", "tanh", 0.5, "normal"),
        ("cnn_s", "relu", 0.0, "kaiming_normal"),
        ("cnn_s", "gelu", 0.5, "kaiming_uniform"),
        ("cnn_l", "sigmoid", 0.5, "kaiming_uniform"),
        ("cnn_l", "tanh", 0.0, "uniform"),
        ("cnn_l", "relu", 0.5, "normal"),
        ("cnn_l", "gelu", 0.0, "kaiming_normal"),
    ],
)
def test_vd_training_never_gives_nan(arch, activation, dropout, init):
    job, args = _tiny_job(arch, activation, dropout, init)
    result = ReferenceTrainer().run_one(job, *args)
    assert result.weights.shape == result.log_alpha.shape == result.masks.shape == (3, job.initial.size)
    assert np.isfinite(result.weights).all() and np.isfinite(result.log_alpha).all()
    for row in result.metrics:
        assert all(np.isfinite(v) for k, v in row.items() if k != "agreement"), row
    np.testing.assert_array_equal(result.masks, result.log_alpha < THRESHOLD)
    np.testing.assert_array_equal(result.weights[0], job.initial)


# ---------------------------------------------------------------------------- the vd stage


@pytest.fixture(scope="module")
def vd_spec():
    """Two digits models, one shard each, 1 original epoch and 2 VD epochs."""
    return get_spec("digits_seed").with_overrides(
        model_subset=[0, 1], epochs=1, vd_epochs=2, models_per_shard=1
    )


@pytest.fixture(scope="module")
def original_only(tmp_path_factory, vd_spec):
    root = tmp_path_factory.mktemp("vd-original")
    build_zoo(vd_spec, root, stages=["original"], progress=False)
    return root


class CrashAfter:
    """A trainer that dies before its (n+1)-th unit, like a build killed mid-stage."""

    def __init__(self, n: int):
        self.n, self.done, self.inner = n, 0, ReferenceTrainer()

    def run(self, jobs, data, on_epoch=None):
        for job in jobs:
            if self.done == self.n:
                raise KeyboardInterrupt
            yield from self.inner.run([job], data, on_epoch)
            self.done += 1


@pytest.fixture(scope="module")
def interrupted_then_resumed(tmp_path_factory, original_only, vd_spec):
    """The vd stage killed after its first model, then resumed: (shards after the kill, store, report)."""
    root = tmp_path_factory.mktemp("vd-full")
    shutil.copytree(original_only / vd_spec.name, root / vd_spec.name)
    with pytest.raises(KeyboardInterrupt):
        build_zoo(vd_spec, root, stages=["vd"], resume=True, trainer=CrashAfter(1), progress=False)
    manifest = json.loads((root / vd_spec.name / "manifest.json").read_text())
    after_kill = manifest["populations"]["vd"]["shards"]
    store, reports = build_zoo(vd_spec, root, stages=["vd"], resume=True, progress=False)
    return after_kill, store, reports[0]


@pytest.fixture(scope="module")
def vd_store(interrupted_then_resumed):
    return interrupted_then_resumed[1]


def test_vd_store_masks_are_exactly_log_alpha_below_threshold(vd_store, vd_spec):
    layout = vd_store.layout
    for model_id in (0, 1):
        masks = vd_store.array("masks", "vd", model_id, slice(None))
        log_alpha = vd_store.array("log_alpha", "vd", model_id, slice(None))
        assert masks.shape == log_alpha.shape == (vd_spec.vd.epochs + 1, layout.num_params)
        np.testing.assert_array_equal(masks, log_alpha < vd_spec.vd.threshold)
        assert np.isfinite(vd_store.array("weights", "vd", model_id, slice(None))).all()


def test_vd_epoch_zero_is_the_original_and_sparsity_rises(vd_store, vd_spec):
    vd = vd_store.states("vd").sort_values(["model_id", "epoch"])
    original = vd_store.states("original")
    assert sorted(vd.model_id.unique()) == [0, 1]
    n_test = 360  # digits: 20 % of 1797
    for model_id, rows in vd.groupby("model_id"):
        final = original[(original.model_id == model_id) & (original.epoch == original.epoch.max())].iloc[0]
        start = rows.iloc[0]
        np.testing.assert_array_equal(
            vd_store.weights("vd", model_id, 0), vd_store.weights("original", model_id)
        )
        assert abs(start.test_acc - final.test_acc) <= 2 / n_test
        assert start.agreement >= 0.99 and start.sparsity < 0.01
        assert list(rows.epoch) == list(range(vd_spec.vd.epochs + 1))
        assert rows.sparsity.iloc[-1] > start.sparsity + 0.05
        assert {f"sparsity_{layer}" for layer in vd_store.layout.layers} <= set(rows.columns)


def test_vd_stage_resumes_without_redoing_finished_models(interrupted_then_resumed):
    after_kill, store, report = interrupted_then_resumed
    assert [s["model_ids"] for s in after_kill] == [[0]]
    assert report.units_total == 2 and report.units_trained == 1
    shards = store.population("vd").shards
    assert [s.model_ids for s in shards] == [[0], [1]] and shards[0].sha256 == after_kill[0]["sha256"]
    store.verify()


def test_recorded_accuracy_is_that_of_the_pruned_model_the_store_returns(vd_store):
    data = load_dataset("digits", 28)
    states = vd_store.states("vd")
    for model_id in (0, 1):
        recorded = states[(states.model_id == model_id) & (states.epoch == states.epoch.max())].iloc[0]
        net = vd_store.model("vd", model_id, epoch=-1)
        _, acc, _ = evaluate(net, data.test_x, data.test_y)
        assert acc == pytest.approx(recorded.test_acc, abs=1e-6)
        zeros = sum(int((getattr(net, layer).weight == 0).sum()) for layer in vd_store.layout.layers)
        assert zeros / vd_store.layout.num_weights == pytest.approx(recorded.sparsity, abs=1e-6)


def test_original_kl_objective_is_recorded_and_its_first_epoch_has_no_kl(tmp_path, vd_spec, original_only,
                                                                         monkeypatch):
    """kl_objective="original" ramps the KL from 0: epoch 1 is cross-entropy alone. So a build whose KL
    is a thousandfold records the same epoch 1, bit for bit (the KL's weight is exactly 0, whatever
    the CPU rounds), and another epoch 2, where the ramp has begun."""
    spec = vd_spec.with_overrides(vd_kl_objective="original")
    with pytest.raises(StoreError, match="different settings"):  # a store keeps one objective
        build_zoo(spec, original_only, stages=["vd"], progress=False)
    store, _ = build_zoo(spec, tmp_path / "as-is", stages=["original", "vd"], progress=False)
    assert store.manifest.zoo_spec.vd.kl_objective == "original"
    monkeypatch.setattr(vd_method, "kl_approx", lambda log_alpha: 1000 * kl_approx(log_alpha))
    louder, _ = build_zoo(spec, tmp_path / "louder", stages=["original", "vd"], progress=False)
    for model_id in (0, 1):
        for name in ("weights", "log_alpha"):
            epoch1 = [s.array(name, "vd", model_id, 1) for s in (store, louder)]
            np.testing.assert_array_equal(*epoch1)
        epoch2 = [s.array("log_alpha", "vd", model_id, 2) for s in (store, louder)]
        assert not np.array_equal(*epoch2)
