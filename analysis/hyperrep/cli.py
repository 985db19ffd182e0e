"""``zoo-hyperrep train|eval``: the hyper-representation reference on a zoo's VD twins."""

from __future__ import annotations

import time
from pathlib import Path

import click
import torch

from loaders.resolve import open_store
from zoo_dataset.cli_support import (
    EPOCHS,
    SEED,
    FiniteFloatRange,
    Group,
    NonEmptyPath,
    check_device,
    one_line_errors,
    version_option,
    writable_dir,
)
from zoo_dataset.errors import StoreError

from .baseline import boosting_r2, statistics_r2
from .data import HELD_OUT, load_samples
from .model import AEConfig
from .probes import probe_r2
from .readout import readout_features
from .train import TrainConfig, Trained, encode, reconstruction_r2, train_autoencoder
from .zeroshot import ZeroShotConfig, fit_zero_shot
from .zeroshot_eval import compare, model_ids, pairs, per_model, summary, sweep, test_data

SWEEP_THRESHOLDS = [-2.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0]  # the figure's cuts of the predicted log-alphas

ROOT_HELP = "Where stores live [default: $ZOO_TWINS_CACHE, else the cache dir]."


def _checkpoint(zoo: str, path: str | None) -> Path:
    """The autoencoder checkpoint: an output, so by default in the working directory, not in the store root."""
    return Path(path) if path else Path(f"{Path(zoo).name}-hyperrep.pt")


PAPER_TABLE3 = {  # the paper's Table 3, R² in %: weights, alphas, then the properties
    "paper MNIST-s (Table 3)": (78.7, 79.4, 96.3, 98.0, 53.2, 19.1),
    "paper SVHN-s (Table 3)": (74.8, 74.2, 94.5, 97.6, 30.2, 10.5),
}


def _row(label: str, values) -> str:
    cells = ["-" if v is None else f"{v:.1f}" for v in values]
    return f"| {label} | " + " | ".join(cells) + " |"


def evaluate(trained: Trained, zoo: str, root: str | None) -> str:
    """Reconstruction R² (weights, alphas) and probe R² per property on held-out models, beside the
    weight-statistics baseline on the same split and the paper's Table 3, as a markdown table."""
    train = load_samples(zoo, root, ("train",))
    trained.check_fits(train, zoo)
    held_out = load_samples(zoo, root, HELD_OUT)
    encoded_train, encoded_held_out = encode(trained, train), encode(trained, held_out)  # once per split
    rec = reconstruction_r2(trained, train, held_out, *encoded_held_out[1:])
    z_train, read_train = readout_features(encoded_train, train, trained.train)
    z_held_out, read_held_out = readout_features(encoded_held_out, held_out, trained.train)
    probes = probe_r2(z_train, train.properties, z_held_out, held_out.properties, train.model_ids)
    boosted = boosting_r2(z_train, train.properties, z_held_out, held_out.properties, trained.train.seed)
    decoded = boosting_r2(read_train, train.properties, read_held_out, held_out.properties, trained.train.seed)
    statistics = statistics_r2(train, held_out, seed=trained.train.seed)
    names = list(probes)
    lines = [
        f"held-out: {len(set(held_out.model_ids))} models, {len(held_out)} states "
        f"(trained on {len(set(train.model_ids))} models, {len(train)} states)",
        f"reconstruction R^2   weights {100 * rec['weights']:.1f} %   alphas {100 * rec['alphas']:.1f} %",
        "",
        "| R² % | weights | alphas | " + " | ".join(names) + " |",
        "|---|---|---|" + "---|" * len(names),
    ]
    lines += [_row(label, values) for label, values in PAPER_TABLE3.items()]
    lines += [
        _row("zoo-hyperrep (ridge probe on pooled z)",
             [100 * rec["weights"], 100 * rec["alphas"]] + [100 * probes[n]["probe"] for n in names]),
        _row("zoo-hyperrep (gradient boosting on pooled z)",
             [100 * rec["weights"], 100 * rec["alphas"]] + [100 * boosted[n] for n in names]),
        _row("zoo-hyperrep (gradient boosting on pooled z + statistics of its decoding)",
             [100 * rec["weights"], 100 * rec["alphas"]] + [100 * decoded[n] for n in names]),
        _row("weight statistics + gradient boosting", [None, None] + [100 * statistics[n] for n in names]),
        _row("training mean", [0.0, 0.0] + [100 * probes[n]["mean_baseline"] for n in names]),
    ]
    ill = [n for n in names if probes[n]["ill_conditioned"]]
    if ill:
        lines.append(f"note: the ridge system was ill-conditioned for {', '.join(ill)} "
                     "(scikit-learn LinAlgWarning); those probe R² may be imprecise")
    return "\n".join(lines)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@version_option()
def main() -> None:
    """Hyper-representations of VD twins: train an autoencoder, then probe its embeddings."""


@main.command()
@click.option("--zoo", required=True, help="Zoo name under ROOT, or a store directory.")
@click.option("--root", type=NonEmptyPath(file_okay=False), help=ROOT_HELP)
@click.option(
    "--out", type=click.Path(dir_okay=False), help="Checkpoint path [default: ./<zoo>-hyperrep.pt]."
)
@click.option("--epochs", type=EPOCHS, default=TrainConfig.epochs, show_default=True)
@click.option("--batch-size", type=click.IntRange(2, 4096), default=TrainConfig.batch_size, show_default=True,
              help="States per step (2 to 4096: the contrastive loss needs pairs).")
@click.option("--beta", type=FiniteFloatRange(0, 1), default=TrainConfig.beta, show_default=True,
              help="Contrastive weight in eq. 6 (0 to 1).")
@click.option("--device", default="cpu", show_default=True, callback=check_device, help="cpu or cuda.")
@click.option("--seed", type=SEED, default=TrainConfig.seed, show_default=True)
@click.option("--token-latent", type=click.IntRange(1, 256), default=AEConfig.token_latent, show_default=True,
              help="Bottleneck values per token (z has 48 x this many on the CNN-s).")
@click.option("--d-model", type=click.IntRange(8, 1024), default=AEConfig.d_model, show_default=True,
              help="Transformer width (a multiple of the 4 heads).")
@click.option("--log-magnitude/--values-only", default=AEConfig.log_magnitude, show_default=True,
              help="Whether the encoder also reads each weight's log-magnitude (where VD's pruned weights differ).")
def train(zoo, root, out, epochs, batch_size, beta, device, seed, token_latent, d_model, log_magnitude) -> None:
    """Train on the train split's VD trajectories, save a checkpoint, and evaluate on held-out models."""
    with one_line_errors():
        if d_model % AEConfig.heads:
            raise click.BadParameter(f"{d_model} is not a multiple of the {AEConfig.heads} attention heads",
                                     param_hint="'--d-model'")
        path = _checkpoint(zoo, out)
        writable_dir(path.parent, "--out")  # before training, not after
        samples = load_samples(zoo, root, ("train",))
        click.echo(f"training on {len(samples)} VD states of {len(set(samples.model_ids))} models ({device})")
        started = time.time()
        config = TrainConfig(epochs=epochs, batch_size=batch_size, beta=beta, seed=seed)
        step = max(1, epochs // 10)

        def log(row: dict) -> None:
            if row["epoch"] % step == 0 or row["epoch"] == epochs:
                click.echo(
                    f"  epoch {row['epoch']:4d}  loss {row['loss']:.4f}  contrastive {row['contrastive']:.3f}"
                    f"  weights {row['weights']:.4f}  alphas {row['alphas']:.4f}"
                )

        ae = AEConfig(tokens=len(samples.layer_id), width=samples.valid.shape[1], d_model=d_model,
                      token_latent=token_latent, log_magnitude=log_magnitude)
        trained = train_autoencoder(samples, config, ae, device=device, log=log)
        path.parent.mkdir(parents=True, exist_ok=True)
        trained.save(path)
        seconds = time.time() - started
        click.echo(f"trained in {seconds:.0f} s ({seconds / epochs:.1f} s per epoch, {device}, seed {seed}); "
                   f"checkpoint {path}\n")
        click.echo(evaluate(trained, zoo, root))


@main.command(name="eval")
@click.option("--zoo", required=True, help="Zoo name under ROOT, or a store directory.")
@click.option("--root", type=NonEmptyPath(file_okay=False), help=ROOT_HELP)
@click.option("--checkpoint", type=click.Path(dir_okay=False), help="[default: ./<zoo>-hyperrep.pt]")
@click.option("--device", default="cpu", show_default=True, callback=check_device)
def evaluate_command(zoo, root, checkpoint, device) -> None:
    """Reconstruction R^2 and linear-probe R^2 per property on held-out models."""
    with one_line_errors():
        path = _checkpoint(zoo, checkpoint)
        if not path.exists():
            raise StoreError(f"no checkpoint at {path}; run `zoo-hyperrep train --zoo {zoo}` first")
        click.echo(evaluate(Trained.load(path, device), zoo, root))


@main.command(name="zero-shot")
@click.option("--zoo", required=True, help="Zoo name under ROOT, or a store directory.")
@click.option("--root", type=click.Path(file_okay=False), help=ROOT_HELP)
@click.option("--out", type=click.Path(file_okay=False),
              help="Folder for the table, figure and predictor [default: ./<zoo>-zero-shot/].")
@click.option("--vd-epoch", type=int, default=-1, show_default=True,
              help="The VD epoch whose log-alphas are predicted (-1: the last).")
@click.option("--epochs", type=EPOCHS, default=ZeroShotConfig.epochs, show_default=True)
@click.option("--device", default="cpu", show_default=True, callback=check_device, help="cpu or cuda.")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=ZeroShotConfig.seed, show_default=True)
@click.option("--data-dir", type=click.Path(file_okay=False), help="Where dataset files are.")
def zero_shot_command(zoo, root, out, vd_epoch, epochs, device, seed, data_dir) -> None:
    """Predict VD log-alphas of held-out originals from their final weights, prune at the VD
    threshold and compare, untrained, with global MP, the MP twins and the true VD twins."""
    with one_line_errors():
        folder = writable_dir(out or f"{Path(zoo).name}-zero-shot", "--out")
        store = open_store(zoo, root)
        threshold = store.spec.vd.threshold
        epochs_recorded = store.population("vd").epochs + 1
        if not -epochs_recorded <= vd_epoch < epochs_recorded:
            raise click.BadParameter(f"{vd_epoch}: the VD twins record epochs 0..{epochs_recorded - 1}",
                                     param_hint="'--vd-epoch'")
        vd_epoch %= epochs_recorded
        config = ZeroShotConfig(epochs=epochs, threshold=threshold, seed=seed)
        train_ids, held_out = model_ids(store, ("train",)), model_ids(store, HELD_OUT)
        if not held_out:
            raise StoreError(f"{store.zoo_dir} has no held-out models with VD twins")
        click.echo(f"fitting on {len(train_ids)} training models (VD epoch {vd_epoch}, {device}, seed {seed})")
        started = time.time()
        model = fit_zero_shot(*pairs(store, train_ids, vd_epoch), store.layout, vd_epoch, config, device,
                              log=lambda e, loss: click.echo(f"  epoch {e:3d}  alpha loss {loss:.4f}"))
        click.echo(f"fitted in {time.time() - started:.0f} s\n")
        data = test_data(store, data_dir)
        table = compare(store, model, held_out, data, threshold)
        curve = sweep(store, model, held_out, data, SWEEP_THRESHOLDS)
        text = summary(table)
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(model.state(), folder / "predictor.pt")
        table.to_csv(folder / "zero_shot.csv", index=False)
        curve.to_csv(folder / "zero_shot_sweep.csv", index=False)
        from analysis.figures import zero_shot_accuracy  # deferred: matplotlib only for this command

        twins = {name: store.states(name) for name in ("mp", "vd")}
        twins = {name: states[states.model_id.isin(held_out)] for name, states in twins.items()}
        figure = zero_shot_accuracy(curve, table, twins, f"{store.manifest.zoo}: zero-shot sparsification")
        figure.savefig(folder / "zero_shot.png", dpi=120)
        (folder / "zero_shot.md").write_text(f"{text}\n\nPer model:\n\n{per_model(table)}\n")
        click.echo(text)
        click.echo(f"\nwrote {folder}/zero_shot.md (with the per-model table), zero_shot.csv, "
                   "zero_shot_sweep.csv, zero_shot.png, predictor.pt")


if __name__ == "__main__":
    main()
