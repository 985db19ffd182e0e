"""What a loader serves: epoch lists, the original population, model filters, non-finite states,
k folds by model, split names and flags."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _fixtures_loader import SPEC, shared_loader_store
from torch.utils.data import ConcatDataset, DataLoader, Subset

from loaders import (
    ORIGINAL_ITEM_SCHEMA,
    LayerStandardization,
    ZooOriginalDataset,
    ZooOriginalTrajectoryDataset,
    ZooTrajectoryDataset,
    ZooTwinDataset,
    collate_shared,
    item_folds,
    make_view,
    model_folds,
    open_store,
    select_models,
)
from zoo_dataset.errors import StoreError, ZooSpecError, ZooTypeError
from zoo_dataset.store import ZooStore


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    return shared_loader_store(tmp_path_factory)


def _stored(store: ZooStore, population: str, model_id: int, name: str, epoch, level=None) -> np.ndarray:
    return store.array(name, population, model_id, epoch, level)


@pytest.mark.parametrize("epochs", [[1, 0], [0], range(2), (1,), [1, 1], None])
def test_twin_epoch_lists_return_exactly_the_requested_states(zoo, epochs):
    store = ZooStore(zoo)
    n_states = store.population("vd").epochs + 1
    wanted = list(range(n_states)) if epochs is None else list(epochs)
    ds = ZooTwinDataset(zoo, method="vd", split=None, epoch=epochs, apply_mask=False)
    assert len(ds) == len(ds.index.units) * len(wanted)
    assert ds.epoch == (wanted[0] if len(wanted) == 1 else wanted)
    served = [(int(it["model_id"]), int(it["epoch"])) for it in ds]
    assert served == [(m, e) for m in ds.model_ids for e in wanted]  # one item per epoch, in the order asked
    for item in ds:
        model_id, epoch = int(item["model_id"]), int(item["epoch"])
        np.testing.assert_array_equal(item["twin"].numpy(), _stored(store, "vd", model_id, "weights", epoch))
        np.testing.assert_array_equal(item["log_alpha"].numpy(), _stored(store, "vd", model_id, "log_alpha", epoch))
        assert float(item["twin_properties"]["epoch"]) == epoch

    trajectories = ZooTrajectoryDataset(zoo, method="vd", split=None, epoch=epochs, view="layers")
    inverse = make_view("layers", store.layout).inverse
    for item in trajectories:
        model_id = int(item["model_id"])
        assert item["epoch"].tolist() == wanted
        every = _stored(store, "vd", model_id, "masks", slice(None))
        np.testing.assert_array_equal(inverse(item["mask"]).numpy(), every[wanted])
        assert item["twin_properties"]["epoch"].tolist() == wanted


def test_original_is_not_a_twin_method(zoo):
    for make in (ZooTwinDataset, ZooTrajectoryDataset):
        with pytest.raises(ZooSpecError, match="'original' is not a twin method: ZooOriginalDataset"):
            make(zoo, method="original")


def test_epoch_list_errors_are_one_line(zoo):
    with pytest.raises(StoreError, match="epoch 5 out of range"):
        ZooTwinDataset(zoo, method="mp", epoch=[0, 5])
    with pytest.raises(ZooSpecError, match="empty list"):
        ZooTrajectoryDataset(zoo, method="mp", epoch=[])
    with pytest.raises(ZooTypeError, match="epoch must be an int .*not type float"):
        ZooOriginalDataset(zoo, epoch=[0, 1.0])


@pytest.mark.parametrize("view", ["flat", "tokens"])
def test_the_original_population_is_a_dataset(zoo, view):
    store = ZooStore(zoo)
    n_states = store.population("original").epochs + 1
    ds = ZooOriginalDataset(zoo, split=None, epoch=None, view=view)
    assert len(ds) == len(SPEC.models()) * n_states
    inverse = make_view(view, store.layout).inverse
    states = store.states("original").set_index(["model_id", "epoch"])
    for item in ds:
        assert set(item) == set(ORIGINAL_ITEM_SCHEMA)
        model_id, epoch = int(item["model_id"]), int(item["epoch"])
        np.testing.assert_array_equal(inverse(item["original"]).numpy(), store.weights("original", model_id, epoch))
        row = states.loc[(model_id, epoch)]
        assert float(item["original_properties"]["test_acc"]) == pytest.approx(float(row.test_acc))
        assert "agreement" not in item["original_properties"]
        assert item["factors"]["seed"] == SPEC.all_models()[model_id].seed
    assert "Method: original" in repr(ds) and "Masked" not in repr(ds)

    trajectories = ZooOriginalTrajectoryDataset(zoo, split="train", epoch=[1, 0], view=view,
                                                target_transform=lambda p: p["test_acc"])
    item = trajectories[0]
    model_id = int(item["model_id"])
    np.testing.assert_array_equal(inverse(item["original"]).numpy(),
                                  store.weights("original", model_id, slice(None))[[1, 0]])
    assert item["original_properties"].shape == (2,)
    assert trajectories.model_ids == ZooTwinDataset(zoo, method="mp", split="train").model_ids


def test_originals_and_twins_batch_together(zoo):
    originals = ZooOriginalDataset(zoo, split=None)
    twins = ZooTwinDataset(zoo, method="vd", split=None)
    batch = next(iter(DataLoader(ConcatDataset([originals, twins]), batch_size=len(originals) + len(twins),
                                 collate_fn=collate_shared)))
    assert set(batch) == {"model_id", "epoch", "factors", "original", "original_properties"}
    assert batch["original"].shape == (len(originals) + len(twins), ZooStore(zoo).layout.num_params)


def test_validation_is_the_val_split_everywhere(zoo):
    val = ZooTwinDataset(zoo, method="mp", split="val")
    for make in (ZooTwinDataset, ZooTrajectoryDataset):
        assert make(zoo, method="mp", split="validation").model_ids == val.model_ids
    assert ZooOriginalDataset(zoo, split="validation").model_ids == val.model_ids
    assert select_models(zoo, split="validation") == val.model_ids
    assert ZooTwinDataset(zoo, method="mp", split="validation").split == "val"
    fitted = LayerStandardization.fit(zoo, split="validation")
    assert fitted.stats == LayerStandardization.fit(zoo, split="val").stats


@pytest.mark.parametrize("flag", ["download", "apply_mask", "drop_nonfinite"])
@pytest.mark.parametrize("value", ["no", "False", 0, 1, None])
def test_flags_refuse_what_is_not_a_bool(zoo, flag, value):
    with pytest.raises(ZooTypeError, match=f"^{flag} must be True or False, not {value!r}"):
        ZooTwinDataset(zoo, method="mp", **{flag: value})
    if flag != "apply_mask":
        with pytest.raises(ZooTypeError, match=f"{flag} must be True or False"):
            ZooOriginalDataset(zoo, **{flag: value})


def test_open_store_refuses_a_string_download(zoo):
    with pytest.raises(ZooTypeError, match="download must be True or False, not 'no'"):
        open_store(zoo, download="no")


def test_models_select_by_factors_and_by_property(zoo):
    store = ZooStore(zoo)
    everyone = select_models(zoo)
    assert everyone == sorted(int(m) for m in store.models().model_id)
    seeds = {m: SPEC.all_models()[m].seed for m in everyone}
    two = sorted(seeds.values())[:2]
    assert select_models(zoo, factors={"seed": two}) == sorted(m for m, s in seeds.items() if s in two)
    assert select_models(zoo, factors={"activation": "tanh", "optimizer": ["adam"]}) == everyone
    assert select_models(zoo, factors={"activation": "relu"}) == []
    final = store.states("original").query("epoch == epoch.max()").set_index("model_id").test_acc
    cut = float(final.median())
    better = select_models(zoo, where=lambda p: p["test_acc"] >= cut)
    assert better == sorted(int(m) for m, acc in final.items() if acc >= cut) and 0 < len(better) < len(everyone)
    ds = ZooTwinDataset(zoo, method="mp", split=None, models=better)
    assert ds.model_ids == better and set(ds.item_model_ids) == set(better)
    with pytest.raises(ZooSpecError, match="unknown factor 'colour'"):
        select_models(zoo, factors={"colour": "red"})
    with pytest.raises(StoreError, match=r"models \[999\] are not in"):
        ZooTwinDataset(zoo, method="mp", split=None, models=[999])
    with pytest.raises(ZooTypeError, match="models must hold int model ids"):
        ZooTwinDataset(zoo, method="mp", split=None, models=["0"])


def test_non_finite_states_are_dropped_and_counted(zoo, monkeypatch):
    """A reader that serves a NaN log-alpha at one twin's epoch 1 and a NaN train loss at another
    model's final original state (as a diverged run records them)."""
    store = ZooStore(zoo)
    victim, broken_original = (int(m) for m in sorted(store.models().model_id)[:2])
    read, states = ZooStore.read, ZooStore.states

    def nan_weights(self, population, name, model_id, level_index, epoch):
        values = read(self, population, name, model_id, level_index, epoch)
        if population == "vd" and name == "log_alpha" and model_id == victim:
            values = values.copy()
            if isinstance(epoch, slice):
                rows = list(range(values.shape[0] if epoch == slice(None) else 2)[epoch])
                values[rows.index(1), :3] = np.nan
            elif epoch % 2 == 1:
                values[:3] = np.nan
        return values

    def nan_loss(self, population=None):
        table = states(self, population).copy()
        if population == "original":
            last = (table.model_id == broken_original) & (table.epoch == table.epoch.max())
            table.loc[last, "train_loss"] = np.nan
        return table

    monkeypatch.setattr(ZooStore, "read", nan_weights)
    monkeypatch.setattr(ZooStore, "states", nan_loss)
    plain = ZooTwinDataset(zoo, method="vd", split=None, epoch=None)
    assert len(plain) == 3 * 2 and plain.dropped == {"states": 0, "items": 0}
    assert any(torch.isnan(item["log_alpha"]).any() for item in plain)  # served as stored unless asked
    kept = ZooTwinDataset(zoo, method="vd", split=None, epoch=None, drop_nonfinite=True)
    assert [(int(i["model_id"]), int(i["epoch"])) for i in kept] == [
        (m, e) for m in sorted(store.models().model_id.astype(int)) for e in (0, 1)
        if m != broken_original and (m, e) != (victim, 1)
    ]
    assert kept.dropped == {"states": 3, "items": 3}  # the victim's epoch 1, both states of the other pair
    assert "Dropped: 3 non-finite states (3 items)" in repr(kept)
    for item in kept:
        assert torch.isfinite(item["log_alpha"]).all()
        assert all(torch.isfinite(v).all() for v in item["original_properties"].values())
    trajectories = ZooTrajectoryDataset(zoo, method="vd", split=None, drop_nonfinite=True)
    assert trajectories.model_ids == sorted(set(plain.model_ids) - {victim, broken_original})
    originals = ZooOriginalDataset(zoo, split=None, epoch=None, drop_nonfinite=True)
    assert originals.dropped == {"states": 1, "items": 1}
    assert (broken_original, 1) not in [(int(i["model_id"]), int(i["epoch"])) for i in originals]


def test_k_folds_never_put_a_model_on_both_sides(zoo):
    ids = select_models(zoo)
    folds = model_folds(ids, k=3, seed=0)
    assert sorted(m for _, test in folds for m in test) == ids  # each model held out exactly once
    for train, test in folds:
        assert not set(train) & set(test) and sorted(train + test) == ids
        train_items = ZooTrajectoryDataset(zoo, method="mp", split=None, models=train)
        test_items = ZooTwinDataset(zoo, method="mp", split=None, epoch=None, models=test)
        assert not set(train_items.item_model_ids) & set(test_items.item_model_ids)
    assert model_folds(ids, k=3, seed=0) == folds  # deterministic for a seed

    every = ZooTwinDataset(zoo, method="mp", split=None, epoch=None)  # 2 levels x 2 epochs per model
    models = every.item_model_ids
    held_out = []
    for train, test in item_folds(every, k=3):
        assert not {models[i] for i in train} & {models[i] for i in test}
        assert sorted(train + test) == list(range(len(every)))
        held_out += test
    assert sorted(held_out) == list(range(len(every)))
    with pytest.raises(ZooSpecError, match="k = 4 folds need"):
        model_folds(ids, k=4)


def test_models_outside_the_split_are_an_error_naming_both(zoo):
    store = ZooStore(zoo)
    split_of = dict(zip(store.models().model_id.astype(int), store.models().split, strict=True))
    inside = next(m for m, s in split_of.items() if s == "train")
    outside = next(m for m, s in split_of.items() if s != "train")
    for make in (ZooTwinDataset, ZooTrajectoryDataset, ZooOriginalDataset):
        kwargs = {"method": "mp"} if make is not ZooOriginalDataset else {}
        with pytest.raises(StoreError, match=rf"models \[{outside}\] are not in the 'train' split .*split=None"):
            make(zoo, models=[inside, outside], **kwargs)  # split defaults to "train"
        assert make(zoo, split=None, models=[inside, outside], **kwargs).model_ids == sorted([inside, outside])
    with pytest.raises(StoreError, match=rf"models \[{outside}\] are not in the 'train' split"):
        LayerStandardization.fit(zoo, models=[outside])
    assert LayerStandardization.fit(zoo, split=None, models=[inside]).stats == LayerStandardization.fit(zoo).stats


def test_a_list_of_levels_serves_those_levels_in_that_order(zoo):
    ds = ZooTwinDataset(zoo, method="mp", level=[0.9, 50], split=None)
    assert ds.index.levels == pytest.approx([0.9, 0.5])
    assert [float(item["level"]) for item in ds] == pytest.approx([0.9, 0.5] * len(ds.model_ids))
    assert _repr_line(ds, "Level") == "Level: 0.9, 0.5"
    assert len(ZooTrajectoryDataset(zoo, method="mp", level=(0.5,), split=None)) == len(ds.model_ids)
    with pytest.raises(ZooSpecError, match="level 0.5 is asked for twice"):
        ZooTwinDataset(zoo, method="mp", level=[0.5, 50], split=None)
    with pytest.raises(ZooSpecError, match="level is an empty list"):
        ZooTwinDataset(zoo, method="mp", level=[], split=None)
    with pytest.raises(ZooTypeError, match="level must be a number .*not type str"):
        ZooTwinDataset(zoo, method="mp", level=[0.5, "0.9"], split=None)


def _repr_line(dataset, field: str) -> str:
    return next(line.strip() for line in repr(dataset).splitlines() if line.strip().startswith(f"{field}:"))


def test_vd_datasets_say_they_have_no_level_and_negative_epochs_count_from_the_end(zoo):
    assert _repr_line(ZooTwinDataset(zoo, method="vd", split=None), "Level") == "Level: none (vd has no levels)"
    n_states = ZooStore(zoo).population("vd").epochs + 1
    assert ZooTwinDataset(zoo, method="vd", split=None, epoch=-n_states).epoch == 0
    assert ZooTrajectoryDataset(zoo, method="vd", split=None, epoch=[-1, -n_states]).epochs == [n_states - 1, 0]
    with pytest.raises(StoreError, match=rf"epoch {-n_states - 1} out of range: .*negative counts from the end"):
        ZooTwinDataset(zoo, method="vd", split=None, epoch=-n_states - 1)


def test_item_folds_group_a_concatenation_of_datasets_by_model(zoo):
    mp = ZooTwinDataset(zoo, method="mp", split=None)
    vd = ZooTwinDataset(zoo, method="vd", split=None)
    both = ConcatDataset([mp, vd])
    models = mp.item_model_ids + vd.item_model_ids
    folds = item_folds(both, k=3, seed=0)
    for (train, test), (train_models, test_models) in zip(folds, model_folds(mp.model_ids, k=3), strict=True):
        assert {models[i] for i in test} == set(test_models) and {models[i] for i in train} == set(train_models)
        assert sorted(train + test) == list(range(len(both)))
        assert {int(both[i]["model_id"]) for i in test} == set(test_models)  # the indices are the items'
    part = Subset(both, list(range(len(mp), len(both))))  # the VD items alone
    assert [sorted(test) for _, test in item_folds(part, k=3)] == [sorted(test) for _, test in item_folds(vd, k=3)]
    with pytest.raises(ZooTypeError, match="cannot group the items of a list by model"):
        item_folds([mp[0], vd[0]], k=2)


def test_where_filters_on_the_twins_properties_too(zoo):
    store = ZooStore(zoo)
    vd_final = store.states("vd").query("epoch == epoch.max()").set_index("model_id").sparsity
    cut = float(vd_final.median())
    sparse = select_models(zoo, where={"vd": lambda p: p["sparsity"] >= cut})
    assert sparse == sorted(int(m) for m, s in vd_final.items() if s >= cut) and 0 < len(sparse) < len(vd_final)
    mp = store.states("mp")
    at_90 = mp[np.isclose(mp.level, 0.9) & (mp.epoch == 0)].set_index("model_id").test_acc
    acc_cut = float(at_90.median())
    chosen = select_models(zoo, epoch=0, where={("mp", 0.9): lambda p: p["test_acc"] >= acc_cut})
    assert chosen == sorted(int(m) for m, acc in at_90.items() if acc >= acc_cut)
    both = select_models(zoo, where={"original": lambda p: True, "vd": lambda p: p["sparsity"] >= cut})
    assert both == sparse
    with pytest.raises(ZooSpecError, match=r"mp twins have levels .*key where with one, e.g. \('mp', 0.9\)"):
        select_models(zoo, where={"mp": lambda p: True})
    with pytest.raises(StoreError, match="where names 'mp_local', which .* does not hold"):
        select_models(zoo, where={"mp_local": lambda p: True})
    with pytest.raises(StoreError, match="level 0.7 not recorded for mp"):
        select_models(zoo, where={("mp", 0.7): lambda p: True})
