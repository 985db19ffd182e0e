"""zoo-hyperrep zero-shot and the weight-statistics baseline on a tiny synthetic store: the
command runs end to end, its masks follow its predicted log-alphas, its predictor loads with
``weights_only=True``, and the baseline's features are the statistics they claim to be."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from _analysis_store import synthetic_store
from click.testing import CliRunner

from analysis.hyperrep.baseline import QUANTILES, statistics_r2, weight_statistics
from analysis.hyperrep.cli import main
from analysis.hyperrep.data import HELD_OUT, load_samples
from analysis.hyperrep.zeroshot import ZeroShotModel, entry_features
from analysis.hyperrep.zeroshot_eval import mask_agreement, model_ids, pairs, summary
from zoo_dataset.sparsify.magnitude import global_magnitude_mask


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return synthetic_store(tmp_path_factory.mktemp("zs"), n_models=8, vd_epochs=2, mp_levels=(0.3, 0.6, 0.9))


@pytest.fixture(scope="module")
def zero_shot_run(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("zs-out") / "report"
    result = CliRunner().invoke(main, ["zero-shot", "--zoo", str(store.zoo_dir), "--out", str(out), "--epochs", "1"])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_zero_shot_writes_its_table_figure_and_a_safe_checkpoint(zero_shot_run, store):
    out, output = zero_shot_run
    for name in ("zero_shot.md", "zero_shot.csv", "zero_shot_sweep.csv", "zero_shot.png", "predictor.pt"):
        assert (out / name).is_file(), name
    assert "global MP, no fine-tuning" in output and "IoU" in output
    table = pd.read_csv(out / "zero_shot.csv")
    assert sorted(table.model_id) == model_ids(store, HELD_OUT)
    raw = torch.load(out / "predictor.pt", weights_only=True)  # plain tensors and values only
    assert ZeroShotModel.from_state(raw).vd_epoch == store.population("vd").epochs


def test_zero_shot_masks_follow_the_predicted_alphas(zero_shot_run, store):
    out, _ = zero_shot_run
    model = ZeroShotModel.from_state(torch.load(out / "predictor.pt", weights_only=True))
    table = pd.read_csv(out / "zero_shot.csv").set_index("model_id")
    ids = list(table.index)
    originals, _ = pairs(store, ids, model.vd_epoch)
    predicted = model.predict(originals, store.layout).numpy()
    threshold = store.spec.vd.threshold
    for i, m in enumerate(ids):
        np.testing.assert_allclose(table.loc[m, "sparsity"], np.mean(predicted[i] >= threshold), atol=1e-12)
        # global MP at the zero-shot sparsity prunes as many weights as the predicted mask
        keep = global_magnitude_mask(originals[i].numpy(), store.layout, table.loc[m, "sparsity"])
        assert (~keep).sum() == (predicted[i] >= threshold).sum()


def test_mask_agreement_is_iou_and_f1():
    predicted = np.array([1, 1, 0, 0, 1], dtype=bool)
    true = np.array([1, 0, 0, 1, 1], dtype=bool)
    iou, f1 = mask_agreement(predicted, true)
    assert iou == pytest.approx(2 / 4) and f1 == pytest.approx(2 * 2 / 6)
    assert mask_agreement(np.zeros(3, bool), np.zeros(3, bool)) == (1.0, 1.0)


def test_entry_features_are_permutation_equivariant(store):
    """Permuting conv1's channels (and conv2's matching inputs) permutes the features alike."""
    flat = torch.from_numpy(store.weights("original", 0, -1))[None]
    layout = store.layout
    features = entry_features(flat, layout)
    perm = torch.tensor([3, 1, 0, 2, 7, 6, 5, 4])
    named = layout.unflatten(flat[0])
    named["conv1.weight"], named["conv1.bias"] = named["conv1.weight"][perm], named["conv1.bias"][perm]
    named["conv2.weight"] = named["conv2.weight"][:, perm]
    permuted = entry_features(layout.flatten(named)[None], layout)
    c1 = layout.by_name["conv1.weight"]
    moved = features[0, : c1.size].view(8, -1, features.shape[-1])[perm].flatten(0, 1)
    torch.testing.assert_close(permuted[0, : c1.size], moved)


def test_weight_statistics_are_per_layer_weight_and_bias_statistics(store):
    samples = load_samples(store.zoo_dir, None, ("train",))
    features = weight_statistics(samples.weights, samples.layout)
    layers = store.layout.layers
    assert features.shape == (len(samples), len(layers) * 2 * (3 + len(QUANTILES)))
    model_id, epoch = int(samples.model_ids[1]), int(samples.properties["epoch"][1])
    flat = store.weights("vd", model_id, epoch).astype(np.float64)
    w, b = flat[store.layout.by_name["conv2.weight"].slice], flat[store.layout.by_name["conv2.bias"].slice]
    expected = [w.mean(), w.std(ddof=1), *np.quantile(w, QUANTILES), np.abs(w).mean(),
                b.mean(), b.std(ddof=1), *np.quantile(b, QUANTILES), np.abs(b).mean()]
    np.testing.assert_allclose(features[1, 16:32], expected, rtol=1e-6, atol=1e-9)


def test_statistics_baseline_learns_a_property_of_the_statistics(store):
    train = load_samples(store.zoo_dir, None, ("train",))
    held_out = load_samples(store.zoo_dir, None, HELD_OUT)
    for samples in (train, held_out):  # a property the statistics determine: conv1's mean weight
        samples.properties["epoch"] = weight_statistics(samples.weights, samples.layout)[:, 0]
    r2 = statistics_r2(train, held_out)
    assert r2["epoch"] > 0.5 and set(r2) == set(train.properties)


def _comparison(accuracies: list[float]) -> pd.DataFrame:
    """A comparison table as ``compare`` returns it: every column the summary reads, one row per model."""
    columns = ("original_acc", "sparsity", "zero_shot_acc", "mp_no_ft_acc", "mp_level", "mp_ft_acc", "vd_sparsity",
               "vd_acc", "iou", "f1")
    return pd.DataFrame({"model_id": range(len(accuracies)), **{c: accuracies for c in columns}})


def test_the_summary_of_one_held_out_model_gives_its_values_without_a_spread():
    one = summary(_comparison([0.95])).splitlines()
    assert one[0] == "1 held-out model; accuracy on the test images, in %"
    assert "| original (dense) | 0.0 | 95.0 |" in one
    assert one[-1] == "predicted vs true VD pruned weights: IoU 95.0, F1 95.0"
    two = summary(_comparison([0.85, 0.95])).splitlines()
    assert two[0] == "2 held-out models; accuracy on the test images, mean (std) over models, in %"
    assert "| original (dense) | 0.0 | 90.0 (5.0) |" in two
