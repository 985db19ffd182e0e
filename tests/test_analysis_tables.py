"""Report tables checked against direct computations on the store's arrays and states."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from _analysis_store import synthetic_store

from analysis import tables
from analysis.frequency import pruned_frequency


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return synthetic_store(tmp_path_factory.mktemp("an"), n_models=5)


@pytest.fixture(scope="module")
def pops(store):
    return {name: store.states(name) for name in store.populations}


def _layer_pruned(store, population, model_id, epoch, level, layer):
    masks = store.array("masks", population, model_id, epoch, level)
    return float((~masks[store.layout.by_name[f"{layer}.weight"].slice]).mean())


def test_mp_layer_sparsity_matches_masks(store, pops):
    table = tables.mp_layer_sparsity(pops["mp"]).set_index("level")
    assert sorted(table.index) == [0.5, 0.7, 0.9]
    for level, layer in itertools.product((0.5, 0.9), store.layout.layers):
        direct = [_layer_pruned(store, "mp", m, -1, level, layer) for m in store.manifest.model_ids]
        assert table.loc[level, f"sparsity_{layer}_mean"] == pytest.approx(np.mean(direct))
        assert table.loc[level, f"sparsity_{layer}_std"] == pytest.approx(np.std(direct))


def test_mp_performance_before_and_after(store, pops):
    table = tables.mp_performance(pops["mp"])
    assert list(table.stage[:2]) == ["before", "after"] and table.epoch.max() == store.population("mp").epochs
    mp = pops["mp"]
    for row in table.itertuples():
        at = mp[np.isclose(mp.level, row.level) & (mp.epoch == row.epoch)]
        assert row.test_acc_mean == pytest.approx(at.test_acc.to_numpy().mean())
        assert row.ggap_std == pytest.approx((at.train_acc - at.test_acc).to_numpy().std())


def test_vd_tables_match_masks(store, pops):
    per_epoch = tables.vd_performance(pops["vd"])
    assert list(per_epoch.epoch) == list(range(store.population("vd").epochs + 1))
    weights = store.layout.weight_mask()
    for epoch in (0, 3, 6):
        direct = [(~store.array("masks", "vd", m, epoch)[weights]).mean() for m in store.manifest.model_ids]
        assert per_epoch.set_index("epoch").loc[epoch, "sparsity_mean"] == pytest.approx(np.mean(direct))
    layered = tables.vd_layer_sparsity(pops["vd"]).set_index("epoch")
    assert list(layered.index) == [0, 5]  # the paper's epochs recorded by a 6-epoch run
    direct = [_layer_pruned(store, "vd", m, 5, None, "fc1") for m in store.manifest.model_ids]
    assert layered.loc[5, "sparsity_fc1_mean"] == pytest.approx(np.mean(direct))


def test_agreement_picks_closest_states(pops):
    table = tables.agreement(pops, sparsity=0.7).set_index("method")
    assert table.loc["mp", "level"] == pytest.approx(0.7)
    vd_means = pops["vd"].groupby("epoch").sparsity.mean()
    epoch = int(table.loc["vd", "epoch"])
    assert abs(vd_means[epoch] - 0.7) == pytest.approx((vd_means - 0.7).abs().min())
    at = pops["vd"][pops["vd"].epoch == epoch]
    assert table.loc["vd", "agreement_mean"] == pytest.approx(at.agreement.to_numpy().mean())


def _kendall(a, b):
    pairs = list(itertools.combinations(range(len(a)), 2))
    return sum(np.sign(a[i] - a[j]) * np.sign(b[i] - b[j]) for i, j in pairs) / len(pairs)


def test_correlation_against_direct_formulas(pops):
    table = tables.correlation(pops, sparsity=0.5).set_index("method")
    original = pops["original"]
    final = original[original.epoch == original.epoch.max()].set_index("model_id").test_acc
    mp = pops["mp"]
    twin = mp[np.isclose(mp.level, 0.5) & (mp.epoch == mp.epoch.max())].set_index("model_id").test_acc
    a, b = final.loc[twin.index].to_numpy(), twin.to_numpy()
    assert table.loc["mp", "pearson_r"] == pytest.approx(np.corrcoef(a, b)[0, 1])
    assert table.loc["mp", "kendall_tau"] == pytest.approx(_kendall(a, b))


def test_pruned_frequency_counts_models(store):
    frequency = pruned_frequency(store, "vd", [2, 6])
    entry = store.layout.by_name["conv2.weight"]
    assert frequency[6]["conv2"].shape == (entry.shape[0], entry.size // entry.shape[0])
    stacked = np.stack([store.array("masks", "vd", m, 6)[entry.slice] for m in store.manifest.model_ids])
    np.testing.assert_allclose(frequency[6]["conv2"].ravel(), (~stacked).mean(axis=0))
