"""Item transforms (loaders.transforms): neuron permutations keep what a model computes and keep a
pair a pair, the canonical order is permutation-invariant, standardisation inverts, noise and
erasing touch what they say, in every view."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from _fixtures_loader import shared_loader_store
from torch.nn.utils import prune

from loaders import ZooTrajectoryDataset, ZooTwinDataset, make_view
from loaders.transforms import (
    CanonicalNeuronOrder,
    Compose,
    GaussianNoise,
    LayerStandardization,
    NeuronErasing,
    NeuronPermuter,
    RandomErasing,
    RandomNeuronPermutation,
    Standardize,
    permute,
)
from zoo_dataset.architectures import REGISTRY, build_model, get_architecture, parametrised_layers, seeded_model
from zoo_dataset.data import load_dataset
from zoo_dataset.layout import ParameterLayout
from zoo_dataset.sparsify.variational import get_variant, variational_entries
from zoo_dataset.specs import registry
from zoo_dataset.store import ZooStore

VIEWS = ("flat", "layers", "tokens")
RGB = {"cifar10", "svhn", "stl10"}  # the colour datasets of zoos.toml (3 input channels)


def _zoo_networks() -> list[tuple[str, int, str, str]]:
    """Every (architecture, input channels, activation, init) the registered zoos generate."""
    combos = set()
    for spec in registry().values():
        channels = 3 if spec.dataset in RGB else 1
        for config in spec.all_models():
            combos.add((spec.architecture, channels, config.activation, config.init))
    return sorted(combos)


NETWORKS = _zoo_networks()


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    return shared_loader_store(tmp_path_factory)


@pytest.fixture(scope="module")
def images():
    """Real images: the embedded digits' test scans at each architecture's input size."""
    return {arch: load_dataset("digits", get_architecture(arch).image_size(28)).test_x[:64] for arch in REGISTRY}


def test_the_zoos_cover_every_architecture_and_activation():
    assert {n[0] for n in NETWORKS} == set(REGISTRY)
    assert {n[2] for n in NETWORKS} == {"tanh", "sigmoid", "relu", "gelu"}
    assert {n[1] for n in NETWORKS} == {1, 3}


@pytest.mark.parametrize(("architecture", "channels", "activation", "init"), NETWORKS)
def test_random_permutations_preserve_the_function(images, architecture, channels, activation, init):
    net = seeded_model(architecture, channels, activation, 0.0, init, seed=7).eval()
    layout = ParameterLayout.from_module(net)
    flat = layout.flatten_module(net)
    x = images[architecture].expand(-1, channels, -1, -1)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        expected = net(x)
        for index in NeuronPermuter(layout).random((3,), generator):
            permuted = permute(flat, index)
            assert not torch.equal(permuted, flat)  # neurons really moved
            twin = layout.load_into(build_model(architecture, channels, activation), permuted).eval()
            scale = float(expected.abs().max())
            torch.testing.assert_close(twin(x), expected, rtol=1e-5, atol=1e-5 * max(scale, 1.0))


def test_a_permutation_moves_whole_neurons_only():
    layout = ParameterLayout.from_module(build_model("cnn_l", 3, "relu"))
    permuter = NeuronPermuter(layout)
    index = permuter.random(generator=torch.Generator().manual_seed(0))
    assert sorted(index.tolist()) == list(range(layout.num_params))  # a permutation of the entries
    last = layout.by_name["fc2.bias"]
    assert torch.equal(index[last.slice], torch.arange(last.offset, last.offset + 10))  # outputs stay
    assert permuter.hidden_sizes == [16, 32, 15, 20]
    batch = permuter.random((2, 3))
    assert batch.shape == (2, 3, layout.num_params)
    assert torch.equal(permuter.from_orders([torch.arange(n) for n in permuter.hidden_sizes]),
                       permuter.identity())


@pytest.mark.parametrize("view", VIEWS)
def test_vd_pairs_stay_pairs_after_permuting(zoo, view):
    store = ZooStore(zoo)
    threshold = store.spec.vd.threshold
    # the entries VD prunes: weights, and conv biases in the cnn_ard variant
    prunable = torch.from_numpy(variational_entries(store.layout, get_variant(store.spec.vd.variant)))
    flat_of = make_view(view, store.layout).inverse
    for dataset in (ZooTwinDataset, ZooTrajectoryDataset):
        plain = dataset(zoo, method="vd", split=None, view=view, apply_mask=False)
        permuted = dataset(zoo, method="vd", split=None, view=view, apply_mask=False,
                           transform=RandomNeuronPermutation(store.layout, view))
        for a, b in zip(plain, permuted, strict=True):
            mask, log_alpha = flat_of(b["mask"]), flat_of(b["log_alpha"])
            assert not torch.equal(mask, flat_of(a["mask"]))
            assert torch.equal(mask, torch.where(prunable, log_alpha < threshold, True))
            # the same permutation everywhere: the permuted original still maps to the permuted twin
            index = _recover_permutation(flat_of(a["original"]), flat_of(b["original"]))
            for key in ("twin", "mask", "log_alpha"):
                assert torch.equal(flat_of(b[key]), permute(flat_of(a[key]), index))


def _recover_permutation(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """The index map taking ``before`` to ``after`` (trained weights have no two equal entries)."""
    assert len(torch.unique(before)) == len(before)
    order = torch.argsort(before)
    return order[torch.searchsorted(before[order], after)]


@pytest.mark.parametrize("view", VIEWS)
def test_mp_masks_are_still_torch_global_magnitude_masks_of_the_permuted_original(zoo, view):
    store = ZooStore(zoo)
    layout = store.layout
    flat_of = make_view(view, layout).inverse
    transform = RandomNeuronPermutation(layout, view, generator=torch.Generator().manual_seed(1))
    items = ZooTwinDataset(zoo, method="mp", split=None, view=view, epoch=0, transform=transform)
    for item in items:
        original, mask = flat_of(item["original"]), flat_of(item["mask"])
        config = store.model_config(int(item["model_id"]))
        net = layout.load_into(build_model(store.spec.architecture, 1, config.activation), original)
        weights = [(module, "weight") for _, module in parametrised_layers(net)]
        prune.global_unstructured(weights, pruning_method=prune.L1Unstructured, amount=float(item["level"]))
        torch_mask = torch.cat([
            torch.cat([module.weight_mask.flatten(), torch.ones_like(module.bias)])
            for module, _ in weights
        ]).bool()
        assert torch.equal(mask, torch_mask)
        assert torch.equal(flat_of(item["twin"]) != 0, mask & (original != 0))  # epoch 0: pruned original


@pytest.mark.parametrize("view", VIEWS)
def test_canonical_order_is_invariant_under_any_permutation(zoo, view):
    layout = ZooStore(zoo).layout
    canonical = CanonicalNeuronOrder(layout, view)
    flat_of = make_view(view, layout).inverse
    generator = torch.Generator().manual_seed(5)
    for method in ("mp", "vd"):
        for item in ZooTwinDataset(zoo, method=method, split=None, view=view):
            reference = canonical(item)
            for _ in range(3):
                shuffled = RandomNeuronPermutation(layout, view, generator=generator)(item)
                again = canonical(shuffled)
                for key in ("original", "twin", "mask", "log_alpha"):
                    if key in item:
                        assert torch.equal(flat_of(again[key]), flat_of(reference[key]))
            sizes = NeuronPermuter(layout).hidden_sizes
            biases = [layout.by_name[f"{layer}.bias"] for layer in layout.layers[: len(sizes)]]
            first = flat_of(reference["original"])[layout.by_name["conv1.weight"].slice].view(sizes[0], -1)
            norms = (first.double() ** 2).sum(1) + flat_of(reference["original"])[biases[0].slice].double() ** 2
            assert torch.all(norms[:-1] >= norms[1:])  # sorted by norm, largest first


def test_canonical_order_keeps_the_function(images):
    net = seeded_model("cnn_s", 1, "gelu", 0.0, "kaiming_uniform", seed=3).eval()
    layout = ParameterLayout.from_module(net)
    flat = layout.flatten_module(net)
    permuter = NeuronPermuter(layout)
    ordered = layout.load_into(build_model("cnn_s", 1, "gelu"), permute(flat, permuter.canonical(flat))).eval()
    with torch.no_grad():
        torch.testing.assert_close(ordered(images["cnn_s"]), net(images["cnn_s"]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("view", VIEWS)
def test_standardisation_inverts_and_is_fitted_on_the_train_split(zoo, view, tmp_path):
    store = ZooStore(zoo)
    stats = LayerStandardization.fit(zoo, split="train", populations=("original",))
    assert set(stats.stats) == {"weights", "log_alpha"}  # the store holds VD twins: their log-alphas too
    train = [m for m in store.models().query("split == 'train'").model_id]
    states = np.concatenate([store.weights("original", int(m), slice(None)) for m in train])
    conv1 = states.astype(np.float64)[:, _layer_columns(store.layout, "conv1")]
    assert stats.stats["weights"]["conv1"][0] == pytest.approx(float(conv1.mean()), rel=1e-9)
    assert stats.stats["weights"]["conv1"][1] == pytest.approx(float(conv1.std()), rel=1e-9)

    loaded = LayerStandardization.load(stats.save(tmp_path / "stats.json"))
    assert loaded.stats == stats.stats and loaded.layout == stats.layout
    assert LayerStandardization.from_dict(stats.to_dict()).stats == stats.stats

    standardize = Standardize(loaded, view)
    flat_of = make_view(view, store.layout).inverse
    for item in ZooTrajectoryDataset(zoo, method="vd", split=None, view=view):
        out = standardize(item)
        back = standardize.inverse(out)
        assert torch.equal(flat_of(out["mask"]), flat_of(item["mask"]))  # masks untouched
        for key in ("original", "twin", "log_alpha"):
            x, y = flat_of(item[key]), flat_of(out[key])
            assert not torch.allclose(x, y)
            # exact up to float32 rounding: of the standardised value (times its std) and of the result
            std = stats.mean_std("log_alpha" if key == "log_alpha" else "weights")[1]
            bound = 2.0**-23 * (std * y.double().abs() + x.double().abs())
            assert torch.all((flat_of(back[key]).double() - x.double()).abs() <= bound)
    whole = torch.from_numpy(states)
    normed = stats.standardize(whole)
    for layer in store.layout.layers:  # the train states come out with mean 0 and std 1 per layer
        values = normed[:, _layer_columns(store.layout, layer)].double()
        assert float(values.mean()) == pytest.approx(0.0, abs=1e-5)
        assert float(values.std(unbiased=False)) == pytest.approx(1.0, abs=1e-5)


def _layer_columns(layout: ParameterLayout, layer: str) -> np.ndarray:
    return np.r_[layout.by_name[f"{layer}.weight"].slice, layout.by_name[f"{layer}.bias"].slice]


def test_a_foreign_standardisation_file_is_one_clear_error(tmp_path):
    bad = tmp_path / "stats.json"
    bad.write_text('{"layout": [], "stats": {"weights": {"conv1": {"mean": 0}}}}')
    with pytest.raises(Exception, match="not a layer standardization|cover layers"):
        LayerStandardization.load(bad)
    bad.write_text("not json")
    with pytest.raises(Exception, match="cannot read layer standardization"):
        LayerStandardization.load(bad)


@pytest.mark.parametrize("view", VIEWS)
def test_noise_and_erasing_touch_weights_only(zoo, view):
    layout = ZooStore(zoo).layout
    flat_of = make_view(view, layout).inverse
    item = ZooTwinDataset(zoo, method="mp", level=0.9, split=None, view=view)[0]
    noisy = GaussianNoise(layout, view, generator=torch.Generator().manual_seed(0))(item)
    twin, mask = flat_of(item["twin"]), flat_of(item["mask"])
    assert torch.equal(flat_of(noisy["mask"]), mask)
    assert torch.equal(flat_of(noisy["twin"])[~mask], twin[~mask])  # pruned entries stay exact zeros
    change = (flat_of(noisy["original"]) - flat_of(item["original"])).std()
    assert 0.01 < float(change / flat_of(item["original"]).std()) < 0.1  # about 5 % of the weight std

    erased = RandomErasing(layout, view, fraction=0.25, generator=torch.Generator().manual_seed(0))(item)
    zeroed = flat_of(erased["original"]) == 0
    neurons = NeuronErasing(layout).num_neurons
    assert torch.equal(flat_of(erased["twin"])[zeroed], torch.zeros(int(zeroed.sum())))  # one run for both
    tokens = make_view("tokens", layout)(zeroed)["tokens"]
    erased_tokens = tokens.all(dim=1) | (tokens.sum(dim=1) == make_view("tokens", layout).valid.sum(1))
    assert int(erased_tokens.sum()) == round(0.25 * neurons)
    run = torch.nonzero(erased_tokens).flatten()
    assert torch.equal(run, torch.arange(int(run[0]), int(run[0]) + len(run)))  # contiguous


def test_transforms_compose_and_describe_themselves(zoo):
    layout = ZooStore(zoo).layout
    stats = LayerStandardization.fit(zoo)
    pipeline = Compose([Standardize(stats, "tokens"), RandomNeuronPermutation(layout, "tokens"),
                        GaussianNoise(layout, "tokens"), RandomErasing(layout, "tokens")])
    ds = ZooTwinDataset(zoo, method="vd", split="train", view="tokens", transform=pipeline)
    item = ds[0]
    assert item["twin"]["tokens"].shape == ds.view(torch.zeros(layout.num_params))["tokens"].shape
    assert "RandomNeuronPermutation" in repr(ds) and "Standardize" in repr(pipeline)
    with pytest.raises(TypeError, match="layout must be a ParameterLayout"):
        RandomNeuronPermutation(zoo)


def test_batched_permutations_differ_per_sample():
    layout = ParameterLayout.from_module(build_model("cnn_s", 1, "tanh"))
    index = NeuronPermuter(layout).random((8,), torch.Generator().manual_seed(0))
    flat = torch.randn(8, layout.num_params)
    out = permute(flat, index)
    for row in range(8):
        assert torch.equal(out[row], flat[row][index[row]])
    assert len({tuple(i.tolist()) for i in index}) == 8
    assert all(not torch.equal(a, b) for a, b in itertools.combinations(index, 2))
