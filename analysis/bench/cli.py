"""``zoo-bench``: the twin benchmark on one store: tasks, a versioned split, baselines, one table."""

from __future__ import annotations

from pathlib import Path

import click

from loaders.resolve import open_store
from zoo_dataset.cli_support import (
    SEED,
    Command,
    FiniteFloatRange,
    NonEmptyPath,
    as_bad_parameter,
    one_line_errors,
    version_option,
    writable_dir,
)
from zoo_dataset.errors import ZooSpecError
from zoo_dataset.specs import parse_level

from .defaults import default_predictors
from .report import record_in_store, render, results_document, write_outputs
from .splits import KINDS, load_split, make_split
from .tasks import SPARSITIES, TASKS, run_benchmark

SPLIT_OPTIONS = ("split_kind", "k", "test_fraction", "activation", "init", "epochs", "levels")  # a split file's


def _names(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise ZooSpecError(f"{text!r} names nothing; give a comma-separated list")
    return names


def _epochs(text: str) -> list[int]:
    """'0-9,12' -> [0..9, 12]."""
    out = []
    for part in _names(text):
        low, _, high = part.partition("-")
        try:
            low, high = int(low), int(high or low)
        except ValueError:
            raise ZooSpecError(f"{text!r} is not a list of epochs and ranges such as 0-9,12") from None
        if not 0 <= low <= high <= 10**6:
            raise ZooSpecError(f"{text!r}: {part} is not a forward range of epochs")
        out += range(low, high + 1)
    return out


def _levels(text: str) -> list[float]:
    return [parse_level(part) for part in _names(text)]




def _tasks(text: str) -> list[str]:
    tasks = _names(text)
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ZooSpecError(f"unknown task(s) {', '.join(unknown)}; choose from {', '.join(TASKS)}")
    return [t for t in TASKS if t in tasks]


def _select(chosen: list[str] | None, properties: list, masks: list) -> tuple[list, list]:
    """The predictors named in ``chosen`` (all when None); a name no predictor has is a usage error."""
    if chosen is None:
        return properties, masks
    known = [p.name for p in (*properties, *masks)]
    unknown = [name for name in chosen if name not in known]
    if unknown:
        raise click.BadParameter(f"no predictor is named {', '.join(unknown)}; choose from {', '.join(known)}",
                                 param_hint="'--predictors'")
    return [p for p in properties if p.name in chosen], [p for p in masks if p.name in chosen]


def _check_store_writable(zoo_dir: Path) -> None:
    for folder in (zoo_dir.parent, zoo_dir / "bench"):
        try:
            writable_dir(folder, "--zoo")
        except click.BadParameter as exc:
            raise click.BadParameter(f"{exc.message}; --no-store writes to --out only", param_hint="'--zoo'") from None


@click.command(cls=Command, context_settings={"help_option_names": ["-h", "--help"]})
@version_option()
@click.option("--zoo", required=True, help="Zoo name (a store under ROOT) or a store directory.")
@click.option("--root", type=NonEmptyPath(file_okay=False),
              help="Where stores live [default: $ZOO_TWINS_CACHE, else the cache dir].")
@click.option("--data-dir", type=NonEmptyPath(file_okay=False), help="Where dataset files are (task 3 evaluates).")
@click.option("--split", "split_file", type=NonEmptyPath(dir_okay=False),
              help="Reuse this split file (bench/splits/<id>.json of a store, or one a run wrote to --out).")
@click.option("--split-kind", type=click.Choice(KINDS), default="store", show_default=True,
              help="store: the store's train+val / test; random: a seeded share held out; kfold: k seeded folds.")
@click.option("--seed", type=SEED, default=0, show_default=True,
              help="Seeds the split (random, kfold) and every predictor.")
@click.option("--k", type=click.IntRange(2, 1000), default=5, show_default=True, help="Folds of --split-kind kfold.")
@click.option("--test-fraction", type=FiniteFloatRange(0, 1, min_open=True, max_open=True), default=0.2,
              show_default=True, help="Share of models held out by --split-kind random.")
@click.option("--activation", callback=as_bad_parameter(_names),
              help="Only models of these activations, e.g. tanh,relu.")
@click.option("--init", callback=as_bad_parameter(_names), help="Only models of these inits, e.g. kaiming_uniform.")
@click.option("--epochs", callback=as_bad_parameter(_epochs), help="Only states of these epochs, e.g. 0-9,12 (task 1).")
@click.option("--levels", callback=as_bad_parameter(_levels), help="Only these MP levels, e.g. 0.5,0.9 or 50,90.")
@click.option("--tasks", default=",".join(TASKS), show_default=True, callback=as_bad_parameter(_tasks))
@click.option("--predictors", callback=as_bad_parameter(_names),
              help="Only the predictors of these names [default: all].")
@click.option("--sparsities", default=",".join(f"{s:g}" for s in SPARSITIES), show_default=True,
              callback=as_bad_parameter(_levels), help="Task 3's target sparsities.")
@click.option("--quick", is_flag=True, help="CI-sized baselines: few epochs and estimators.")
@click.option("--train-epochs", type=click.IntRange(1, 10_000),
              help="Training epochs of the NFN and hyper-representation baselines [default: 40].")
@click.option("--out", type=NonEmptyPath(file_okay=False), help="Output folder [default: ./<zoo>-bench].")
@click.option("--no-store", is_flag=True, help="Write only to --out; leave the store (and its card) as it is.")
@click.pass_context
def main(ctx: click.Context, zoo, root, data_dir, split_file, split_kind, seed, k, test_fraction, activation, init,
         epochs, levels, tasks, predictors, sparsities, quick, train_epochs, out, no_store) -> None:
    """Score property, twin and mask predictors on a split of a zoo; print the table and write it, its
    JSON and figure to --out and into the store (bench/, listed in its card)."""
    with one_line_errors():
        given = [name for name in SPLIT_OPTIONS
                 if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT]
        if quick and train_epochs:
            raise click.UsageError("--quick sets the baselines' epochs; leave out --train-epochs")
        if split_file and given:
            raise click.UsageError(f"--split fixes the models, epochs and levels; leave out "
                                   f"{', '.join('--' + g.replace('_', '-') for g in given)}")
        store = open_store(zoo, root)
        folder = writable_dir(out or f"{store.manifest.zoo}-bench", "--out")
        if not no_store:  # before any work: the results go into the store, its lock beside it
            _check_store_writable(store.zoo_dir)
        if split_file:
            split = load_split(Path(split_file))
            split.check_store(store)
        else:
            split = make_split(store, split_kind, seed, k, test_fraction, activation, init, epochs, levels)
        properties, masks, notes = default_predictors(quick, seed, train_epochs)
        properties, masks = _select(predictors, properties, masks)
        click.echo(f"{store.manifest.zoo}: split {split.id}: {split.describe()}", err=True)
        run = run_benchmark(store, split, properties, masks, tasks, seed, sparsities, data_dir, progress=True)
        run.notes = notes + run.notes
        doc = results_document(store, split, run, quick, train_epochs)
        files = render(doc)
        folder.mkdir(parents=True, exist_ok=True)
        written = [str(p) for p in write_outputs(doc, split, folder, files)]
        if not no_store:
            written += [str(store.zoo_dir / p) for p in record_in_store(store.zoo_dir, split, doc, files)]
        click.echo(files[".md"].decode())
        click.echo("wrote " + ", ".join(written))


if __name__ == "__main__":
    main()
