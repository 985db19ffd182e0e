"""The nfn, graph and sane views: exact inverses, neuron permutations that are graph relabellings
and token moves, SANE's tokenisation and windows, every transform in every view, and batches that
mix CNN-s and CNN-l in every view."""

from __future__ import annotations

import pytest
import torch
from _fixtures_views import architecture_stores
from torch.utils.data import ConcatDataset, DataLoader

from loaders import (
    VIEWS,
    CanonicalNeuronOrder,
    Compose,
    GaussianNoise,
    LayerStandardization,
    RandomErasing,
    RandomNeuronPermutation,
    RandomTokenWindow,
    Standardize,
    ZooTrajectoryDataset,
    ZooTwinDataset,
    collate_padded,
    make_view,
)
from loaders import graph as graph_module
from loaders.transforms import NeuronPermuter, permute
from zoo_dataset.architectures import build_model
from zoo_dataset.errors import ZooSpecError
from zoo_dataset.layout import ParameterLayout
from zoo_dataset.store import ZooStore

STATE_KEYS = ("original", "twin", "mask", "log_alpha")


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    return architecture_stores(tmp_path_factory)


def _layout(architecture: str) -> ParameterLayout:
    return ParameterLayout.from_module(build_model(architecture, 1, "relu"))


def _orders(layout: ParameterLayout, seed: int) -> list[torch.Tensor]:
    """The neuron orders RandomNeuronPermutation draws with a generator seeded ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.randperm(n, generator=generator) for n in NeuronPermuter(layout).hidden_sizes]


# ---------------------------------------------------------------------------- graph
@pytest.mark.parametrize("architecture", ["cnn_s", "cnn_l"])
def test_the_graph_follows_the_neural_graph_conventions(architecture):
    layout = _layout(architecture)
    view = make_view("graph", layout)
    flat = torch.randn(layout.num_params)
    graph = view(flat)
    pytest.importorskip("torch_geometric")
    from torch_geometric.data import Data

    assert isinstance(graph, Data)
    conv1, fc2 = layout.by_name["conv1.weight"], layout.by_name["fc2.weight"]
    sizes = [conv1.shape[1]] + [layout.by_name[f"{lay}.bias"].shape[0] for lay in layout.layers]
    assert graph.num_nodes == sum(sizes) and graph.x.shape == (sum(sizes), 1)
    assert graph.is_input.sum() == 1 and graph.is_output.sum() == 10  # greyscale input, 10 classes
    assert torch.equal(graph.x[1:, 0], torch.cat([flat[layout.by_name[f"{lay}.bias"].slice] for lay in layout.layers]))
    assert torch.equal(graph.x[0], torch.zeros(1))  # an input node has no bias
    source, target = graph.edge_index
    assert torch.equal(source * graph.num_nodes + target, (source * graph.num_nodes + target).sort().values)
    assert bool((graph.node_layer[target] == graph.node_layer[source] + 1).all())
    assert torch.equal(graph.edge_layer, graph.node_layer[target])
    side = conv1.shape[-1] if architecture == "cnn_s" else 3  # the largest kernel
    assert graph.edge_attr.shape == (graph.edge_index.shape[1], side * side)
    # conv1's kernel of the edge input -> neuron 0 is the whole grid; fc2's weight the centre entry
    assert torch.equal(graph.edge_attr[0].view(side, side)[:conv1.shape[2], :conv1.shape[3]],
                       flat[conv1.slice].view(conv1.shape)[0, 0])
    last = graph.edge_layer == len(layout.layers)
    centre = torch.zeros(side * side, dtype=torch.bool)
    centre[side * side // 2] = True
    assert bool((graph.edge_valid[last] == centre).all())
    weights = flat[fc2.slice].view(fc2.shape)  # edges from fc1's neuron i to output j, source-major
    assert torch.equal(graph.edge_attr[last][:, side * side // 2], weights.T.ravel())
    if architecture == "cnn_s":  # conv3's 2 x 2 kernel and fc1's 3 x 3 map sit centred in 5 x 5
        for layer, rows in ((3, slice(1, 3)), (4, slice(1, 4))):
            valid = graph.edge_valid[graph.edge_layer == layer][0].view(5, 5)
            expected = torch.zeros(5, 5, dtype=torch.bool)
            expected[rows, rows] = True
            assert torch.equal(valid, expected)


def test_the_graph_is_plain_tensors_without_torch_geometric(monkeypatch):
    layout = _layout("cnn_s")
    monkeypatch.setattr(graph_module, "data_class", lambda: None)
    view = make_view("graph", layout)
    flat = torch.randn(2, layout.num_params)
    plain = view(flat)
    assert isinstance(plain, dict) and plain["x"].shape == (49, 2, 1) and plain["edge_attr"].shape == (360, 2, 25)
    assert torch.equal(view.inverse(plain), flat)


def _relabelled(graph, orders: list[torch.Tensor], layout: ParameterLayout) -> tuple[torch.Tensor, torch.Tensor]:
    """Node features and edge features (in the view's edge order) of ``graph`` with its hidden
    neurons renumbered by ``orders``: node ``i`` of the result is node ``old[i]`` of ``graph``."""
    old = torch.arange(graph.num_nodes)
    start = int(graph.is_input.sum())
    for order in orders:
        old[start:start + len(order)] = order + start
        start += len(order)
    edge_id = {(int(s), int(t)): e for e, (s, t) in enumerate(graph.edge_index.T)}
    source, target = graph.edge_index
    moved = torch.tensor([edge_id[int(old[s]), int(old[t])] for s, t in zip(source, target, strict=True)])
    return graph.x[old], graph.edge_attr[moved]


@pytest.mark.parametrize("architecture", ["cnn_s", "cnn_l"])
def test_a_neuron_permutation_is_a_relabelling_of_the_graph(architecture):
    layout = _layout(architecture)
    view = make_view("graph", layout)
    flat = torch.randn(layout.num_params)
    orders = _orders(layout, 3)
    permuted = view(permute(flat, NeuronPermuter(layout).from_orders(orders)))
    x, edges = _relabelled(view(flat), orders, layout)
    assert torch.equal(permuted["x"], x) and torch.equal(permuted["edge_attr"], edges)
    assert not torch.equal(x, view(flat)["x"])
    # the item transform draws the same orders from the same seed
    transform = RandomNeuronPermutation(layout, "graph", generator=torch.Generator().manual_seed(3))
    item = transform({"original": view(flat)})
    assert torch.equal(item["original"]["edge_attr"], edges)


def test_a_gnn_on_the_graph_view_is_invariant(stores):
    pytest.importorskip("torch_geometric")
    from torch_geometric.nn import GINEConv, global_add_pool

    torch.manual_seed(0)
    conv = GINEConv(torch.nn.Sequential(torch.nn.Linear(1, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8)), edge_dim=25)
    readout = torch.nn.Linear(8, 1)
    zoo = stores["cnn_s"]
    layout = ZooStore(zoo).layout
    plain = ZooTwinDataset(zoo, method="vd", split=None, view="graph")
    permuted = ZooTwinDataset(zoo, method="vd", split=None, view="graph",
                              transform=RandomNeuronPermutation(layout, "graph"))
    batches = [next(iter(DataLoader(d, batch_size=len(d), collate_fn=collate_padded)))["twin"]
               for d in (plain, permuted)]
    assert not torch.equal(batches[0].edge_attr, batches[1].edge_attr)  # the permuted graphs differ
    with torch.no_grad():
        out = [readout(global_add_pool(conv(b.x, b.edge_index, b.edge_attr), b.batch)) for b in batches]
    torch.testing.assert_close(out[1], out[0], rtol=1e-5, atol=1e-5 * float(out[0].abs().max()))


# ---------------------------------------------------------------------------- sane tokens
def _sane_reference(layout: ParameterLayout, flat: torch.Tensor, size: int) -> tuple[torch.Tensor, list]:
    """SANE's tokenisation from its public description (tokenize_checkpoint, HSG-AIML/SANE): each
    layer's weight as [out, -1] with the bias as the last column, each row zero-padded to a
    multiple of the token size and cut into tokens; positions per token (layer, neuron)."""
    tokens, positions = [], []
    for number, layer in enumerate(layout.layers):
        w, b = layout.by_name[f"{layer}.weight"], layout.by_name[f"{layer}.bias"]
        rows = torch.cat([flat[w.slice].view(w.shape[0], -1), flat[b.slice][:, None]], dim=1)
        chunks = -(-rows.shape[1] // size)
        padded = torch.zeros(rows.shape[0], chunks * size)
        padded[:, :rows.shape[1]] = rows
        tokens.append(padded.view(-1, size))
        positions += [(number, neuron, c) for neuron in range(rows.shape[0]) for c in range(chunks)]
    return torch.cat(tokens), positions


@pytest.mark.parametrize("size", [None, 7, 64])
@pytest.mark.parametrize("architecture", ["cnn_s", "cnn_l"])
def test_sane_tokens_are_sanes_tokenisation(architecture, size):
    layout = _layout(architecture)
    view = make_view("sane", layout, token_size=size)
    flat = torch.randn(layout.num_params)
    state = view(flat)
    widest = max(e.size // e.shape[0] for e in layout.weight_entries()) + 1
    tokens, positions = _sane_reference(layout, flat, size or widest)
    assert torch.equal(state["tokens"], tokens)
    assert state["position"].tolist() == [list(p) for p in positions]
    assert torch.equal(state["index"], torch.arange(len(tokens)))
    assert int(state["valid"].sum()) == layout.num_params
    assert torch.equal(view.inverse(state), flat)


def test_token_windows_invert_exactly_and_cut_every_state_alike():
    layout = _layout("cnn_s")
    view = make_view("sane", layout, token_size=16)
    flat = torch.randn(3, layout.num_params)  # a trajectory of three states
    mask = flat > 0
    window = RandomTokenWindow(32, generator=torch.Generator().manual_seed(0))
    item = window({"original": view(flat[-1]), "twin": view(flat), "mask": view(mask), "model_id": 7})
    start = int(item["original"]["index"][0])
    assert item["model_id"] == 7
    for key in ("original", "twin", "mask"):  # one window for every state of the item
        assert torch.equal(item[key]["index"][..., 0], torch.full(item[key]["index"].shape[:-1], start))
        assert item[key]["tokens"].shape[-2:] == (32, 16)
    written = view.inverse(item["twin"], into=torch.full((layout.num_params,), -7.0))
    ones = RandomTokenWindow(32).cut(view(torch.ones(layout.num_params)), start)
    covered = view.inverse(ones, into=torch.zeros(layout.num_params)).bool()
    assert 0 < int(covered.sum()) < layout.num_params
    assert torch.equal(written, torch.where(covered, flat, -7.0))  # the window's entries, the rest kept
    with pytest.raises(ZooSpecError, match="cover 32 of the 182 tokens"):
        view.inverse(item["twin"])
    # consecutive windows that cover the sequence give the state back exactly, in any order
    n = view.num_tokens
    starts = [*range(0, n - 32, 32), n - 32][::-1]
    pieces = [RandomTokenWindow(32).cut(view(flat), s) for s in starts]
    joined = {k: torch.cat([p[k] for p in pieces], dim=1) for k in pieces[0]}
    with pytest.raises(ZooSpecError):  # the overlap of the last two windows is no full cover by itself
        view.inverse({k: v[:, :32] for k, v in joined.items()})
    assert torch.equal(view.inverse(joined, into=torch.zeros(layout.num_params)), flat)
    starts_seen = {int(RandomTokenWindow(n - 1)({"original": view(flat[0])})["original"]["index"][0])
                   for _ in range(40)}
    assert starts_seen == {0, 1}  # every full window can be drawn, no other


def test_windowed_tokens_permute_consistently():
    layout = _layout("cnn_l")
    view = make_view("sane", layout, token_size=32)
    flat = torch.randn(layout.num_params)
    index = NeuronPermuter(layout).from_orders(_orders(layout, 5))
    transform = Compose([RandomNeuronPermutation(layout, view, generator=torch.Generator().manual_seed(5)),
                         RandomTokenWindow(50, generator=torch.Generator().manual_seed(1))])
    window = transform({"original": view(flat)})["original"]
    expected = view(permute(flat, index))
    start = int(window["index"][0])
    for key in window:
        assert torch.equal(window[key], expected[key][start:start + 50])


# ---------------------------------------------------------------------------- every transform, every view
def _views(layout: ParameterLayout) -> dict:
    views = {name: make_view(name, layout) for name in VIEWS}
    views["sane (16)"] = make_view("sane", layout, token_size=16)
    return views


def test_every_view_inverts_every_state_exactly(stores):
    for zoo in stores.values():
        layout = ZooStore(zoo).layout
        flat_items = list(ZooTrajectoryDataset(zoo, method="vd", split=None))
        for name, view in _views(layout).items():
            for item, flat in zip(ZooTrajectoryDataset(zoo, method="vd", split=None, view=view), flat_items,
                                  strict=True):
                for key in STATE_KEYS:
                    assert torch.equal(view.inverse(item[key]), flat[key]), (name, key)


def _chain(layout: ParameterLayout, stats: LayerStandardization, view, canonical: bool) -> Compose:
    """Every transform, each with its own seeded generator (the canonical order last, or not at all)."""
    seed = iter(range(100))
    return Compose([
        Standardize(stats, view),
        RandomNeuronPermutation(layout, view, generator=torch.Generator().manual_seed(next(seed))),
        GaussianNoise(layout, view, generator=torch.Generator().manual_seed(next(seed))),
        RandomErasing(layout, view, generator=torch.Generator().manual_seed(next(seed))),
        *([CanonicalNeuronOrder(layout, view)] if canonical else []),
    ])


@pytest.mark.parametrize("canonical", [False, True])
@pytest.mark.parametrize("architecture", ["cnn_s", "cnn_l"])
def test_every_transform_works_in_every_view_as_in_flat(stores, architecture, canonical):
    zoo = stores[architecture]
    layout = ZooStore(zoo).layout
    stats = LayerStandardization.fit(zoo, split=None)
    flat_chain = _chain(layout, stats, "flat", canonical)
    reference = [flat_chain(item) for item in ZooTwinDataset(zoo, method="vd", split=None)]
    for name, view in _views(layout).items():
        chain = _chain(layout, stats, view, canonical)
        for item, expected in zip(ZooTwinDataset(zoo, method="vd", split=None, view=view), reference, strict=True):
            out = chain(item)
            for key in STATE_KEYS:
                assert torch.equal(view.inverse(out[key]), expected[key]), (name, key)
    item = ZooTwinDataset(zoo, method="vd", split=None)[0]
    for key in STATE_KEYS:  # the chain changed every state (masks: moved)
        assert not torch.equal(reference[0][key], item[key])


# ---------------------------------------------------------------------------- mixed architectures
@pytest.mark.parametrize("view", sorted(VIEWS))
def test_mixed_architectures_load_in_one_dataloader(stores, view):
    datasets = [ZooTwinDataset(stores[a], method="vd", split=None, view=view) for a in ("cnn_s", "cnn_l")]
    mixed = ConcatDataset(datasets)
    batches = list(DataLoader(mixed, batch_size=4, shuffle=False, num_workers=2, collate_fn=collate_padded))
    items = list(mixed)
    assert sum(len(b["model_id"]) for b in batches) == len(items) == 6
    if view != "graph":  # the first batch mixes 3 CNN-s items with a CNN-l one: padded
        assert not all(bool(t.all()) for t in _leaves(batches[0]["real"]["twin"]))
    row = 0
    for batch in batches:
        for i in range(len(batch["model_id"])):
            item, dataset = items[row], datasets[0] if row < len(datasets[0]) else datasets[1]
            for key in STATE_KEYS:
                state = _unbatch(batch[key], batch["real"].get(key), i)
                assert torch.equal(dataset.view.inverse(state), dataset.view.inverse(item[key])), (view, key)
            row += 1


def _leaves(tree) -> list[torch.Tensor]:
    if isinstance(tree, torch.Tensor):
        return [tree]
    return [leaf for branch in (tree.values() if isinstance(tree, dict) else tree) for leaf in _leaves(branch)]


def _unbatch(batched, real, i: int):
    """Entry ``i`` of a padded batch cut back to its real entries (graphs: their own feature width)."""
    if hasattr(batched, "to_data_list"):
        graph = batched.get_example(i)
        width = int(graph.edge_valid.any(0).nonzero().max()) + 1
        return {"x": graph.x, "edge_attr": graph.edge_attr[..., :width]}
    if isinstance(batched, torch.Tensor):
        shape = [int(real[i].any(dim=tuple(d for d in range(real[i].dim()) if d != axis)).sum())
                 for axis in range(real[i].dim())] if real[i].dim() else []
        own = tuple(slice(0, n) for n in shape)
        assert bool(real[i][own].all()) and int(real[i].sum()) == torch.Size(shape).numel()  # a block at the start
        return batched[i][own]
    if isinstance(batched, dict):
        return {k: _unbatch(v, real[k], i) for k, v in batched.items()}
    return [_unbatch(v, r, i) for v, r in zip(batched, real, strict=True)]


def test_mixed_batches_of_differing_layer_kinds_are_refused():
    conv, dense = {"original": [torch.zeros(2, 3, 3)]}, {"original": [torch.zeros(2, 3)]}
    with pytest.raises(ZooSpecError, match="cannot batch tensors of"):
        collate_padded([conv, dense])


def test_a_global_pooling_network_reads_its_channels_one_to_one():
    """The views derive shapes from the layout: after global average pooling the dense layer reads
    each channel once (a 1 x 1 map), so it stays a plain dense weight."""
    from collections import OrderedDict

    from torch import nn

    net = nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(1, 6, 3, stride=2)), ("act1", nn.ReLU()), ("conv2", nn.Conv2d(6, 5, 3, stride=2)),
        ("act2", nn.ReLU()), ("pool", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()), ("fc", nn.Linear(5, 10)),
    ]))
    layout = ParameterLayout.from_module(net)
    flat = layout.flatten_module(net)
    weights, _ = make_view("nfn", layout)(flat)
    assert [tuple(w.shape) for w in weights] == [(1, 6, 1, 3, 3), (1, 5, 6, 3, 3), (1, 10, 5)]
    graph = make_view("graph", layout)(flat)
    assert graph["edge_attr"].shape == (1 * 6 + 6 * 5 + 5 * 10, 9)
    for view in _views(layout).values():
        assert torch.equal(view.inverse(view(flat)), flat)
    orders = _orders(layout, 0)
    permuted = permute(flat, NeuronPermuter(layout).from_orders(orders))
    x, edges = _relabelled(make_view("graph", layout)(flat), orders, layout)
    assert torch.equal(make_view("graph", layout)(permuted)["edge_attr"], edges)
    images = torch.rand(4, 1, 16, 16)
    with torch.no_grad():  # the permutation keeps the function
        expected = net(images)
        torch.testing.assert_close(layout.load_into(net, permuted)(images), expected)
