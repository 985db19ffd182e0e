"""The masks task: every mask predictor prunes exactly the weights its sparsity asks for and no
bias, each follows its own rule (global or per-layer magnitude, a seeded draw, the VD twins'
per-layer allocation, the predicted log-alphas), and the scores are the accuracy of the masked
original on the test images and the IoU with the VD twin's pruned set."""

from __future__ import annotations

import numpy as np
import pytest
from _analysis_store import synthetic_store

from analysis.bench.mask_baselines import (
    SPARSITY_GRID,
    GlobalMagnitude,
    LayerwiseMagnitude,
    RandomMask,
    StatisticsThresholds,
    ZeroShotMasks,
    allocate,
    layer_sizes,
)
from analysis.bench.mask_scores import DENSE, mask_table, score_dense, score_masks
from analysis.bench.samples import Samples
from analysis.hyperrep.zeroshot import ZeroShotConfig
from analysis.hyperrep.zeroshot_eval import test_data as zoo_test_data
from zoo_dataset.architectures import build_model
from zoo_dataset.errors import StoreError, ZooSpecError
from zoo_dataset.metrics import evaluate
from zoo_dataset.model_layout import layout_for
from zoo_dataset.sparsify.magnitude import global_magnitude_mask, prune_count
from zoo_dataset.specs import get_spec

SPARSITIES = (0.5, 0.8, 0.9, 0.95)
BOOSTED = "fc1"  # the layer the synthetic VD twins prune more


def store_mask_samples(store, model_ids) -> Samples:
    """Originals at their last epoch with their VD twins' last log-alphas and masks, read directly."""
    weights = np.stack([store.weights("original", m, -1) for m in model_ids])
    extra = {"vd_log_alpha": np.stack([store.array("log_alpha", "vd", m, -1) for m in model_ids]),
             "vd_keep": np.stack([store.array("masks", "vd", m, -1) for m in model_ids])}
    n = len(model_ids)
    return Samples(weights, {}, np.asarray(model_ids), np.full(n, -1), store.layout, store.spec.architecture, extra)


def boosted(samples: Samples, shift: float) -> Samples:
    """The samples with the VD log-alphas of :data:`BOOSTED` raised by ``shift`` (and masks to match)."""
    log_alpha = samples.extra["vd_log_alpha"].copy()
    log_alpha[:, samples.layout.by_name[f"{BOOSTED}.weight"].slice] += shift
    keep = (log_alpha < 3.0) | ~samples.layout.weight_mask()
    return Samples(samples.weights, {}, samples.model_ids, samples.epochs, samples.layout, samples.architecture,
                   {"vd_log_alpha": log_alpha, "vd_keep": keep})


def random_samples(architecture: str, n: int = 6, seed: int = 0) -> Samples:
    layout = layout_for(get_spec("digits_seed").with_overrides(architecture=architecture))
    rng = np.random.default_rng(seed)
    weights = rng.normal(size=(n, layout.num_params)).astype(np.float32)
    log_alpha = rng.normal(size=weights.shape).astype(np.float32)
    plain = Samples(weights, {}, np.arange(n), np.full(n, -1), layout, architecture,
                    {"vd_log_alpha": log_alpha, "vd_keep": log_alpha < 3.0})
    return boosted(plain, 4.0)


def pruned_per_layer(keep: np.ndarray, layout) -> dict[str, np.ndarray]:
    return {e.layer: (~keep[:, e.slice]).sum(axis=1) for e in layout.weight_entries()}


@pytest.fixture(scope="module", params=["cnn_s", "cnn_l"])
def fitted(request):
    """Every predictor fitted on random cnn_s or cnn_l samples; the held-out originals beside them."""
    train = random_samples(request.param)
    held_out = random_samples(request.param, n=3, seed=1)
    predictors = [GlobalMagnitude(), LayerwiseMagnitude(), RandomMask(seed=3), StatisticsThresholds(),
                  ZeroShotMasks(quick=True)]
    return [p.fit(train) for p in predictors], held_out


@pytest.mark.parametrize("sparsity", SPARSITIES)
def test_every_predictor_prunes_the_exact_count_of_weights_and_no_bias(fitted, sparsity):
    predictors, held_out = fitted
    layout, is_weight = held_out.layout, held_out.layout.weight_mask()
    for predictor in predictors:
        keep = predictor.keep(held_out.weights, layout, sparsity)
        assert keep.shape == held_out.weights.shape and keep.dtype == bool, predictor.name
        assert keep[:, ~is_weight].all(), predictor.name
        assert ((~keep[:, is_weight]).sum(axis=1) == prune_count(sparsity, layout.num_weights)).all(), predictor.name


def test_global_magnitude_is_the_mp_twins_first_step(fitted):
    predictors, held_out = fitted
    keep = predictors[0].keep(held_out.weights, held_out.layout, 0.8)
    for row, mask in zip(held_out.weights, keep, strict=True):
        np.testing.assert_array_equal(mask, global_magnitude_mask(row, held_out.layout, 0.8))


def test_layerwise_magnitude_prunes_each_layer_to_the_same_fraction_by_magnitude(fitted):
    predictors, held_out = fitted
    layout = held_out.layout
    for sparsity in SPARSITIES:
        keep = predictors[1].keep(held_out.weights, layout, sparsity)
        k = prune_count(sparsity, layout.num_weights)
        for entry, count in zip(layout.weight_entries(), pruned_per_layer(keep, layout).values(), strict=True):
            assert (np.abs(count - k * entry.size / layout.num_weights) < 1).all(), entry.layer
            magnitude = np.abs(held_out.weights[:, entry.slice])
            pruned = ~keep[:, entry.slice]
            for m in range(len(keep)):  # the layer's smallest weights go
                assert magnitude[m][pruned[m]].max() <= magnitude[m][~pruned[m]].min()


def test_allocation_is_exact_proportional_and_capped():
    counts = allocate(10, np.array([1.0, 1.0, 1.0]), np.array([10, 10, 10]))
    assert counts.tolist() == [4, 3, 3]  # the leftover unit goes to the earlier layer on ties
    capped = allocate(12, np.array([9.0, 1.0]), np.array([5, 20]))
    assert capped.tolist() == [5, 7]  # the first layer is full, the rest goes to the second
    assert allocate(7, np.zeros(3), np.array([2, 4, 8])).sum() == 7  # no share: by size
    with pytest.raises(ZooSpecError, match="cannot prune 15 of 14"):
        allocate(15, np.ones(3), np.array([2, 4, 8]))


def test_random_masks_are_seeded_and_nested(fitted):
    _, held_out = fitted
    layout = held_out.layout
    first, again = RandomMask(seed=5), RandomMask(seed=5)
    np.testing.assert_array_equal(first.keep(held_out.weights, layout, 0.8), again.keep(held_out.weights, layout, 0.8))
    other = RandomMask(seed=6).keep(held_out.weights, layout, 0.8)
    assert (other != first.keep(held_out.weights, layout, 0.8)).any()
    at_90 = first.keep(held_out.weights, layout, 0.9)
    assert not (at_90 & ~first.keep(held_out.weights, layout, 0.8)).any()  # the 90 % set holds the 80 % set


def test_statistics_thresholds_learn_the_vd_twins_per_layer_allocation(tmp_path):
    """The VD twins of a synthetic store prune fc1 more; the learnt budgets are their mean
    per-layer counts at each sparsity (to one weight), and each layer drops its smallest weights."""
    store = synthetic_store(tmp_path, n_models=6, mp_levels=(0.5,), vd_epochs=2)
    train = boosted(store_mask_samples(store, [0, 1, 2, 3]), 3.0)
    held_out = store_mask_samples(store, [4, 5])
    predictor = StatisticsThresholds().fit(train)
    layout, sizes = store.layout, layer_sizes(store.layout)
    is_weight = layout.weight_mask()
    layer_of = np.repeat(np.arange(len(sizes)), sizes)
    for sparsity in (0.5, 0.8):
        k = prune_count(sparsity, layout.num_weights)
        top = np.argsort(-train.extra["vd_log_alpha"][:, is_weight], axis=1)[:, :k]
        direct = np.mean([np.bincount(layer_of[row], minlength=len(sizes)) for row in top], axis=0)
        counts = predictor.layer_counts(sparsity)
        assert counts.sum() == k and (np.abs(counts - direct) < 1).all()
        fractions = dict(zip(layout.layers, counts / sizes, strict=True))
        assert fractions[BOOSTED] > max(v for layer, v in fractions.items() if layer != BOOSTED)
        keep = predictor.keep(held_out.weights, layout, sparsity)
        assert all((c == counts[i]).all() for i, c in enumerate(pruned_per_layer(keep, layout).values()))
        for entry in layout.weight_entries():  # within a layer, the smallest weights go
            magnitude, pruned = np.abs(held_out.weights[0, entry.slice]), ~keep[0, entry.slice]
            if 0 < pruned.sum() < entry.size:
                assert magnitude[pruned].max() <= magnitude[~pruned].min()
    assert predictor.fractions.shape == (len(SPARSITY_GRID), len(sizes))


def test_zero_shot_masks_prune_the_highest_predicted_log_alphas_and_learn_the_vd_layer():
    train, held_out = random_samples("cnn_s"), random_samples("cnn_s", n=3, seed=1)
    layout = train.layout
    predictor = ZeroShotMasks(config=ZeroShotConfig(epochs=3, batch_size=1024), seed=0).fit(train)
    keep = predictor.keep(held_out.weights, layout, 0.2)
    predicted, pruned = predictor.predict(held_out.weights, layout), ~keep[:, layout.weight_mask()]
    for m in range(len(keep)):
        assert predicted[m][pruned[m]].min() >= predicted[m][~pruned[m]].max()
    # the VD twins drop fc1 first; so does the predictor (fc1 holds more than 20 % of the weights)
    entry = layout.by_name[f"{BOOSTED}.weight"]
    assert (~keep[:, entry.slice]).mean() > 0.9 * prune_count(0.2, layout.num_weights) / entry.size
    again = ZeroShotMasks(config=ZeroShotConfig(epochs=3, batch_size=1024), seed=0).fit(train)
    np.testing.assert_array_equal(again.keep(held_out.weights, layout, 0.2), keep)


def test_learned_predictors_refuse_to_mask_before_fit_or_on_another_layout(fitted):
    _, held_out = fitted
    for predictor in (StatisticsThresholds(), ZeroShotMasks(quick=True)):
        with pytest.raises(StoreError, match="not fitted"):
            predictor.keep(held_out.weights, held_out.layout, 0.5)
    other = random_samples("cnn_l" if held_out.architecture == "cnn_s" else "cnn_s", n=2)
    predictor = StatisticsThresholds().fit(held_out)
    with pytest.raises(ZooSpecError, match="was fitted on"):
        predictor.keep(other.weights, other.layout, 0.5)
    with pytest.raises(StoreError, match="vd_log_alpha"):
        StatisticsThresholds().fit(Samples(held_out.weights, {}, held_out.model_ids, held_out.epochs,
                                           held_out.layout, held_out.architecture))


@pytest.fixture(scope="module")
def real_held_out(original_store):
    """The tiny real build's originals, with VD masks and log-alphas drawn at random (the build has
    no VD twins; the scores only read them)."""
    store = original_store
    ids = sorted(int(m) for m in store.models().model_id)
    weights = np.stack([store.weights("original", m, -1) for m in ids])
    rng = np.random.default_rng(0)
    log_alpha = rng.normal(2.0, 2.0, size=weights.shape).astype(np.float32)
    keep = (log_alpha < 3.0) | ~store.layout.weight_mask()
    return Samples(weights, {}, np.asarray(ids), np.full(len(ids), -1), store.layout, store.spec.architecture,
                   {"vd_log_alpha": log_alpha, "vd_keep": keep})


def direct_accuracy(store, model_id: int, flat: np.ndarray, data) -> float:
    config = store.model_config(model_id)
    net = build_model(store.spec.architecture, data.channels, config.activation, config.dropout)
    return evaluate(store.layout.load_into(net, flat), data.test_x, data.test_y)[1]


def test_score_masks_is_the_accuracy_of_the_masked_original_and_the_iou_with_vd(original_store, real_held_out):
    store, held_out = original_store, real_held_out
    data = zoo_test_data(store)
    predictor = GlobalMagnitude()
    rows = score_masks(store, predictor, held_out, (0.5, 0.9), data)
    assert [(r["sparsity"], r["metric"]) for r in rows] == [(0.5, "accuracy"), (0.5, "iou"), (0.9, "accuracy"),
                                                             (0.9, "iou")]
    is_weight = store.layout.weight_mask()
    for sparsity in (0.5, 0.9):
        accuracies, ious = [], []
        for m, flat, vd_keep in zip(held_out.model_ids, held_out.weights, held_out.extra["vd_keep"], strict=True):
            keep = global_magnitude_mask(flat, store.layout, sparsity)
            accuracies.append(direct_accuracy(store, int(m), np.where(keep, flat, 0.0), data))
            ours, theirs = set(np.flatnonzero(~keep[is_weight])), set(np.flatnonzero(~vd_keep[is_weight]))
            ious.append(len(ours & theirs) / len(ours | theirs))
        accuracy, iou = (r for r in rows if r["sparsity"] == sparsity)
        assert accuracy["value"] == pytest.approx(np.mean(accuracies), abs=1e-12)
        assert accuracy["std"] == pytest.approx(np.std(accuracies), abs=1e-12)
        assert iou["value"] == pytest.approx(np.mean(ious), abs=1e-12)
        for row in (accuracy, iou):
            assert row["task"] == "masks" and row["predictor"] == predictor.name and row["over"] == "models"
            assert row["n_models"] == len(held_out) and row["target"] == row["metric"]
    table = mask_table(store, predictor, held_out, (0.5,), data)
    assert list(table.model_id) == list(held_out.model_ids)


def test_the_dense_reference_is_the_unpruned_originals_accuracy(original_store, real_held_out):
    store, held_out = original_store, real_held_out
    data = zoo_test_data(store)
    (row,) = score_dense(store, held_out, data)
    direct = [direct_accuracy(store, int(m), flat, data) for m, flat in zip(held_out.model_ids, held_out.weights,
                                                                           strict=True)]
    assert row["predictor"] == DENSE and row["metric"] == "accuracy" and row["sparsity"] == 0.0
    assert row["value"] == pytest.approx(np.mean(direct), abs=1e-12)
    states = store.states("original")
    recorded = states[states.epoch == states.epoch.max()].set_index("model_id").test_acc
    assert row["value"] == pytest.approx(recorded[held_out.model_ids].mean(), abs=1e-9)  # what the build measured


class _PrunesABias:
    name = "bias pruner"

    def fit(self, train):
        return self

    def keep(self, originals, layout, sparsity):
        keep = GlobalMagnitude().keep(originals, layout, sparsity)
        keep[:, np.flatnonzero(~layout.weight_mask())[0]] = False
        return keep


class _OneShort(_PrunesABias):
    name = "one short"

    def keep(self, originals, layout, sparsity):
        keep = GlobalMagnitude().keep(originals, layout, sparsity)
        keep[0, np.flatnonzero(~keep[0])[0]] = True
        return keep


def test_a_predictor_that_breaks_the_mask_rules_is_refused(original_store, real_held_out):
    data = zoo_test_data(original_store)
    with pytest.raises(ZooSpecError, match="pruned biases"):
        score_masks(original_store, _PrunesABias(), real_held_out, (0.5,), data)
    with pytest.raises(ZooSpecError, match="must prune exactly"):
        score_masks(original_store, _OneShort(), real_held_out, (0.5,), data)


def test_zero_shot_masks_aim_at_the_vd_epoch_nearest_the_target():
    """With the VD trajectory, each target sparsity gets the predictor of the epoch whose mean
    training sparsity is nearest it: its masks follow that epoch's log-alphas, not the last's."""
    train = random_samples("cnn_s")
    layout, n = train.layout, len(train)
    early = train.extra["vd_log_alpha"].copy()
    early[:, layout.by_name[f"{BOOSTED}.weight"].slice] -= 8.0  # early in VD, fc1 is pruned last
    trajectory = dict(train.extra, vd_log_alpha_epochs=np.stack([early, train.extra["vd_log_alpha"]], axis=1),
                      vd_sparsity_epochs=np.tile([0.2, 0.9], (n, 1)), vd_epochs=np.tile([3, 10], (n, 1)))
    train = Samples(train.weights, {}, train.model_ids, train.epochs, layout, train.architecture, trajectory)
    predictor = ZeroShotMasks(config=ZeroShotConfig(epochs=3, batch_size=1024), seed=0).fit(train)
    assert [predictor.target_epoch(s) for s in (0.1, 0.5, 0.6, 0.95)] == [3, 3, 10, 10]
    entry = layout.by_name[f"{BOOSTED}.weight"]
    k = prune_count(0.2, layout.num_weights)
    fc1_early = (~predictor.keep(train.weights, layout, 0.2)[:, entry.slice]).sum(axis=1)
    fc1_late = (~predictor.keep(train.weights, layout, 0.8)[:, entry.slice]).sum(axis=1)
    assert fc1_early.max() < 0.1 * k  # the epoch-3 predictor spares fc1
    assert fc1_late.min() > 0.9 * min(entry.size, prune_count(0.8, layout.num_weights))
    assert sorted(predictor.models) == [3, 10]
