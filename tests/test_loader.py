"""ZooTwinDataset / ZooTrajectoryDataset over a small built store: views, pairs, splits, workers, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _fixtures_loader import SPEC, shared_loader_store
from torch.utils.data import ConcatDataset, DataLoader

from loaders import ITEM_SCHEMA, VIEWS, ZooTrajectoryDataset, ZooTwinDataset, collate_shared, make_view
from zoo_dataset.architectures import build_model
from zoo_dataset.data import load_dataset
from zoo_dataset.errors import StoreError, UnknownZooError, ZooSpecError
from zoo_dataset.metrics import evaluate
from zoo_dataset.model_layout import input_size
from zoo_dataset.store import ZooStore


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    return shared_loader_store(tmp_path_factory)


@pytest.fixture(scope="module")
def data():
    return load_dataset(SPEC.dataset, input_size(SPEC))


@pytest.mark.parametrize("method", ["mp", "vd"])
def test_pairs_align_with_the_store(zoo, method):
    store = ZooStore(zoo)
    ds = ZooTwinDataset(zoo, method=method, split=None)
    levels = store.population(method).levels
    assert len(ds) == len(SPEC.models()) * len(levels)
    for item in ds:
        model_id, level = int(item["model_id"]), float(item["level"])
        np.testing.assert_array_equal(item["original"].numpy(), store.weights("original", model_id, -1))
        raw = store.weights(method, model_id, -1, level)
        mask = store.array("masks", method, model_id, -1, level)
        np.testing.assert_array_equal(item["twin"].numpy(), np.where(mask, raw, 0))
        np.testing.assert_array_equal(item["mask"].numpy(), mask)
        assert ("log_alpha" in item) == (method == "vd")
        states = store.states(method)
        row = states[
            (states.model_id == model_id)
            & np.isclose(states.level, level)
            & (states.epoch == int(item["epoch"]))
        ]
        assert float(item["twin_properties"]["test_acc"]) == pytest.approx(float(row.test_acc.iloc[0]))
        assert float(item["twin_properties"]["sparsity"]) == pytest.approx(float(row.sparsity.iloc[0]))
        assert item["factors"]["seed"] == SPEC.all_models()[model_id].seed


def test_mp_level_selects_one_level(zoo):
    every = ZooTwinDataset(zoo, method="mp", split=None)
    one = ZooTwinDataset(zoo, method="mp", level=0.9, split=None)
    assert len(every) == 2 * len(one)
    assert [float(i["level"]) for i in one] == pytest.approx([0.9] * len(one))
    assert ZooTwinDataset(zoo, method="mp", level=90, split=None).index.levels == one.index.levels


def test_splits_are_disjoint_stable_and_shared_by_methods(zoo):
    per_split = {
        s: set(ZooTwinDataset(zoo, method="mp", split=s).model_ids) for s in ("train", "val", "test")
    }
    assert not (per_split["train"] & per_split["val"]) and not (per_split["train"] & per_split["test"])
    assert not (per_split["val"] & per_split["test"])
    assert set().union(*per_split.values()) == {m.model_id for m in SPEC.models()}
    for split, ids in per_split.items():
        assert set(ZooTwinDataset(zoo, method="vd", split=split).model_ids) == ids
        assert set(ZooTwinDataset(zoo, method="mp", split=split).model_ids) == ids  # stable on reopening


@pytest.mark.parametrize("view", sorted(VIEWS))
def test_every_view_round_trips_to_a_working_model(zoo, data, view):
    store = ZooStore(zoo)
    ds = ZooTwinDataset(zoo, method="mp", level=0.5, split=None, view=view)
    inverse = make_view(view, store.layout).inverse
    item = ds[0]
    model_id = int(item["model_id"])
    flat = inverse(item["twin"])
    assert flat.shape == (store.layout.num_params,)
    assert torch.equal(inverse(item["mask"]), torch.from_numpy(store.array("masks", "mp", model_id, -1, 0.5)))
    config = store.model_config(model_id)
    net = build_model(SPEC.architecture, data.channels, config.activation, config.dropout)
    model = store.layout.load_into(net, flat)
    _, acc, _ = evaluate(model, data.test_x, data.test_y)
    assert acc == pytest.approx(float(item["twin_properties"]["test_acc"]), abs=1e-6)


def test_view_shapes(zoo):
    layout = ZooStore(zoo).layout
    flat = torch.randn(3, layout.num_params)
    layers = make_view("layers", layout)(flat)
    assert [tuple(w.shape) for w in layers["weights"]] == [(3, *e.shape) for e in layout.weight_entries()]
    assert [tuple(b.shape) for b in layers["biases"]] == [(3, e.shape[0]) for e in layout.weight_entries()]
    tokens = make_view("tokens", layout)(flat)
    neurons = sum(e.shape[0] for e in layout.weight_entries())
    width = max(e.size // e.shape[0] for e in layout.weight_entries()) + 1
    assert tokens["tokens"].shape == (3, neurons, width)
    assert tokens["layer_id"].shape == tokens["position_id"].shape == (3, neurons)
    assert int(tokens["valid"][0].sum()) == layout.num_params  # every parameter in exactly one token slot
    assert torch.equal(
        tokens["tokens"][0, :, -1],
        torch.cat([flat[0, layout.by_name[f"{lay}.bias"].slice] for lay in layout.layers]),
    )
    for view in VIEWS:
        v = make_view(view, layout)
        assert torch.equal(v.inverse(v(flat)), flat)


def test_trajectory_items_stack_every_epoch(zoo):
    store = ZooStore(zoo)
    ds = ZooTrajectoryDataset(zoo, method="vd", split=None, view="tokens")
    n_states = store.population("vd").epochs + 1
    item = ds[0]
    model_id = int(item["model_id"])
    assert item["twin"]["tokens"].shape[0] == n_states
    assert item["log_alpha"]["tokens"].shape[0] == n_states
    assert item["twin_properties"]["test_acc"].shape == (n_states,)
    flat = make_view("tokens", store.layout).inverse(item["log_alpha"])
    np.testing.assert_array_equal(flat.numpy(), store.array("log_alpha", "vd", model_id, slice(None)))


@pytest.mark.parametrize("dataset", [ZooTwinDataset, ZooTrajectoryDataset])
def test_apply_mask_false_serves_the_dense_vd_weights(zoo, dataset):
    store = ZooStore(zoo)
    dense_items = dataset(zoo, method="vd", split=None, apply_mask=False)
    masked_items = dataset(zoo, method="vd", split=None)
    epoch = -1 if dataset is ZooTwinDataset else slice(None)
    dropped = 0
    for dense, masked in zip(dense_items, masked_items, strict=True):
        model_id = int(dense["model_id"])
        stored = store.weights("vd", model_id, epoch)
        np.testing.assert_array_equal(dense["twin"].numpy(), stored)
        mask = dense["mask"].numpy()
        np.testing.assert_array_equal(masked["twin"].numpy(), np.where(mask, stored, 0))
        dropped += int((~mask & (stored != 0)).sum())
    assert dropped > 0  # the two really differ: VD drops weights that are not zero


def test_dataloader_with_two_workers_matches_single_process(zoo):
    ds = ZooTwinDataset(zoo, method="mp", split=None)
    serial = next(iter(DataLoader(ds, batch_size=len(ds))))
    parallel = list(DataLoader(ds, batch_size=2, num_workers=2))
    assert torch.equal(torch.cat([b["twin"] for b in parallel]), serial["twin"])
    assert torch.equal(torch.cat([b["model_id"] for b in parallel]), serial["model_id"])
    assert parallel[0]["factors"]["activation"] == ["tanh", "tanh"]


def test_transform_is_applied(zoo):
    ds = ZooTwinDataset(zoo, method="vd", split=None, transform=lambda item: item["twin"].abs().sum())
    assert ds[0].ndim == 0


def test_clear_errors(zoo, tmp_path):
    with pytest.raises(UnknownZooError, match="unknown zoo 'no_such_zoo'"):
        ZooTwinDataset("no_such_zoo", root=tmp_path)
    with pytest.raises(StoreError, match="is not at"):
        ZooTwinDataset("digits_seed", root=tmp_path)  # registered, but not built there
    with pytest.raises(ZooSpecError, match="unknown split 'valid'"):
        ZooTwinDataset(zoo, method="mp", split="valid")
    with pytest.raises(StoreError, match="epoch 99 out of range"):
        ZooTwinDataset(zoo, method="mp", epoch=99)
    with pytest.raises(ZooSpecError, match="unknown method"):
        ZooTwinDataset(zoo, method="lottery")
    with pytest.raises(ZooSpecError, match="unknown view"):
        ZooTwinDataset(zoo, method="mp", view="pixels")
    with pytest.raises(StoreError, match="level 0.3 not recorded"):
        ZooTwinDataset(zoo, method="mp", level=0.3)


@pytest.mark.parametrize("epoch", [-1, None])
def test_export_to_hf_datasets_is_typed_and_split_by_model(zoo, tmp_path, epoch):
    import datasets

    from loaders.hf_export import to_hf_dataset, write_parquet

    table = to_hf_dataset(zoo, method="vd", epoch=epoch, cache_dir=tmp_path / "cache")
    assert list(table) == ["train", "validation", "test"]
    store = ZooStore(zoo)
    n_params, n_states = store.layout.num_params, store.population("vd").epochs + 1
    features = table["train"].features
    if epoch is None:
        assert features["twin"] == datasets.Array2D((n_states, n_params), "float32")
        assert features["mask"] == datasets.Array2D((n_states, n_params), "bool")
        assert features["twin_test_acc"] == datasets.List(datasets.Value("float32"), length=n_states)
    else:
        assert features["twin"] == datasets.List(datasets.Value("float32"), length=n_params)
        assert features["twin_test_acc"] == datasets.Value("float32")
    assert features["original"] == datasets.List(datasets.Value("float32"), length=n_params)
    assert "original_agreement" not in features
    for split, hub_split in (("train", "train"), ("val", "validation"), ("test", "test")):
        make = ZooTwinDataset if epoch is not None else ZooTrajectoryDataset
        ds = make(zoo, method="vd", split=split)
        rows = table[hub_split].with_format("numpy")
        assert [int(m) for m in rows["model_id"]] == [int(item["model_id"]) for item in ds]
        for row, item in zip(rows, ds, strict=True):
            for array in ("twin", "mask", "log_alpha", "original"):
                np.testing.assert_array_equal(row[array], item[array].numpy())
                assert row[array].dtype == item[array].numpy().dtype
            np.testing.assert_array_equal(row["twin_test_acc"], item["twin_properties"]["test_acc"].numpy())
    files = write_parquet(table, tmp_path / "parquet")
    again = datasets.load_dataset("parquet", data_files={s: str(p) for s, p in files.items()},
                                  cache_dir=str(tmp_path / "cache2"))
    assert again["train"].features == features
    assert again["validation"].num_rows == table["validation"].num_rows


def test_datasets_describe_themselves(zoo):
    ds = ZooTwinDataset(zoo, method="mp", level=50, split="train", view="tokens")
    text = repr(ds)
    assert text.startswith("Dataset ZooTwinDataset\n")
    for line in (f"Number of datapoints: {len(ds)}", f"Root location: {zoo}", "Zoo: digits_seed", "Method: mp",
                 "Level: 0.5", "Split: train", "Epochs: 1 of 0..1", "View: tokens"):
        assert line in text
    trajectories = repr(ZooTrajectoryDataset(zoo, method="vd", split=None))
    assert "Split: all" in trajectories and "Epochs: all (2: 0..1)" in trajectories
    for cls in (ZooTwinDataset, ZooTrajectoryDataset):
        for argument in ("zoo", "method", "level", "split", "root", "download", "view", "transform",
                         "target_transform", "apply_mask"):
            assert f"{argument}:" in cls.__doc__
    assert "epoch:" in ZooTwinDataset.__doc__


@pytest.mark.parametrize("method", ["mp", "vd"])
def test_items_follow_the_documented_schema_without_nan(zoo, method):
    for cls in (ZooTwinDataset, ZooTrajectoryDataset):
        dataset = cls(zoo, method=method, split=None)
        item = dataset[0]
        assert set(item) == set(ITEM_SCHEMA) - ({"log_alpha"} if method == "mp" else set())
        for side in ("original_properties", "twin_properties"):
            assert not any(torch.isnan(v).any() for v in item[side].values())
        assert "agreement" not in item["original_properties"]
        assert "agreement" in item["twin_properties"]


def test_target_transform_maps_the_twin_properties(zoo):
    ds = ZooTwinDataset(zoo, method="mp", split=None, target_transform=lambda props: props["test_acc"] * 100)
    plain = ZooTwinDataset(zoo, method="mp", split=None)
    assert float(ds[1]["twin_properties"]) == pytest.approx(100 * float(plain[1]["twin_properties"]["test_acc"]))
    assert "Target transform" in repr(ds)


def test_mp_and_vd_items_share_one_dataloader(zoo):
    mp, vd = ZooTwinDataset(zoo, method="mp", split=None), ZooTwinDataset(zoo, method="vd", split=None)
    with pytest.raises(KeyError, match="log_alpha"):  # what default_collate does with a VD item first
        list(DataLoader(ConcatDataset([vd, mp]), batch_size=len(mp) + len(vd)))
    for mixed in (ConcatDataset([vd, mp]), ConcatDataset([mp, vd])):
        batch = next(iter(DataLoader(mixed, batch_size=len(mixed), collate_fn=collate_shared)))
        assert batch["twin"].shape[0] == len(mixed) and "log_alpha" not in batch
        assert sorted(batch["level"].tolist()) == sorted([float(i["level"]) for i in mixed])


@pytest.mark.parametrize("epoch", [5.0, slice(0, 2), "1", True])
def test_wrong_types_say_type(zoo, epoch):
    with pytest.raises(TypeError, match=f"epoch must be an int .*not type {type(epoch).__name__}"):
        ZooTwinDataset(zoo, method="mp", epoch=epoch)


def test_wrong_level_and_split_types_say_type(zoo):
    with pytest.raises(TypeError, match="level must be a number .*not type str"):
        ZooTwinDataset(zoo, method="mp", level="50")
    with pytest.raises(TypeError, match="split must be a str .*not type int"):
        ZooTwinDataset(zoo, method="mp", split=1)


def test_loaders_use_only_the_public_store_reader():
    """The fast path lives in ZooStore: no loader module imports a private name of the store package."""
    import ast
    from pathlib import Path

    import loaders

    for module in Path(loaders.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("zoo_dataset.store"):
                private = [alias.name for alias in node.names if alias.name.startswith("_")]
                assert not private, f"{module.name} imports {private} from {node.module}"
