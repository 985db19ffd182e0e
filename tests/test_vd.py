"""Sparse variational dropout: layers, KL, thresholding, the vd recipe and the vd stage."""

from __future__ import annotations

import json
import shutil
from collections import OrderedDict

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from builders.build import build_zoo
from releases.ingest import Trial
from releases.vd_twins import start_state, twin_result
from zoo_dataset.architectures import build_model, initialize, parametrised_layers
from zoo_dataset.data import load_dataset
from zoo_dataset.errors import StoreError, ZooSpecError
from zoo_dataset.layout import ParameterLayout
from zoo_dataset.methods import vd as vd_method
from zoo_dataset.metrics import evaluate
from zoo_dataset.sparsify import sampling_cpu
from zoo_dataset.sparsify.variational import (
    BIAS_LOG_ALPHA,
    CNN_ARD,
    ELBO,
    VARIANTS,
    VariationalNet,
    VDConv2d,
    VDLinear,
    flat_state,
    get_variant,
    kl_approx,
    sampled_output,
    to_plain,
    to_variational,
)
from zoo_dataset.specs import VD_VARIANTS, ModelConfig, ZooSpec, get_spec, registry
from zoo_dataset.store.files import sha256_file
from zoo_dataset.store.manifest import PACKING_DIGEST
from zoo_dataset.training import ReferenceTrainer, TrainJob, UnitKey

THRESHOLD = 3.0
VARIANT_NAMES = ["cnn_ard", "elbo"]


def numpy_log_alpha(theta: np.ndarray, log_sigma2: np.ndarray, variant: str, conv: bool) -> np.ndarray:
    """The two variants' log alpha, written from their documented formulas. cnn_ard is the original
    zoos' Conv2dARD / LinearARD (ModelZoos/ModelZooDataset code/model_definitions/def_net_distillation.py,
    docs/research/original-zoos.md 4.1): log_sigma2 - 2 log(|w| + 1e-15), conv [-8, 8], linear [-10, 10]."""
    theta = theta.astype(np.float64)
    if variant == "cnn_ard":
        raw, bound = log_sigma2 - 2 * np.log(np.abs(theta) + 1e-15), 8.0 if conv else 10.0
    else:
        raw, bound = log_sigma2 - np.log(theta**2 + 1e-8), 10.0
    return np.clip(raw, -bound, bound)


def numpy_kl(log_alpha: np.ndarray) -> float:
    k1, k2, k3 = 0.63576, 1.87320, 1.48695
    neg_kl = k1 / (1 + np.exp(-(k2 + k3 * log_alpha))) - 0.5 * np.log1p(np.exp(-log_alpha)) - k1
    return float(-neg_kl.sum())


def layer_log_alphas(layer) -> tuple[np.ndarray, np.ndarray | None]:
    """(weights', bias's or None) log alpha of a VD layer by the numpy formulas."""
    conv = isinstance(layer, VDConv2d)
    w = numpy_log_alpha(layer.weight.detach().numpy(), layer.log_sigma2.detach().numpy(), layer.variant.name, conv)
    if not layer.noisy_bias:
        return w, None
    return w, numpy_log_alpha(layer.bias.detach().numpy(), layer.log_sigma2_bias.detach().numpy(),
                              layer.variant.name, conv)


def randomise(layer, rng: np.random.Generator) -> None:
    """Spread log_sigma2 (and a variational bias's) so that log_alpha covers the clip range on both
    sides of the threshold."""
    with torch.no_grad():
        layer.log_sigma2.copy_(torch.from_numpy(rng.uniform(-14, 6, layer.weight.shape).astype(np.float32)))
        layer.bias.copy_(torch.from_numpy(rng.normal(size=layer.bias.shape).astype(np.float32)))
        if layer.noisy_bias:
            layer.log_sigma2_bias.copy_(torch.from_numpy(rng.uniform(-14, 6, layer.bias.shape).astype(np.float32)))


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


def test_the_variants_are_the_spec_choices_and_cnn_ard_is_the_default_of_every_packaged_zoo():
    assert set(VARIANTS) == set(VD_VARIANTS) == set(VARIANT_NAMES)
    variants = {name: spec.vd.variant for name, spec in registry().items()}
    # the paper's zoos, the embedded demo zoos and the 256-model hyper-representation zoos
    assert set(variants.values()) == {"cnn_ard"}
    assert {"digits_seed", "digits_random", "digits_256", "digits_random_256"} <= set(variants)
    with pytest.raises(ValueError, match="unknown VD variant 'elbow'"):
        get_variant("elbow")
    with pytest.raises(ZooSpecError, match="vd.variant 'elbow'"):
        get_spec("digits_seed").with_overrides(vd_variant="elbow")
    with pytest.raises(ZooSpecError, match="warm-up of the elbo variant only"):
        get_spec("digits_seed").with_overrides(vd_kl_warmup_epochs=3)
    assert get_spec("digits_seed").with_overrides(vd_variant="elbo", vd_kl_warmup_epochs=3).vd.kl_warmup_epochs == 3


def test_a_spec_recorded_before_variants_existed_reads_as_the_elbo_layers_it_was_built_with():
    recorded = get_spec("digits_seed").to_dict()
    vd = recorded["vd"]
    del vd["variant"]
    vd["kl_objective"] = "elbo"
    assert ZooSpec.from_dict(recorded).vd.variant == "elbo"


@pytest.mark.parametrize(("variant", "conv", "bounds"), [
    ("cnn_ard", True, (-8.0, 8.0)), ("cnn_ard", False, (-10.0, 10.0)),  # the original's clamps
    ("elbo", True, (-10.0, 10.0)), ("elbo", False, (-10.0, 10.0)),
])
def test_log_alpha_follows_the_variant_formula_and_clamps(variant, conv, bounds, rng):
    theta = np.concatenate([[0.0, 1e-20, -1e-20], rng.normal(scale=0.3, size=200)]).astype(np.float32)
    log_sigma2 = rng.uniform(-25, 15, size=theta.shape).astype(np.float32)
    got = get_variant(variant).log_alpha(torch.from_numpy(theta), torch.from_numpy(log_sigma2), conv).numpy()
    np.testing.assert_allclose(got, numpy_log_alpha(theta, log_sigma2, variant, conv), atol=1e-4)
    assert got.min() == bounds[0] and got.max() == bounds[1]


@pytest.mark.parametrize("variant", VARIANT_NAMES)
def test_kl_matches_the_formula(variant, rng):
    layer = VDLinear(30, 7, variant=get_variant(variant))
    randomise(layer, rng)
    expected = numpy_kl(layer_log_alphas(layer)[0])
    assert float(layer.kl().detach()) == pytest.approx(expected, rel=1e-5)
    net = to_variational(build_model("cnn_s", 1, "tanh"), variant)
    for _, vd in net.vd_layers():
        randomise(vd, rng)
    total = 0.0
    for _, layer in net.vd_layers():  # cnn_ard: the conv biases' terms too, as Conv2dARD.get_reg
        weights, bias = layer_log_alphas(layer)
        total += numpy_kl(weights) + (numpy_kl(bias) if bias is not None else 0.0)
        assert (bias is not None) == (variant == "cnn_ard" and isinstance(layer, VDConv2d))
    assert float(net.kl().detach()) == pytest.approx(total, rel=1e-5)


@pytest.mark.parametrize(("variant", "warmup", "epochs", "epoch", "n_train", "factor"), [
    ("elbo", 0, 25, 1, 500, 1 / 500),          # the negative ELBO per sample
    ("elbo", 4, 25, 1, 500, 0.25 / 500),       # linear warm-up
    ("elbo", 4, 25, 9, 500, 1 / 500),
    # the original's min(1, 0.01 * epoch / epochs_train) for its epochs 0..24 (our 1..25), no 1/N:
    # def_NN_experiment_distillation.py / def_net_distillation.py (NNmoduleARD.get_kl_weight)
    ("cnn_ard", 0, 25, 1, 500, 0.0),
    ("cnn_ard", 0, 25, 2, 50000, 0.01 / 25),
    ("cnn_ard", 0, 25, 25, 500, 0.01 * 24 / 25),
    ("cnn_ard", 0, 10, 10, 500, 0.01 * 9 / 10),  # the ramp spans the zoo's VD epochs
])
def test_kl_factor_follows_the_variant(variant, warmup, epochs, epoch, n_train, factor, rng):
    net = to_variational(build_model("cnn_s", 1, "tanh"), variant, epochs=epochs, kl_warmup_epochs=warmup)
    assert net.kl_factor(epoch, n_train) == pytest.approx(factor)
    x, y = torch.randn(6, 1, 28, 28), torch.randint(0, 10, (6,))
    net.eval()  # deterministic forward: the objective is exactly CE + factor * KL
    with torch.no_grad():
        logits = net(x)
        expected = torch.nn.functional.cross_entropy(logits, y) + factor * net.kl()
        assert float(net.objective(logits, y, n_train, epoch)) == pytest.approx(float(expected), rel=1e-6)


def test_kl_falls_as_alpha_grows_and_stays_positive():
    """Noisier weights cost less: the penalty pushes log_alpha up, towards dropping weights."""
    log_alpha = torch.linspace(-10, 10, 50)
    kls = np.array([float(kl_approx(a.reshape(1))) for a in log_alpha])
    assert np.all(np.diff(kls) < 0) and kls[-1] > 0


def _fixed_noise(monkeypatch, value: float) -> None:
    monkeypatch.setattr(torch, "randn_like", lambda t: torch.full_like(t, value))


@pytest.mark.parametrize("variant", VARIANT_NAMES)
@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_train_mode_mean_and_variance_match_the_formulas(kind, variant, rng, monkeypatch):
    """Linear: variance (x^2)(alpha W^2)^T; conv: conv(x^2, alpha W^2), plus alpha_b b^2 for cnn_ard's
    variational conv bias (Conv2dARD.forward); both + the variant's epsilon inside the square root."""
    v = get_variant(variant)
    layer = VDLinear(12, 5, variant=v) if kind == "linear" else VDConv2d(3, 4, 3, variant=v)
    randomise(layer, rng)
    x_np = rng.normal(size=(6, 12) if kind == "linear" else (6, 3, 7, 7)).astype(np.float32)
    w = layer.weight.detach().numpy().astype(np.float64)
    log_alpha_w, log_alpha_b = layer_log_alphas(layer)
    alpha = np.exp(log_alpha_w)
    b = layer.bias.detach().numpy()
    if kind == "linear":
        mean = x_np @ w.T + b
        var = (x_np**2) @ (alpha * w**2).T
    else:
        mean = conv_by_patches(x_np, w) + b[None, :, None, None]
        var = conv_by_patches(x_np**2, alpha * w**2)
        if variant == "cnn_ard":
            var = var + (np.exp(log_alpha_b) * b.astype(np.float64) ** 2)[None, :, None, None]
    layer.train()
    x = torch.from_numpy(x_np)
    _fixed_noise(monkeypatch, 0.0)
    np.testing.assert_allclose(layer(x).detach().numpy(), mean, rtol=1e-4, atol=1e-4)
    _fixed_noise(monkeypatch, 1.0)
    np.testing.assert_allclose(layer(x).detach().numpy(), mean + np.sqrt(var + v.var_eps), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("eps", [CNN_ARD.var_eps, ELBO.var_eps])
def test_sampled_output_and_its_gradient_are_those_of_the_formula(rng, eps):
    """The fused sample (one pass forward, its own backward) against autograd of the plain formula."""
    mean, variance, noise = (torch.from_numpy(a) for a in (
        rng.normal(size=(4, 6)), rng.uniform(1e-4, 2.0, size=(4, 6)), rng.normal(size=(4, 6))))
    mean.requires_grad_(), variance.requires_grad_()
    assert torch.autograd.gradcheck(lambda m, v: sampled_output(m, v, noise, eps), (mean, variance))
    upstream = torch.from_numpy(rng.normal(size=(4, 6)))
    fused = torch.autograd.grad(sampled_output(mean, variance, noise, eps), (mean, variance), upstream)
    formula = mean + torch.sqrt(variance + eps) * noise
    plain = torch.autograd.grad(formula, (mean, variance), upstream)
    torch.testing.assert_close(sampled_output(mean, variance, noise, eps), formula)
    for got, expected in zip(fused, plain, strict=True):
        torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("eps", [CNN_ARD.var_eps, ELBO.var_eps])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_compiled_cpu_sample_matches_the_formula_and_its_gradient(rng, layout, eps, monkeypatch):
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
    fused = sampled_output(mean, variance, noise, eps)
    assert len(passes) == 1
    formula = mean + torch.sqrt(variance + eps) * noise
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
    alpha = np.exp(layer_log_alphas(layer)[0])
    x0 = x[0].numpy()
    with torch.no_grad():
        samples = layer.train()(x).numpy()
    np.testing.assert_allclose(
        samples.mean(0),
        x0 @ w.T + layer.bias.detach().numpy(),
        atol=4 * np.sqrt(((x0**2) @ (alpha * w**2).T).max() / 20000) + 1e-4,
    )
    np.testing.assert_allclose(samples.var(0), (x0**2) @ (alpha * w**2).T, rtol=0.06)


@pytest.mark.parametrize("variant", VARIANT_NAMES)
def test_eval_mode_equals_a_plain_model_masked_at_the_threshold(variant, rng):
    """Weights with log_alpha >= 3 are zero; cnn_ard drops conv biases by the same rule, never linear
    biases (Conv2dARD.bias_clipped; LinearARD adds its bias as it is)."""
    plain = build_model("cnn_s", 1, "relu")
    vd = to_variational(plain, variant, threshold=THRESHOLD)
    for _, layer in vd.vd_layers():
        randomise(layer, rng)
    masked = build_model("cnn_s", 1, "relu")  # an independent masked plain model
    dropped = dropped_biases = 0
    with torch.no_grad():
        for name, layer in vd.vd_layers():
            log_alpha_w, log_alpha_b = layer_log_alphas(layer)
            w, b = layer.weight.numpy(), layer.bias.numpy()
            dropped += int((log_alpha_w >= THRESHOLD).sum())
            getattr(masked, name).weight.copy_(torch.from_numpy(np.where(log_alpha_w < THRESHOLD, w, 0.0)))
            if log_alpha_b is not None:
                dropped_biases += int((log_alpha_b >= THRESHOLD).sum())
                b = np.where(log_alpha_b < THRESHOLD, b, 0.0)
            getattr(masked, name).bias.copy_(torch.from_numpy(b))
    assert 0 < dropped < sum(layer.weight.numel() for _, layer in vd.vd_layers())
    assert (dropped_biases > 0) == (variant == "cnn_ard")
    x = torch.from_numpy(rng.normal(size=(16, 1, 28, 28)).astype(np.float32))
    with torch.no_grad():
        expected = masked.eval()(x)
        np.testing.assert_allclose(vd.eval()(x).numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(to_plain(vd).eval()(x).numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", VARIANT_NAMES)
def test_conversion_keeps_weights_layout_and_dropout(variant, rng):
    torch.manual_seed(3)
    plain = build_model("cnn_l", 3, "gelu", dropout=0.5)
    initialize(plain, "kaiming_uniform")
    vd = to_variational(plain, variant)
    layout = ParameterLayout.from_module(plain)
    assert ParameterLayout.from_module(vd) == layout
    assert torch.equal(layout.flatten_module(vd), layout.flatten_module(plain))
    assert [n for n, _ in vd.named_children()] == [n for n, _ in plain.named_children()]
    assert isinstance(vd.drop1, torch.nn.Dropout) and vd.drop1.p == 0.5
    for _, layer in vd.vd_layers():
        randomise(layer, rng)
    theta, mask, log_alpha = flat_state(vd)
    np.testing.assert_allclose(theta, layout.flatten_module(vd).numpy())
    for name, layer in vd.vd_layers():
        log_alpha_w, log_alpha_b = layer_log_alphas(layer)
        entry_w, entry_b = layout.by_name[f"{name}.weight"], layout.by_name[f"{name}.bias"]
        np.testing.assert_allclose(log_alpha[entry_w.slice], log_alpha_w.reshape(-1), atol=1e-4)
        if log_alpha_b is None:  # never noised: held at -10, always kept
            assert np.all(log_alpha[entry_b.slice] == BIAS_LOG_ALPHA) and mask[entry_b.slice].all()
        else:
            np.testing.assert_allclose(log_alpha[entry_b.slice], log_alpha_b, atol=1e-4)
            np.testing.assert_array_equal(mask[entry_b.slice], log_alpha[entry_b.slice] < THRESHOLD)
        np.testing.assert_array_equal(mask[entry_w.slice], log_alpha[entry_w.slice] < THRESHOLD)


# ---------------------------------------------------------------------------- published twins == built cnn_ard

ARD_MODULES = (0, 3, 6, 9, 11)  # CNN_ARD's module_list indices of its ARD layers (dropout 0; original-zoos.md 4.1)


def ard_checkpoint(seed: int) -> OrderedDict:
    """A CNN_ARD state dict as the original code saves it: ``module_list.<i>.weight|bias|log_sigma2|
    log_sigma2_bias``. log alpha spreads over [-13, 13] (both clamps, both sides of the threshold);
    a few weights are exact zeros, one of them kept (log_sigma2 = -100); LinearARD's
    log_sigma2_bias is uninitialised memory (NaN here), which the original never reads."""
    gen = torch.Generator().manual_seed(seed)
    plain = build_model("cnn_s", 1, "tanh")
    initialize(plain, "kaiming_uniform")
    state = OrderedDict()
    for i, (_, layer) in zip(ARD_MODULES, parametrised_layers(plain), strict=True):
        conv = isinstance(layer, torch.nn.Conv2d)
        w, b = layer.weight.detach().clone(), layer.bias.detach().clone() + 0.05 * torch.randn(layer.bias.shape,
                                                                                              generator=gen)
        w.view(-1)[:3] = 0.0
        sigma_w = torch.rand(w.shape, generator=gen) * 26 - 13 + 2 * torch.log(w.abs() + 1e-15)
        sigma_w.view(-1)[0] = -100.0  # an exact zero the original keeps: log alpha = -31 -> clamp
        state[f"module_list.{i}.weight"], state[f"module_list.{i}.bias"] = w, b
        state[f"module_list.{i}.log_sigma2"] = sigma_w
        state[f"module_list.{i}.log_sigma2_bias"] = (
            torch.rand(b.shape, generator=gen) * 26 - 13 + 2 * torch.log(b.abs() + 1e-15) if conv
            else torch.full(b.shape, float("nan")))
    return state


def original_eval(state: OrderedDict, x: torch.Tensor) -> tuple[torch.Tensor, float]:
    """CNN_ARD (tanh, dropout 0) in eval mode, as def_net_distillation.py computes it, written here
    independently; also its ``get_dropped_params_ratio`` (dropped weights / weights of ARD layers)."""
    dropped = total = 0
    h = x
    for i in ARD_MODULES:
        w, b, sigma = (state[f"module_list.{i}.{k}"] for k in ("weight", "bias", "log_sigma2"))
        conv = w.dim() == 4
        bound = 8 if conv else 10
        clip = torch.ge(torch.clamp(sigma - 2 * torch.log(torch.abs(w) + 1e-15), -bound, bound), 3)
        dropped, total = dropped + int(clip.sum()), total + w.numel()
        w = torch.where(clip, torch.zeros_like(w), w)
        if conv:
            la_b = torch.clamp(state[f"module_list.{i}.log_sigma2_bias"] - 2 * torch.log(torch.abs(b) + 1e-15), -8, 8)
            h = F.conv2d(h, w, torch.where(torch.ge(la_b, 3), torch.zeros_like(b), b))
            h = torch.tanh(F.max_pool2d(h, 2, 2) if i != 6 else h)
        else:
            h = F.linear(h.flatten(1), w) + b
            h = torch.tanh(h) if i != ARD_MODULES[-1] else h
    return h, dropped / total


def built_twin(state: OrderedDict) -> VariationalNet:
    """The built cnn_ard variant holding the same state."""
    net = to_variational(build_model("cnn_s", 1, "tanh"), "cnn_ard")
    with torch.no_grad():
        for i, (_, layer) in zip(ARD_MODULES, net.vd_layers(), strict=True):
            layer.weight.copy_(state[f"module_list.{i}.weight"])
            layer.bias.copy_(state[f"module_list.{i}.bias"])
            layer.log_sigma2.copy_(state[f"module_list.{i}.log_sigma2"])
            if layer.noisy_bias:
                layer.log_sigma2_bias.copy_(state[f"module_list.{i}.log_sigma2_bias"])
    return net


def published_trial(tmp_path, states: list[OrderedDict], ratios: list[float]) -> Trial:
    """A twin trial folder with checkpoints 1..E and result.json rows 0..E (row 0: the test-only step)."""
    folder = tmp_path / "NN_tune_trainable_from_checkpoint_9a1b2_00000_0"
    checkpoints = {}
    for epoch, state in enumerate(states, start=1):
        (folder / f"checkpoint_{epoch:06d}").mkdir(parents=True)
        torch.save(state, folder / f"checkpoint_{epoch:06d}" / "checkpoints")
        checkpoints[epoch] = folder / f"checkpoint_{epoch:06d}" / "checkpoints"
    rows = [{"test_acc": 0.5, "sparsity_ratio": r, "training_iteration": i} for i, r in enumerate(ratios)]
    (folder / "result.json").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return Trial(folder, {"model::type": "CNN_ARD"}, checkpoints)


def test_a_converted_published_twin_is_the_network_the_built_variant_evaluates(tmp_path, rng):
    """Conversion and the built cnn_ard variant share their functions: the same ARD state gives the
    same weights, log_alpha and masks (conv biases included), and the store's pruned network gives
    exactly the built twin's eval outputs, which are the original code's."""
    state = ard_checkpoint(seed=1)
    layout = ParameterLayout.from_module(build_model("cnn_s", 1, "tanh"))
    final = layout.flatten(OrderedDict((e.name, state[f"module_list.{ARD_MODULES[layout.layers.index(e.layer)]}."
                                                   f"{e.kind}"]) for e in layout.entries)).numpy()
    converted = twin_result(0, published_trial(tmp_path, [state], [0.0, 0.0]), 1, final, layout, THRESHOLD)
    net = built_twin(state)
    theta, mask, log_alpha = flat_state(net)
    np.testing.assert_array_equal(converted.weights[1], theta)
    np.testing.assert_array_equal(converted.log_alpha[1], log_alpha)
    np.testing.assert_array_equal(converted.masks[1], mask)
    conv_biases = np.concatenate([mask[layout.by_name[f"conv{k}.bias"].slice] for k in (1, 2, 3)])
    assert not conv_biases.all()  # some conv biases are dropped, as in the original
    assert mask[layout.by_name["fc1.bias"].slice].all() and mask[layout.by_name["fc2.bias"].slice].all()
    # epoch 0: the converted original, log_sigma2 at -10 everywhere, as a fresh built twin
    np.testing.assert_array_equal(converted.log_alpha[0], start_state(final, layout))
    np.testing.assert_array_equal(start_state(final, layout), flat_state(built_twin({
        k: (torch.full_like(v, -10.0) if "log_sigma2" in k else v) for k, v in state.items()}))[2])
    stored = layout.load_into(build_model("cnn_s", 1, "tanh"), np.where(converted.masks[1], converted.weights[1], 0.0))
    x = torch.from_numpy(rng.normal(size=(32, 1, 28, 28)).astype(np.float32))
    with torch.no_grad():
        built_out, stored_out = net.eval()(x), stored.eval()(x)
        assert torch.equal(built_out, stored_out)
        torch.testing.assert_close(built_out, original_eval(state, x)[0])


def test_the_stored_sparsity_of_a_converted_twin_is_its_sparsity_ratio(tmp_path):
    """result.json's sparsity_ratio counts dropped weights over the ARD layers' weights, biases excluded;
    a kept weight that is exactly zero is not dropped (the old count of zero weights differed)."""
    states = [ard_checkpoint(seed) for seed in (2, 3)]
    x = torch.zeros(1, 1, 28, 28)
    ratios = [0.0] + [original_eval(state, x)[1] for state in states]
    layout = ParameterLayout.from_module(build_model("cnn_s", 1, "tanh"))
    final = np.zeros(layout.num_params, dtype=np.float32)
    result = twin_result(0, published_trial(tmp_path, states, ratios), 2, final, layout, THRESHOLD)
    for epoch in (1, 2):
        assert result.metrics[epoch]["sparsity"] == pytest.approx(ratios[epoch], abs=1e-12)
        zeros = np.where(result.masks[epoch], result.weights[epoch], 0.0)[layout.weight_mask()] == 0
        assert zeros.mean() > ratios[epoch]  # kept exact zeros: counting zeros would not match


def _tiny_job(arch: str, activation: str, dropout: float, init: str, variant: str) -> tuple[TrainJob, tuple]:
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
        options={"variant": variant},
    )
    return job, (channels, train_x, train_y, test_x, test_y)


@pytest.mark.parametrize(
    ("arch", "activation", "dropout", "init", "variant"),
    [
        ("cnn_s", "sigmoid", 0.0, "uniform", "cnn_ard"),
        ("cnn_s", "tanh", 0.5, "normal", "elbo"),
        ("cnn_s", "relu", 0.0, "kaiming_normal", "cnn_ard"),
        ("cnn_s", "gelu", 0.5, "kaiming_uniform", "cnn_ard"),
        ("cnn_l", "sigmoid", 0.5, "kaiming_uniform", "elbo"),
        ("cnn_l", "tanh", 0.0, "uniform", "cnn_ard"),
        ("cnn_l", "relu", 0.5, "normal", "cnn_ard"),
        ("cnn_l", "gelu", 0.0, "kaiming_normal", "elbo"),
    ],
)
def test_vd_training_never_gives_nan(arch, activation, dropout, init, variant):
    job, args = _tiny_job(arch, activation, dropout, init, variant)
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


def test_cnn_ard_is_the_default_and_a_resume_with_the_other_variant_is_refused(tmp_path, vd_spec, original_only):
    """The digits store was built with the default cnn_ard variant; the elbo variant on top of it is
    refused in one line (a store never mixes two VD methods)."""
    assert vd_spec.vd.variant == "cnn_ard"
    assert ZooSpec.from_dict(json.loads((original_only / vd_spec.name / "manifest.json").read_text())["spec"]
                             ).vd.variant == "cnn_ard"
    with pytest.raises(StoreError, match=r"different settings \(vd\.variant\)"):
        build_zoo(vd_spec.with_overrides(vd_variant="elbo"), original_only, stages=["vd"], progress=False)


def test_a_store_recorded_before_variants_existed_builds_on_with_the_variant_it_means(tmp_path, vd_spec, original_only):
    """A manifest written before ``vd.variant`` existed records ``vd.kl_objective``; it means the elbo
    layers, so ``--vd-variant elbo`` builds on it and the default cnn_ard is refused naming vd.variant."""
    old = tmp_path / "old"
    shutil.copytree(original_only, old)
    manifest_path = old / vd_spec.name / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["spec"]["vd"]["variant"]
    manifest["spec"]["vd"]["kl_objective"] = "elbo"
    for shard in (s for p in manifest["populations"].values() for s in p["shards"]):
        path = old / vd_spec.name / shard["file"]
        with h5py.File(path, "r+") as f:  # that toolkit recorded no packing digest in its shards
            del f.attrs[PACKING_DIGEST]
        shard.update(sha256=sha256_file(path), bytes=path.stat().st_size)
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match=r"different settings \(vd\.variant\)"):
        build_zoo(vd_spec, old, stages=["vd"], progress=False)
    store, _ = build_zoo(vd_spec.with_overrides(vd_variant="elbo"), old, stages=["vd"], progress=False)
    assert store.population("vd").status == "complete"


def test_cnn_ard_ramps_the_kl_from_zero_so_its_first_epoch_has_no_kl(tmp_path, vd_spec, monkeypatch):
    """The original ramp min(1, 0.01 * e / epochs) starts at e = 0: epoch 1 is cross-entropy alone. So a
    build whose KL is a thousandfold records the same epoch 1, bit for bit (the KL's weight is exactly
    0, whatever the CPU rounds), and another epoch 2, where the ramp has begun."""
    store, _ = build_zoo(vd_spec, tmp_path / "as-is", stages=["original", "vd"], progress=False)
    monkeypatch.setattr(vd_method, "kl_approx", lambda log_alpha: 1000 * kl_approx(log_alpha))
    louder, _ = build_zoo(vd_spec, tmp_path / "louder", stages=["original", "vd"], progress=False)
    for model_id in (0, 1):
        for name in ("weights", "log_alpha"):
            epoch1 = [s.array(name, "vd", model_id, 1) for s in (store, louder)]
            np.testing.assert_array_equal(*epoch1)
        epoch2 = [s.array("log_alpha", "vd", model_id, 2) for s in (store, louder)]
        assert not np.array_equal(*epoch2)


def test_the_card_and_the_report_name_the_variant(vd_store, tmp_path):
    from analysis.report import build_report, write_report
    from builders.stages.card import write_card

    card = write_card(vd_store).read_text()
    assert "variant cnn_ard: the original zoos' CNN_ARD" in card and "VD variant `cnn_ard`" in card
    report = write_report(build_report(vd_store), tmp_path / "report").read_text()
    assert "- vd: 2 models" in report and "variant cnn_ard" in report
