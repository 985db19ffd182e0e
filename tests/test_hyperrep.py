"""Hyper-representation pieces: loss formulas against direct computation, augmentations that keep
the function, a short training run that lowers the loss, probes against a mean baseline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _analysis_store import synthetic_store
from _inputs import hang_guard
from click.testing import CliRunner

from analysis.hyperrep.cli import main
from analysis.hyperrep.data import load_samples
from analysis.hyperrep.losses import alpha_mse, ecd_loss, nt_xent, weight_mse
from analysis.hyperrep.model import AEConfig
from analysis.hyperrep.probes import probe_r2
from analysis.hyperrep.readout import alpha_statistics
from analysis.hyperrep.train import TrainConfig, Trained, encode, train_autoencoder
from loaders.transforms import LayerStandardization
from loaders.views import TokensView
from zoo_dataset.model_layout import layout_for
from zoo_dataset.specs import get_spec

SMALL_AE = {"d_model": 16, "heads": 2, "depth": 1, "token_latent": 2, "projection": 8}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return synthetic_store(
        tmp_path_factory.mktemp("hr"), n_models=4, populations=("original", "vd"), vd_epochs=3
    )


@pytest.fixture(scope="module")
def samples(store):
    return load_samples(store.zoo_dir, None, ("train",))


def test_samples_are_every_vd_state_as_tokens(store, samples):
    states = store.population("vd").epochs + 1
    assert len(samples) == len(set(samples.model_ids)) * states
    model_id = int(samples.model_ids[0])
    np.testing.assert_allclose(samples.alphas[1].numpy(), store.array("log_alpha", "vd", model_id, 1))
    np.testing.assert_allclose(samples.weights[1].numpy(), store.weights("vd", model_id, 1))  # dense
    view = TokensView(store.layout)
    torch.testing.assert_close(samples.tokens(samples.alphas[1]), view(samples.alphas[1])["tokens"])
    assert list(samples.properties["epoch"][:states]) == list(range(states))


def test_loss_formulas_match_direct_computation():
    g = torch.Generator().manual_seed(0)
    w_hat, w = (
        torch.randn(3, 4, 5, generator=g, dtype=torch.float64),
        torch.randn(3, 4, 5, generator=g, dtype=torch.float64),
    )
    valid = torch.rand(4, 5, generator=g) > 0.3
    sigma = torch.tensor([1.0, 2.0, 2.0, 0.5], dtype=torch.float64)
    a_hat, a = w_hat.numpy(), w.numpy()
    direct_w = np.mean(
        [
            ((w_hat[i, t, d] - w[i, t, d]) / sigma[t]) ** 2
            for i in range(3)
            for t in range(4)
            for d in range(5)
            if valid[t, d]
        ]
    )
    assert float(weight_mse(w_hat, w, valid, sigma)) == pytest.approx(direct_w, rel=1e-5)
    t, r = 3.0, 2.0
    direct_a = np.mean(
        [
            (np.tanh((a_hat[i, k, d] - t) / r) - np.tanh((a[i, k, d] - t) / r)) ** 2
            for i in range(3)
            for k in range(4)
            for d in range(5)
            if valid[k, d]
        ]
    )
    assert float(alpha_mse(w_hat, w, valid, t, r)) == pytest.approx(direct_a, rel=1e-5)
    assert float(ecd_loss(torch.tensor(2.0), torch.tensor(1.0), torch.tensor(3.0), 0.25)) == pytest.approx(
        3.5
    )


def test_nt_xent_matches_simclr_formula():
    g = torch.Generator().manual_seed(1)
    z1, z2, temperature = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g), 0.5
    z = torch.nn.functional.normalize(torch.cat([z1, z2]), dim=1).numpy()
    sim = z @ z.T / temperature
    terms = []
    for i in range(6):
        positive = (i + 3) % 6
        others = [k for k in range(6) if k != i]
        terms.append(-sim[i, positive] + np.log(np.exp(sim[i, others]).sum()))
    assert float(nt_xent(z1, z2, temperature)) == pytest.approx(np.mean(terms), rel=1e-5)


def test_training_lowers_loss_and_checkpoint_round_trips(samples, tmp_path):
    config = TrainConfig(epochs=6, batch_size=8, lr=3e-3)
    ae = AEConfig(tokens=len(samples.layer_id), width=samples.valid.shape[1], **SMALL_AE)
    trained = train_autoencoder(samples, config, ae)
    losses = [row["loss"] for row in trained.history]
    assert losses[-1] < losses[0]
    trained.save(tmp_path / "ae.pt")
    again = Trained.load(tmp_path / "ae.pt")
    z, w_hat, a_hat = encode(again, samples)
    assert z.shape == (len(samples), ae.latent) and w_hat.shape == samples.weights.shape == a_hat.shape
    np.testing.assert_allclose(z, encode(trained, samples)[0], rtol=1e-5, atol=1e-6)
    raw = torch.load(tmp_path / "ae.pt", weights_only=True)  # tensors and plain values only
    assert set(raw) == {"model", "config", "train", "scaler", "history"}


def test_probes_beat_the_mean_on_a_linear_property():
    rng = np.random.default_rng(0)
    z_train, z_test = rng.normal(size=(60, 5)), rng.normal(size=(20, 5))
    coef = rng.normal(size=5)
    groups = np.repeat(np.arange(12), 5)  # 12 "models" of 5 states each
    result = probe_r2(z_train, {"p": z_train @ coef}, z_test, {"p": z_test @ coef}, groups)
    assert result["p"]["probe"] > 0.95 and result["p"]["mean_baseline"] <= 0.0


def test_cli_eval_without_checkpoint_is_one_clear_line(store, tmp_path):
    result = CliRunner().invoke(
        main, ["eval", "--zoo", str(store.zoo_dir), "--checkpoint", str(tmp_path / "x.pt")]
    )
    assert result.exit_code == 1 and "no checkpoint" in result.output and "Traceback" not in result.output


def test_train_then_eval_print_table3_beside_the_statistics_baseline(tmp_path_factory):
    store = synthetic_store(tmp_path_factory.mktemp("hr-eval"), n_models=8, populations=("original", "vd"),
                            vd_epochs=2)
    checkpoint = tmp_path_factory.mktemp("hr-ckpt") / "ae.pt"
    zoo = ["--zoo", str(store.zoo_dir)]
    trained = CliRunner().invoke(main, ["train", *zoo, "--out", str(checkpoint), "--epochs", "1",
                                        "--d-model", "16", "--token-latent", "2"])
    assert trained.exit_code == 0, trained.output
    assert "s per epoch" in trained.output and "seed 0" in trained.output
    result = CliRunner().invoke(main, ["eval", *zoo, "--checkpoint", str(checkpoint)])
    assert result.exit_code == 0, result.output
    table = store.models()
    held_out = int(table.split.isin(["val", "test"]).sum())
    assert f"held-out: {held_out} models" in result.output
    assert f"(trained on {int((table.split == 'train').sum())} models" in result.output
    for row in ("paper MNIST-s (Table 3) | 78.7 | 79.4", "weight statistics + gradient boosting | - | -",
                "zoo-hyperrep (ridge probe on pooled z)",
                "zoo-hyperrep (gradient boosting on pooled z + statistics of its decoding)", "training mean"):
        assert row in result.output
    assert "Warning" not in result.output


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--d-model", "18", "multiple of the 4 attention heads"),
        ("--d-model", "100000", "not in the range 8<=x<=1024"),
        ("--batch-size", "1", "not in the range 2<=x<=4096"),  # NT-Xent would drop every batch of one
        ("--token-latent", "0", "not in the range 1<=x<=256"),
    ],
)
def test_train_refuses_sizes_it_cannot_train_before_loading_the_zoo(store, tmp_path, option, value, message):
    result = CliRunner().invoke(main, ["train", "--zoo", str(store.zoo_dir), "--out", str(tmp_path / "x.pt"),
                                       option, value])
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "x.pt").exists()


def test_alpha_statistics_are_the_share_past_the_threshold_per_layer_and_overall(samples):
    stats = alpha_statistics(samples.alphas, samples.layout, 3.0, 4.0)
    layers = samples.layout.layers
    assert stats.shape == (len(samples), 2 * len(layers) + 1)
    every = samples.alphas[:, samples.layout.weight_mask()]
    np.testing.assert_allclose(stats[:, -1], (every >= 3.0).double().mean(1).numpy())
    conv1 = samples.alphas[:, samples.layout.by_name[f"{layers[0]}.weight"].slice].double()
    np.testing.assert_allclose(stats[:, 0], (conv1 >= 3.0).double().mean(1).numpy())
    np.testing.assert_allclose(stats[:, 1], torch.tanh((conv1 - 3.0) / 4.0).mean(1).numpy())


def test_a_checkpoint_of_an_encoder_that_read_values_only_still_loads(samples, tmp_path):
    """Checkpoints written before the encoder read log-magnitudes have no ``log_magnitude`` key."""
    ae = AEConfig(tokens=len(samples.layer_id), width=samples.valid.shape[1], log_magnitude=False, **SMALL_AE)
    trained = train_autoencoder(samples, TrainConfig(epochs=1, batch_size=8), ae)
    trained.save(tmp_path / "old.pt")
    raw = torch.load(tmp_path / "old.pt", weights_only=True)
    del raw["config"]["log_magnitude"]
    torch.save(raw, tmp_path / "old.pt")
    again = Trained.load(tmp_path / "old.pt")
    assert again.model.config.log_magnitude is False
    np.testing.assert_allclose(encode(again, samples)[0], encode(trained, samples)[0], rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def checkpoint(samples, tmp_path_factory):
    ae = AEConfig(tokens=len(samples.layer_id), width=samples.valid.shape[1], **SMALL_AE)
    path = tmp_path_factory.mktemp("hr-hostile") / "ae.pt"
    train_autoencoder(samples, TrainConfig(epochs=1, batch_size=8), ae).save(path)
    return path


def _set(part: str, **values):
    """A change that sets ``values`` in the checkpoint's ``part`` (config, train)."""
    def change(raw: dict) -> dict:
        raw[part].update(values)
        return raw
    return change


def _nan_weights(raw: dict) -> dict:
    name = next(k for k, v in raw["model"].items() if v.is_floating_point())
    raw["model"][name].fill_(float("nan"))
    return raw


def _nan_scaler(raw: dict) -> dict:
    layers = raw["scaler"]["stats"]["weights"]
    layers[next(iter(layers))]["mean"] = float("nan")
    return raw


def _other_layout_scaler(raw: dict) -> dict:
    layout = layout_for(get_spec("cifar10_l_seed"))
    weights = torch.randn(3, layout.num_params, generator=torch.manual_seed(0))
    return {**raw, "scaler": LayerStandardization.from_states(layout, weights).to_dict()}


HOSTILE_CHECKPOINTS = {  # a change to a saved checkpoint, and what the one refusing line says
    "weights NaN": (_nan_weights, "hold NaN or infinite values"),
    "scaler NaN": (_nan_scaler, "not a finite mean and std"),
    "threshold NaN": (_set("train", threshold=float("nan")), "threshold = nan"),
    "span 0": (_set("train", span=0.0), "span = 0.0"),
    "depth 1e6": (_set("config", depth=10**6), "depth = 1000000 is out of range"),
    "width changed": (lambda raw: _set("config", width=raw["config"]["width"] + 1)(raw),
                      "its weights do not fit its config"),
    "depth a string": (_set("config", depth="2"), "depth is '2', not a whole number"),
    "an unknown key": (_set("config", evil=1), "unknown keys ['evil']"),
    "another zoo's layout": (_other_layout_scaler, "trained on states of another layout"),
}


@pytest.mark.parametrize("case", HOSTILE_CHECKPOINTS)
def test_eval_refuses_a_checkpoint_it_cannot_use_in_one_line(store, checkpoint, tmp_path, case):
    """NaN weights, scaler or threshold once reached scikit-learn (a traceback); a depth of 1e6 built
    a model for ever. Every value is checked before a model is built from it."""
    change, message = HOSTILE_CHECKPOINTS[case]
    raw = change(torch.load(checkpoint, weights_only=True))
    torch.save(raw, tmp_path / "hostile.pt")
    with hang_guard():
        result = CliRunner().invoke(main, ["eval", "--zoo", str(store.zoo_dir), "--checkpoint",
                                           str(tmp_path / "hostile.pt")])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output


@pytest.mark.parametrize("total_steps", [1, 2, 9, 10, 11, 100])
def test_the_learning_rate_schedule_runs_any_number_of_steps(total_steps):
    """OneCycleLR divides by zero when its warm-up ends at step 0 (10 steps at 10 %): every count
    of steps runs through, the warm-up still about a tenth of them."""
    from analysis.hyperrep.train import warmup_share

    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    share = warmup_share(total_steps)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 0.1, total_steps=total_steps, pct_start=share)
    for _ in range(total_steps):
        optimizer.step()
        schedule.step()
    assert 0.1 <= share <= 0.15
