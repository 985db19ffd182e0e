"""The method registry and its plug-in proof, layer-wise magnitude pruning (``mp_local``)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
from _digits import small_digits
from torch.nn.utils import prune

import builders.context
from analysis.report import build_report
from builders.build import build_zoo
from builders.stages import DEFAULT_STAGES, STAGES
from loaders import ZooTwinDataset
from zoo_dataset.architectures import parametrised_layers, seeded_model
from zoo_dataset.errors import ZooSpecError
from zoo_dataset.layout import ParameterLayout
from zoo_dataset.methods import get_method, methods, twin_methods
from zoo_dataset.specs import get_spec

LEVELS = (0.5, 0.9)


def test_registry_holds_each_method_once_in_pipeline_order():
    names = list(methods())
    assert names[0] == "original" and {"mp", "vd", "mp_local"} <= set(names)
    for method in twin_methods():  # a twin comes after the population it starts from
        assert names.index(method.requires) < names.index(method.name)
    assert list(STAGES) == [*names, "card"]
    assert "mp_local" not in DEFAULT_STAGES and {"original", "mp", "vd"} <= set(DEFAULT_STAGES)
    with pytest.raises(ZooSpecError, match="unknown method 'mp_locl'.*did you mean mp_local"):
        get_method("mp_locl")


@pytest.mark.parametrize("level", [0.1, 0.35, 0.5, 0.9])
def test_local_masks_are_torch_l1_unstructured_per_layer(level):
    model = seeded_model("cnn_s", 1, "tanh", 0.0, "kaiming_uniform", 7)
    layout = ParameterLayout.from_module(model)
    flat = layout.flatten_module(model).numpy()
    keep = get_method("mp_local").mask(flat, layout, level)
    for name, layer in parametrised_layers(model):
        prune.l1_unstructured(layer, "weight", amount=level)
        expected = layer.weight_mask.reshape(-1).bool().numpy()
        np.testing.assert_array_equal(keep[layout.by_name[f"{name}.weight"].slice], expected, err_msg=name)
        assert keep[layout.by_name[f"{name}.bias"].slice].all()
    # not the global mask: layers of different magnitude scales are pruned alike
    assert not np.array_equal(keep, get_method("mp").mask(flat, layout, level))


def test_importing_the_loaders_imports_no_training_code_or_dataset_reader():
    code = ("import sys, loaders, zoo_dataset.store; "
            "print(sorted(m for m in sys.modules if m.startswith(('zoo_dataset.training', 'zoo_dataset.data', "
            "'scipy.io', 'builders'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def local_store(tmp_path_factory):
    """Originals, MP and layer-wise MP twins of two models at two levels, on 100 digits."""
    spec = get_spec("digits_seed").with_overrides(model_subset=range(2), epochs=1, mp_epochs=1, mp_levels=LEVELS)
    root = tmp_path_factory.mktemp("mp_local")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(builders.context, "load_dataset", small_digits)
        store, _ = build_zoo(spec, root, stages=["original", "mp", "mp_local"], progress=False)
    return store


def test_local_twins_are_stored_pruned_per_layer(local_store):
    states = local_store.states("mp_local")
    layers = [e for e in local_store.layout.weight_entries()]
    for level in LEVELS:
        start = states[(states.epoch == 0) & np.isclose(states.level, level)]
        for entry in layers:  # every layer at the level, not just the whole network
            expected = round(level * entry.size) / entry.size
            np.testing.assert_allclose(start[f"sparsity_{entry.layer}"], expected)
    for model_id in local_store.manifest.model_ids:
        weights = local_store.weights("mp_local", model_id, epoch=-1, level=0.5)
        masks = local_store.array("masks", "mp_local", model_id, epoch=-1, level=0.5)
        assert (weights[~masks] == 0).all()


def test_local_twins_load_by_percent_level(local_store, tmp_path):
    root = tmp_path / "stores"
    shutil.copytree(local_store.zoo_dir, root / local_store.manifest.zoo)
    dataset = ZooTwinDataset(local_store.manifest.zoo, method="mp_local", level=50, split=None, root=root)
    assert len(dataset) == 2
    item = dataset[0]
    model_id = int(item["model_id"])
    stored = local_store.weights("mp_local", model_id, epoch=-1, level=0.5)
    np.testing.assert_array_equal(item["twin"].numpy(), stored)
    assert float(item["level"]) == pytest.approx(0.5)


def test_report_draws_every_twin_method_on_accuracy_vs_sparsity(local_store):
    report = build_report(local_store)
    _, figure = report.figures["figure5_acc_vs_sparsity"]
    labels = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert any(get_method("mp").label in t for t in labels)
    assert any(get_method("mp_local").label in t for t in labels)
    lines = {line.get_label(): line for line in figure.axes[0].get_lines()}
    curve = next(v for k, v in lines.items() if get_method("mp_local").label in k)
    final = local_store.states("mp_local")
    final = final[final.epoch == final.epoch.max()].groupby("level").test_acc.mean()
    np.testing.assert_allclose(curve.get_ydata(), 100 * final.to_numpy())


def test_local_engine_matches_reference():
    """Layer-wise MP runs batched through MP's hooks alone and agrees with the per-model recipe."""
    from zoo_dataset.jobs import UnitKey
    from zoo_dataset.training import ReferenceTrainer
    from zoo_dataset.training.engine import PopulationEngine

    data = small_digits()
    spec = get_spec("digits_seed").with_overrides(mp_epochs=1)
    configs = {c.model_id: c for c in spec.models()[:2]}
    originals = list(ReferenceTrainer().run(
        get_method("original").jobs(spec, [UnitKey(i) for i in configs], configs, {}, None), data))
    starts = {r.key.model_id: (r.weights[-1], r.test_predictions) for r in originals}
    layout = ParameterLayout.from_module(seeded_model("cnn_s", 1, "tanh", 0.0, "uniform", 1))
    jobs = get_method("mp_local").jobs(spec, [UnitKey(i, 0.7) for i in configs], configs, starts, layout)
    reference = {r.key: r for r in ReferenceTrainer().run(jobs, data)}
    engine = {r.key: r for r in PopulationEngine().run(jobs, data)}
    for job in jobs:
        ref, eng = reference[job.key], engine[job.key]
        np.testing.assert_array_equal(eng.masks, ref.masks)
        np.testing.assert_allclose(eng.weights, ref.weights, atol=1e-4)
        assert np.all(eng.weights[:, ~job.mask] == 0)
        assert not np.allclose(eng.weights[-1], eng.weights[0])  # it did train
