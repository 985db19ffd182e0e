"""``zoo-build``: build a zoo and its twins into a store."""

from __future__ import annotations

import time
from pathlib import Path

import click

from loaders.cache import store_root
from releases.ingest import ingest_original
from releases.smallcnnzoo import ingest_smallcnnzoo, is_smallcnnzoo
from zoo_dataset.cli_support import (
    EPOCHS,
    Command,
    NonEmptyPath,
    as_bad_parameter,
    check_device,
    one_line_errors,
    version_option,
    writable_dir,
)
from zoo_dataset.data import is_available
from zoo_dataset.errors import ZooSpecError
from zoo_dataset.specs import MAX_MODELS, VD_VARIANTS, check_levels, get_spec, load_specs, registry
from zoo_dataset.statistics import last_epoch_summary, percent
from zoo_dataset.store import ZooStore
from zoo_dataset.store.lock import writer_lock
from zoo_dataset.store.manifest import MANIFEST, SCHEMA_VERSION, Manifest
from zoo_dataset.store.migrate import migrate_store
from zoo_dataset.store.paths import check_zoo_name

from .build import build_zoo
from .executors import ENGINES, EXECUTORS, auto_workers, make_trainer
from .stages import DEFAULT_STAGES, STAGES, MethodStage, StageReport

OPT_IN = [name for name in STAGES if name not in DEFAULT_STAGES]

PRESETS = {
    "paper": {},
    "smoke": {"model_subset": range(4), "epochs": 2, "mp_epochs": 1, "mp_levels": (0.5, 0.9), "vd_epochs": 2},
}


def parse_models(text: str) -> list[int]:
    """'0-9,12,20-22' -> [0..9, 12, 20, 21, 22]; a reversed range or an empty list is refused."""
    try:
        ranges = [tuple(int(x) for x in part.split("-")) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ZooSpecError(f"{text!r} is not a list of ids and ranges such as 0-9,12") from None
    if any(len(r) > 2 for r in ranges):
        raise ZooSpecError(f"{text!r} is not a list of ids and ranges such as 0-9,12")
    backwards = [f"{r[0]}-{r[1]}" for r in ranges if len(r) == 2 and r[1] < r[0]]
    if backwards:
        raise ZooSpecError(f"{text!r}: the range {backwards[0]} runs backwards")
    too_large = [r[-1] for r in ranges if r[-1] >= MAX_MODELS]
    if too_large or sum(r[-1] - r[0] + 1 for r in ranges) > MAX_MODELS:  # bounded before the ids are listed
        what = f"model id {too_large[0]}" if too_large else "the list"
        raise ZooSpecError(f"{text!r}: {what} is out of range (a zoo has at most {MAX_MODELS} models)")
    ids = [i for r in ranges for i in range(r[0], r[-1] + 1)]
    if not ids:
        raise ZooSpecError(f"{text!r} selects no model; give ids and ranges such as 0-9,12")
    return ids




def parse_stages(text: str) -> list[str]:
    stages = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ZooSpecError(f"unknown stage(s) {', '.join(unknown)}; available: {', '.join(STAGES)}")
    if not stages:
        raise ZooSpecError(f"no stage given; choose from {', '.join(STAGES)}")
    return stages


def parse_levels(text: str) -> tuple[float, ...]:
    try:
        return check_levels(float(x) for x in text.split(","))
    except ValueError as exc:
        if isinstance(exc, ZooSpecError):
            raise
        raise ZooSpecError(f"{text!r} is not a list of numbers such as 0.5,0.9 or 50,90") from None


def existing_spec(root: Path, zoo: str, spec_file: str | None = None):
    """The spec a store under ``root`` already records (an ingested or downloaded zoo keeps the models
    and epochs it was published with), else the registry's: twins build on top with no further flags.
    A user's spec file is read as given (a store built from it refuses changed settings)."""
    if spec_file is None and (root / zoo / MANIFEST).exists() and zoo in registry():
        return Manifest.load(root / zoo).zoo_spec
    return get_spec(zoo, spec_file)


def list_zoos(data_dir: str | None, spec_file: str | None = None) -> None:
    zoos = registry() if spec_file is None else load_specs(spec_file)  # a bad file: its error line alone
    click.echo(f"{'zoo':18} {'dataset':9} {'arch':8} {'variant':9} {'models':>6} {'epochs':>6}  data")
    for name, spec in zoos.items():
        data = "available" if is_available(spec.dataset, data_dir) else "missing"
        click.echo(
            f"{name:18} {spec.dataset:9} {spec.architecture:8} {spec.variant:9} {spec.size:>6} {spec.epochs:>6}  {data}"
        )


def summary(store: ZooStore, seconds: float, reports: list[StageReport]) -> None:
    size = sum(p.stat().st_size for p in store.zoo_dir.rglob("*") if p.is_file())
    trained = sum(r.units_trained for r in reports if isinstance(STAGES[r.stage], MethodStage))
    done = f"built in {seconds:.0f} s" if trained else "nothing to train: every requested unit was already built"
    click.echo(f"\nstore: {store.zoo_dir}  ({size / 1e6:.1f} MB, {done})")
    table = last_epoch_summary({p: store.states(p) for p in store.populations})
    for row in table.itertuples():
        tag = f"{row.population}" + (f" @ {row.level:.0%}" if row.level > 0 else "")
        click.echo(
            f"  {tag:16} models {row.models:5d}  epochs {row.epoch:3d}  "
            f"test acc {percent(row.test_acc_mean, row.test_acc_std)} %  sparsity {100 * row.sparsity_mean:5.1f} %"
            + (f"  diverged {row.diverged} (NaN or infinite weights)" if row.diverged else "")
        )


def _worker_count(text: str) -> int:
    """``--workers N`` as a number (make_trainer checks its range)."""
    try:
        return int(text)
    except ValueError:
        raise ZooSpecError(f"--workers must be auto or a whole number, got {text!r}") from None


@click.command(cls=Command, context_settings={"help_option_names": ["-h", "--help"]})
@version_option()
@click.option("--zoo", help="Zoo name (see --list).")
@click.option("--spec", "spec_file", type=NonEmptyPath(dir_okay=False),
              help="A TOML file of your own zoos (the schema of the packaged zoos.toml); --zoo names one of them.")
@click.option("--list", "show_list", is_flag=True, help="List all zoos and whether their data is available.")
@click.option("--stages", default=",".join(DEFAULT_STAGES), show_default=True, callback=as_bad_parameter(parse_stages),
              help="Comma-separated stages to run; opt-in methods (" + ", ".join(OPT_IN) + ") only when named.")
@click.option("--root", "--out", "root", type=NonEmptyPath(file_okay=False),
              help="Where stores live; the zoo goes to ROOT/<zoo> [default: $ZOO_TWINS_CACHE, else the cache dir]. "
              "--out is the old name of this option.")
@click.option("--models", callback=as_bad_parameter(parse_models), help="Subset of model ids, e.g. 0-9,12.")
@click.option("--epochs", type=EPOCHS,
              help="Override the original training epochs (1 to 10000; not with --from-original).")
@click.option("--mp-epochs", type=EPOCHS, help="Override MP fine-tuning epochs.")
@click.option("--mp-levels", callback=as_bad_parameter(parse_levels),
              help="Override MP sparsity levels, e.g. 0.5,0.9 or 50,90 (distinct).")
@click.option("--vd-epochs", type=EPOCHS, help="Override VD training epochs.")
@click.option("--vd-variant", type=click.Choice(VD_VARIANTS),
              help="VD method: cnn_ard (the original zoos' CNN_ARD, default of the packaged zoos) or elbo "
                   "(negative ELBO per sample, deterministic biases); see docs/variational-dropout.md.")
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default="paper", show_default=True,
              help="smoke: 4 models, 2 epochs, a quick end-to-end check.")
@click.option("--device", default="cpu", show_default=True, callback=check_device,
              help="torch device, e.g. cpu or cuda.")
@click.option("--data-dir", type=NonEmptyPath(file_okay=False),
              help="Where dataset files are (default $ZOO_TWINS_DATA).")
@click.option("--resume", is_flag=True, help="Continue an interrupted build; finished models are kept.")
@click.option("--from-original", type=click.Path(exists=True),
              help="Ingest a published original zoo instead of training it: a Ray Tune folder or zip (Model "
                   "Zoos), or a folder of weights.npy, layout.csv and metrics.csv.gz (Small CNN Zoo).")
@click.option("--engine", type=click.Choice(sorted(ENGINES)), default="population", show_default=True,
              help="population: many models as one batched computation; reference: one model at a time.")
@click.option("--executor", type=click.Choice(EXECUTORS), default="local", show_default=True,
              help="local: this process; ray: model batches as Ray tasks (pip install 'zoo-twins[ray]').")
@click.option("--address", help="Ray head HOST:PORT for --executor ray (default: $RAY_ADDRESS, else the cluster "
              "`ray start` began on this machine, else a new local Ray).")
@click.option("--workers", default="auto", show_default=True,
              help="Local executor: train in this many processes, one engine each; auto: one per torch thread "
                   "(core) on CPU as memory allows, 1 on cuda or with Ray.")
@click.option("--migrate", is_flag=True,
              help="Convert the store ROOT/<zoo> from an older store schema to the current one (lossless), then stop.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def main(zoo, spec_file, show_list, stages, root, models, epochs, mp_epochs, mp_levels, vd_epochs, vd_variant, preset,
         device, data_dir, resume, from_original, engine, executor, address, workers, migrate, quiet):
    """Build the original population of a zoo and its sparsified twins."""
    with one_line_errors():
        if show_list:
            list_zoos(data_dir, spec_file)
            return
        if not zoo:
            raise click.UsageError("--zoo NAME is required (or --list)")
        root = store_root(root)
        check_zoo_name(zoo)
        if migrate:
            writable_dir(root, "--root")
            report = None if quiet else lambda file: click.echo(f"migrated {file}")
            rewritten = migrate_store(root / zoo, progress=report)
            click.echo(f"{root / zoo}: store schema {SCHEMA_VERSION} ({rewritten} shards rewritten)")
            return
        if from_original and epochs is not None:
            raise click.UsageError("--epochs cannot be combined with --from-original: an ingested zoo keeps the "
                                   "epochs its checkpoints record")
        if address and executor != "ray":
            raise click.UsageError("--address is for --executor ray")
        overrides = dict(PRESETS[preset])
        overrides.update({k: v for k, v in {
            "epochs": epochs, "mp_epochs": mp_epochs, "vd_epochs": vd_epochs, "vd_variant": vd_variant,
            "model_subset": models, "mp_levels": mp_levels,
        }.items() if v is not None})
        spec = existing_spec(root, zoo, spec_file).with_overrides(**overrides)
        workers = auto_workers(executor, device) if workers == "auto" else _worker_count(workers)
        trainer = make_trainer(executor, engine, device, address, workers=workers)
        writable_dir(root, "--root")
        started = time.time()
        with writer_lock(root / spec.name):  # one lock over ingest and build
            if from_original:  # the original stage then finds every ingested model done
                ingest = ingest_smallcnnzoo if is_smallcnnzoo(from_original) else ingest_original
                spec, resume = ingest(spec, from_original, root).spec, True
            store, reports = build_zoo(spec, root, stages=stages, resume=resume, device=device, data_dir=data_dir,
                                       progress=not quiet, trainer=trainer)
        summary(store, time.time() - started, reports)


if __name__ == "__main__":
    main()
