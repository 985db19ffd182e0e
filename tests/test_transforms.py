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

from loaders import VIEWS as LOADER_VIEWS
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
    gaussian_noise,
    permute,
)
from zoo_dataset.architectures import INPUT_SIZE, build_model, parametrised_layers, seeded_model
from zoo_dataset.data import load_dataset
from zoo_dataset.errors import ZooSpecError
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
def train_stats(zoo):
    return LayerStandardization.fit(zoo)


@pytest.fixture(scope="module")
def images():
    """Real images: the embedded digits' test scans at each architecture's input size."""
    return {arch: load_dataset("digits", size).test_x[:64] for arch, size in INPUT_SIZE.items()}


def test_the_zoos_cover_both_architectures_and_every_activation():
    assert {n[0] for n in NETWORKS} == {"cnn_s", "cnn_l"}
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


def _every_transform(stats: LayerStandardization, view: str) -> dict:
    """One of each item transform there is, drawing from one seeded generator."""
    generator = torch.Generator().manual_seed(0)
    layout = stats.layout
    return {
        "standardize": Standardize(stats, view),
        "permute": RandomNeuronPermutation(layout, view, generator=generator),
        "canonical": CanonicalNeuronOrder(layout, view),
        "noise": GaussianNoise(layout, view, generator=generator),
        "erase": RandomErasing(layout, view, fraction=0.25, generator=generator),
    }


def _undo(transforms: list, item: dict) -> dict:
    """The chain's inverses, last first (standardisation is the invertible one)."""
    for transform in reversed(transforms):
        if isinstance(transform, Standardize):
            item = transform.inverse(item)
    return item


@pytest.mark.parametrize("view", sorted(LOADER_VIEWS))  # every view the loaders serve, new ones included
@pytest.mark.parametrize("method", ["mp", "vd"])
def test_pruned_entries_stay_exact_zeros_through_any_chain_in_any_order(zoo, train_stats, method, view):
    """Every order of every transform, then the inverses: the twin's pruned entries are exact zeros,
    its mask still drops the stored share of weights, and its only other zeros are the erased run
    (which erasing wrote into the original as well)."""
    store = ZooStore(zoo)
    every = _every_transform(train_stats, view)
    flat_of = make_view(view, store.layout).inverse
    is_weight = torch.from_numpy(store.layout.weight_mask())
    level = {"level": 0.9} if method == "mp" else {}
    items = [ZooTwinDataset(zoo, method=method, split=None, view=view, **level)[0],
             ZooTrajectoryDataset(zoo, method=method, split=None, view=view, **level)[0]]
    for number, order in enumerate(itertools.permutations(every)):
        item = items[number % 2]  # one state, and a trajectory
        assert not (flat_of(item["original"]) == 0).any()  # trained weights: no zeros of their own
        transforms = [every[name] for name in order]
        out = _undo(transforms, Compose(transforms)(item))
        twin, mask, original = flat_of(out["twin"]), flat_of(out["mask"]), flat_of(out["original"])
        assert torch.equal(twin.masked_select(~mask), torch.zeros(int((~mask).sum()))), order
        dropped = (~mask)[..., is_weight].double().mean(-1)  # the stored sparsity: weights the mask drops
        torch.testing.assert_close(dropped, item["twin_properties"]["sparsity"].double(), rtol=0, atol=1e-6)
        assert torch.equal(twin == 0, ~mask | (original == 0)), order


@pytest.mark.parametrize("view", ["flat", "tokens"])
def test_noise_after_standardisation_gives_back_the_twin(zoo, train_stats, view):
    """The order the docs recommend, with noise of std 0: the twin comes back (it used to come back
    with every pruned weight moved to its layer's mean)."""
    flat_of = make_view(view, ZooStore(zoo).layout).inverse
    standardize = Standardize(train_stats, view)
    for item in ZooTwinDataset(zoo, method="vd", split=None, view=view):
        back = standardize.inverse(GaussianNoise(train_stats.layout, view, std=0.0)(standardize(item)))
        twin, mask = flat_of(item["twin"]), flat_of(item["mask"])
        assert (~mask).any()
        torch.testing.assert_close(flat_of(back["twin"]), twin, rtol=2e-7, atol=1e-8)
        assert torch.equal(flat_of(back["twin"]) == 0, ~mask)


@pytest.mark.parametrize("view", ["flat", "layers"])
def test_a_dense_twin_is_transformed_everywhere(zoo, train_stats, view):
    """``apply_mask=False`` serves VD's dense weights: their pruned entries hold trained values, which
    noise and standardisation treat like any other (no zeros are made up)."""
    flat_of = make_view(view, ZooStore(zoo).layout).inverse
    item = ZooTwinDataset(zoo, method="vd", split=None, view=view, apply_mask=False)[0]
    twin, pruned = flat_of(item["twin"]), ~flat_of(item["mask"])
    assert (twin[pruned] != 0).all()
    noisy = flat_of(GaussianNoise(train_stats.layout, view, generator=torch.Generator().manual_seed(0))(item)["twin"])
    assert (noisy[pruned] != twin[pruned]).all() and (noisy[pruned] != 0).all()
    standardize = Standardize(train_stats, view)
    back = flat_of(standardize.inverse(standardize(item))["twin"])
    torch.testing.assert_close(back, twin, rtol=2e-7, atol=1e-8)


def test_the_plain_functions_keep_pruned_zeros_when_given_the_mask():
    layout = ParameterLayout.from_module(build_model("cnn_s", 1, "tanh"))
    generator = torch.Generator().manual_seed(0)
    dense = torch.randn(3, layout.num_params, generator=generator)
    mask = torch.rand(3, layout.num_params, generator=generator) > 0.7
    twin = dense * mask
    stats = LayerStandardization.from_states(layout, dense + 1.0)
    assert torch.equal(stats.standardize(twin, mask=mask) == 0, ~mask)
    assert (stats.standardize(twin)[~mask] != 0).all()  # without the mask, a zero is a value like any other
    back = stats.inverse(gaussian_noise(stats.standardize(twin, mask=mask), generator=generator, mask=mask), mask=mask)
    assert torch.equal(back == 0, ~mask)


def test_standardisation_refuses_a_vanishing_std_and_fits_constant_layers_to_scale_one():
    layout = ParameterLayout.from_module(build_model("cnn_s", 1, "tanh"))
    stats = LayerStandardization.from_states(layout, torch.randn(4, layout.num_params))
    data = stats.to_dict()
    data["stats"]["weights"]["conv1"]["std"] = 1e-320  # a denormal: 1 / std overflows
    with pytest.raises(ZooSpecError, match="layer conv1 hold mean .* std 1e-320: .* at least 1e-12"):
        LayerStandardization.from_dict(data)
    constant = torch.randn(4, layout.num_params, dtype=torch.float64)
    conv1 = _layer_columns(layout, "conv1")
    constant[:, conv1] = 1 / 3  # the float64 sums of a constant 1/3 leave a variance of rounding (~1e-17)
    fitted = LayerStandardization.from_states(layout, constant.float())
    assert fitted.stats["weights"]["conv1"][1] == 1.0
    assert torch.isfinite(fitted.standardize(torch.randn(layout.num_params))).all()


class _HalvesView:
    """A view the transforms know nothing of (as a new view would be): the flat vector in two halves."""

    name = "halves"

    def __init__(self, layout: ParameterLayout):
        self.half = layout.num_params // 2

    def __call__(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"first": flat[..., : self.half], "second": flat[..., self.half :]}

    def inverse(self, viewed: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([viewed["first"], viewed["second"]], dim=-1)


@pytest.mark.parametrize("method", ["mp", "vd"])
def test_a_view_without_a_fast_path_is_transformed_through_flat(zoo, train_stats, method, monkeypatch):
    monkeypatch.setitem(LOADER_VIEWS, "halves", _HalvesView)
    flat_of = make_view("halves", train_stats.layout).inverse
    order = ("erase", "standardize", "permute", "noise", "canonical")
    results = {}
    for view in ("flat", "halves"):
        every = _every_transform(train_stats, view)  # the same seed: the same draws in both views
        item = ZooTrajectoryDataset(zoo, method=method, split=None, view=view)[0]
        results[view] = _undo([every[name] for name in order], Compose([every[name] for name in order])(item))
    for key in ("original", "twin", "mask"):
        assert torch.equal(flat_of(results["halves"][key]), results["flat"][key])
    twin, mask = flat_of(results["halves"]["twin"]), flat_of(results["halves"]["mask"])
    assert (~mask).any() and torch.equal(twin.masked_select(~mask), torch.zeros(int((~mask).sum())))
