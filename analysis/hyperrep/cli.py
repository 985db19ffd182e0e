"""``zoo-hyperrep train|eval``: the hyper-representation reference on a zoo's VD twins."""

from __future__ import annotations

import time
from pathlib import Path

import click

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

from .data import HELD_OUT, load_samples
from .probes import probe_r2
from .train import TrainConfig, Trained, encode, reconstruction_r2, train_autoencoder

ROOT_HELP = "Where stores live [default: $ZOO_TWINS_CACHE, else the cache dir]."


def _checkpoint(zoo: str, path: str | None) -> Path:
    """The autoencoder checkpoint: an output, so by default in the working directory, not in the store root."""
    return Path(path) if path else Path(f"{Path(zoo).name}-hyperrep.pt")


def evaluate(trained: Trained, zoo: str, root: str | None) -> str:
    """Reconstruction R^2 (weights, alphas) and probe R^2 per property on held-out models, as text."""
    train = load_samples(zoo, root, ("train",))
    held_out = load_samples(zoo, root, HELD_OUT)
    rec = reconstruction_r2(trained, train, held_out)
    probes = probe_r2(
        encode(trained, train)[0],
        train.properties,
        encode(trained, held_out)[0],
        held_out.properties,
        train.model_ids,
    )
    lines = [
        f"held-out: {len(set(held_out.model_ids))} models, {len(held_out)} states "
        f"(trained on {len(set(train.model_ids))} models, {len(train)} states)",
        f"reconstruction R^2   weights {100 * rec['weights']:6.1f} %   alphas {100 * rec['alphas']:6.1f} %",
        f"{'property':10} {'probe R^2':>10} {'mean baseline':>14}",
    ]
    lines += [
        f"{name:10} {100 * r['probe']:9.1f}% {100 * r['mean_baseline']:13.1f}%" for name, r in probes.items()
    ]
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
@click.option("--batch-size", type=click.IntRange(min=1), default=TrainConfig.batch_size, show_default=True)
@click.option("--beta", type=FiniteFloatRange(0, 1), default=TrainConfig.beta, show_default=True,
              help="Contrastive weight in eq. 6 (0 to 1).")
@click.option("--device", default="cpu", show_default=True, callback=check_device, help="cpu or cuda.")
@click.option("--seed", type=SEED, default=TrainConfig.seed, show_default=True)
def train(zoo, root, out, epochs, batch_size, beta, device, seed) -> None:
    """Train on the train split's VD trajectories, save a checkpoint, and evaluate on held-out models."""
    with one_line_errors():
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

        trained = train_autoencoder(samples, config, device=device, log=log)
        path.parent.mkdir(parents=True, exist_ok=True)
        trained.save(path)
        click.echo(f"trained in {time.time() - started:.0f} s; checkpoint {path}\n")
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


if __name__ == "__main__":
    main()
