"""The ``nfn`` view against the real ``nfn`` package: the network spec it builds from our batches is
consistent, and an NFN is invariant under the dataset's own neuron permutations (original, MP and
VD items of CNN-s and CNN-l), which a wrong transition or a wrong permutation breaks."""

from __future__ import annotations

import pytest
import torch
from _fixtures_views import architecture_stores
from torch import nn
from torch.utils.data import default_collate

from loaders import RandomNeuronPermutation, ZooOriginalDataset, ZooTwinDataset, make_view
from loaders.transforms import NeuronPermuter, permute
from zoo_dataset.store import ZooStore

nfn = pytest.importorskip("nfn")
from nfn.common import WeightSpaceFeatures, network_spec_from_wsfeat  # noqa: E402
from nfn.layers import HNPPool, NPLinear, TupleOp  # noqa: E402

POPULATIONS = ("original", "mp", "vd")
STATE_KEYS = ("original", "twin", "mask", "log_alpha")


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    return architecture_stores(tmp_path_factory)


def _items(zoo, population, view="nfn", transform=None):
    if population == "original":
        return list(ZooOriginalDataset(zoo, split=None, epoch=None, view=view, transform=transform))
    return list(ZooTwinDataset(zoo, method=population, split=None, view=view, transform=transform))


def _features(batch_state) -> WeightSpaceFeatures:
    return WeightSpaceFeatures(*batch_state).map(lambda t: t.double())


@pytest.mark.parametrize("architecture", ["cnn_s", "cnn_l"])
def test_the_spec_nfn_builds_from_our_batches_is_consistent(stores, architecture):
    zoo = stores[architecture]
    layout = ZooStore(zoo).layout
    batch = default_collate(_items(zoo, "vd"))
    for key in STATE_KEYS:  # masks and log-alphas in the same shapes as the weights
        spec = network_spec_from_wsfeat(WeightSpaceFeatures(*batch[key]), set_all_dims=True)
        shapes = [w.shape for w in spec.weight_spec]
        assert all(layer[1] == before[0] for before, layer in zip(shapes, shapes[1:], strict=False)), shapes
        assert [b.shape[0] for b in spec.bias_spec] == [s[0] for s in shapes]
        assert spec.get_num_params() == layout.num_params
    fc1 = batch["original"][0][3]
    assert fc1.shape[:4] == (len(batch["model_id"]), 1, 20, 4 if architecture == "cnn_s" else 15)
    # the module-shaped layers view (fc1 as [20, 36]) cannot give a consistent spec
    layers = default_collate(_items(zoo, "original", view="layers"))["original"]
    naive = network_spec_from_wsfeat(WeightSpaceFeatures(
        [w.unsqueeze(1) for w in layers["weights"]], [b.unsqueeze(1) for b in layers["biases"]]), set_all_dims=True)
    assert naive.weight_spec[3].shape[1] != naive.weight_spec[2].shape[0]


def _nfn(spec, seed: int = 0) -> nn.Module:
    """The usual invariant NFN of the nfn examples: NPLinear -> ReLU -> NPLinear -> HNPPool -> Linear."""
    torch.manual_seed(seed)
    return nn.Sequential(
        NPLinear(spec, 1, 8), TupleOp(nn.ReLU()), NPLinear(spec, 8, 8), HNPPool(spec),
        nn.Flatten(start_dim=-2), nn.Linear(8 * HNPPool.get_num_outs(spec), 1),
    ).double()


def _assert_invariant(plain: dict, permuted: dict, keys) -> None:
    """The NFN gives the same outputs on each state of both batches (float64: to rounding)."""
    net = _nfn(network_spec_from_wsfeat(_features(plain["original"])))
    with torch.no_grad():
        for key in keys:
            a, b = net(_features(plain[key])), net(_features(permuted[key]))
            torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-9 * float(a.abs().max()))


def _moved(plain: dict, permuted: dict, key: str) -> bool:
    return any(not torch.equal(a, b) for a, b in zip(plain[key][0], permuted[key][0], strict=True))


@pytest.mark.parametrize("population", POPULATIONS)
@pytest.mark.parametrize("architecture", ["cnn_s", "cnn_l"])
def test_an_nfn_is_invariant_under_the_datasets_neuron_permutations(stores, architecture, population):
    zoo = stores[architecture]
    layout = ZooStore(zoo).layout
    permutation = RandomNeuronPermutation(layout, "nfn", generator=torch.Generator().manual_seed(0))
    plain = default_collate(_items(zoo, population))
    permuted = default_collate(_items(zoo, population, transform=permutation))
    keys = [k for k in STATE_KEYS if k in plain]
    assert len(keys) == {"original": 1, "mp": 3, "vd": 4}[population]
    assert all(_moved(plain, permuted, key) for key in keys)  # neurons really moved, in every state
    _assert_invariant(plain, permuted, keys)


def _wrong_transition(flat_view, layout):
    """fc1 cut as if nn.Flatten were position-major ([20, 9, 4] -> [20, 4, 3, 3]): right shapes and a
    consistent spec, the wrong symmetry."""
    def view(flat):
        weights, biases = flat_view(flat)
        fc1 = layout.by_name["fc1.weight"]
        w = flat[..., fc1.slice].reshape(*flat.shape[:-1], fc1.shape[0], -1, weights[3].shape[-3])
        side = weights[3].shape[-1]
        w = w.transpose(-1, -2).reshape(*flat.shape[:-1], 1, fc1.shape[0], -1, side, side)
        return (*weights[:3], w, *weights[4:]), biases
    return view


@pytest.mark.parametrize("architecture", ["cnn_s", "cnn_l"])
def test_a_wrong_transition_or_permutation_breaks_the_invariance(stores, architecture):
    zoo = stores[architecture]
    layout = ZooStore(zoo).layout
    view = make_view("nfn", layout)
    flat = torch.stack([view.inverse(item["original"]) for item in _items(zoo, "mp")])
    permuter = NeuronPermuter(layout)
    generator = torch.Generator().manual_seed(1)
    orders = [torch.randperm(n, generator=generator) for n in permuter.hidden_sizes]
    index = permuter.from_orders(orders)
    right = {"original": view(flat)}
    _assert_invariant(right, {"original": view(permute(flat, index))}, ["original"])  # the control

    wrong_view = _wrong_transition(view, layout)
    with pytest.raises(AssertionError):
        _assert_invariant({"original": wrong_view(flat)}, {"original": wrong_view(permute(flat, index))},
                          ["original"])

    fc1 = layout.by_name["fc1.weight"]
    broken = index.clone()  # conv3's channels move, fc1's input blocks do not (its own neurons do)
    rows = torch.arange(fc1.offset, fc1.offset + fc1.size).view(fc1.shape[0], -1)[orders[3]]
    broken[fc1.slice] = rows.ravel()
    with pytest.raises(AssertionError):
        _assert_invariant(right, {"original": view(permute(flat, broken))}, ["original"])
