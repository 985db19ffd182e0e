"""``zoo-build``: build a zoo and its twins into a store."""

from __future__ import annotations

import time
from pathlib import Path

import click

from loaders.cache import store_root
from zoo_dataset.cli_support import Command, one_line_errors
from zoo_dataset.data import is_available
from zoo_dataset.errors import ZooSpecError
from zoo_dataset.specs import VD_KL_OBJECTIVES, get_spec, load_specs, registry
from zoo_dataset.statistics import last_epoch_summary, percent
from zoo_dataset.store import ZooStore
from zoo_dataset.store.lock import writer_lock
from zoo_dataset.store.manifest import MANIFEST, SCHEMA_VERSION, Manifest
from zoo_dataset.store.migrate import migrate_store
from zoo_dataset.store.paths import check_zoo_name

from .build import build_zoo
from .executors import ENGINES, EXECUTORS, make_trainer
from .ingest import ingest_original
from .stages import DEFAULT_STAGES, STAGES

OPT_IN = [name for name in STAGES if name not in DEFAULT_STAGES]

PRESETS = {
    "paper": {},
    "smoke": {"model_subset": range(4), "epochs": 2, "mp_epochs": 1, "mp_levels": (0.5, 0.9), "vd_epochs": 2},
}


def parse_models(text: str) -> list[int]:
    """'0-9,12,20-22' -> [0..9, 12, 20, 21, 22]."""
    ids: list[int] = []
    try:
        for part in text.split(","):
            if "-" in part:
                lo, hi = part.split("-")
                ids.extend(range(int(lo), int(hi) + 1))
            elif part.strip():
                ids.append(int(part))
    except ValueError:
        raise ZooSpecError(f"--models {text!r} is not a list of ids and ranges such as 0-9,12") from None
    return ids


def existing_spec(root: Path, zoo: str, spec_file: str | None = None):
    """The spec a store under ``root`` already records (an ingested or downloaded zoo keeps the models
    and epochs it was published with), else the registry's: twins build on top with no further flags.
    A user's spec file is read as given (a store built from it refuses changed settings)."""
    if spec_file is None and (root / zoo / MANIFEST).exists() and zoo in registry():
        return Manifest.load(root / zoo).zoo_spec
    return get_spec(zoo, spec_file)


def list_zoos(data_dir: str | None, spec_file: str | None = None) -> None:
    header = f"{'zoo':18} {'dataset':8} {'arch':6} {'variant':7} {'models':>6} {'epochs':>6}  data"
    click.echo(header)
    for name, spec in (registry() if spec_file is None else load_specs(spec_file)).items():
        data = "available" if is_available(spec.dataset, data_dir) else "missing"
        click.echo(
            f"{name:18} {spec.dataset:8} {spec.architecture:6} {spec.variant:7} {spec.size:>6} {spec.epochs:>6}  {data}"
        )


def summary(store: ZooStore, seconds: float) -> None:
    size = sum(p.stat().st_size for p in store.zoo_dir.rglob("*") if p.is_file())
    click.echo(f"\nstore: {store.zoo_dir}  ({size / 1e6:.1f} MB, built in {seconds:.0f} s)")
    table = last_epoch_summary({p: store.states(p) for p in store.populations})
    for row in table.itertuples():
        tag = f"{row.population}" + (f" @ {row.level:.0%}" if row.level > 0 else "")
        click.echo(
            f"  {tag:12} models {row.models:5d}  epochs {row.epoch:3d}  "
            f"test acc {percent(row.test_acc_mean, row.test_acc_std)} %  sparsity {100 * row.sparsity_mean:5.1f} %"
        )


@click.command(cls=Command, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--zoo", help="Zoo name (see --list).")
@click.option("--spec", "spec_file", type=click.Path(dir_okay=False),
              help="A TOML file of your own zoos (the schema of the packaged zoos.toml); --zoo names one of them.")
@click.option("--list", "show_list", is_flag=True, help="List all zoos and whether their data is available.")
@click.option("--stages", default=",".join(DEFAULT_STAGES), show_default=True,
              help="Comma-separated stages to run; opt-in methods (" + ", ".join(OPT_IN) + ") only when named.")
@click.option("--root", "--out", "root", type=click.Path(file_okay=False),
              help="Where stores live; the zoo goes to ROOT/<zoo> [default: $ZOO_TWINS_CACHE, else the cache dir]. "
              "--out is the old name of this option.")
@click.option("--models", help="Subset of model ids, e.g. 0-9,12.")
@click.option("--epochs", type=int, help="Override the original training epochs.")
@click.option("--mp-epochs", type=int, help="Override MP fine-tuning epochs.")
@click.option("--mp-levels", help="Override MP sparsity levels, e.g. 0.5,0.9 or 50,90.")
@click.option("--vd-epochs", type=int, help="Override VD training epochs.")
@click.option("--vd-kl", type=click.Choice(VD_KL_OBJECTIVES),
              help="VD KL weighting: elbo (KL / N_train, the default) or original (the original zoos' code's ramp).")
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default="paper", show_default=True,
              help="smoke: 4 models, 2 epochs, a quick end-to-end check.")
@click.option("--device", default="cpu", show_default=True, help="torch device, e.g. cpu or cuda.")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Where dataset files are (default $ZOO_TWINS_DATA).")
@click.option("--resume", is_flag=True, help="Continue an interrupted build; finished models are kept.")
@click.option("--from-original", type=click.Path(exists=True),
              help="Ingest a published original zoo (Ray Tune folder or zip) instead of training it.")
@click.option("--engine", type=click.Choice(sorted(ENGINES)), default="population", show_default=True,
              help="population: many models as one batched computation; reference: one model at a time.")
@click.option("--executor", type=click.Choice(EXECUTORS), default="local", show_default=True,
              help="local: this process; ray: model batches as Ray tasks (pip install 'zoo-twins[ray]').")
@click.option("--address", help="Ray cluster address for --executor ray (default: start a local Ray).")
@click.option("--workers", type=int, default=1, show_default=True,
              help="Local executor: train in this many processes, one engine each (e.g. one per core).")
@click.option("--migrate", is_flag=True,
              help="Convert the store ROOT/<zoo> from an older store schema to the current one (lossless), then stop.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def main(zoo, spec_file, show_list, stages, root, models, epochs, mp_epochs, mp_levels, vd_epochs, vd_kl, preset,
         device, data_dir, resume, from_original, engine, executor, address, workers, migrate, quiet):
    """Build the original population of a zoo and its sparsified twins."""
    with one_line_errors(ValueError):
        if show_list:
            list_zoos(data_dir, spec_file)
            return
        if not zoo:
            raise click.UsageError("--zoo NAME is required (or --list)")
        root = store_root(root)
        check_zoo_name(zoo)
        if migrate:
            report = None if quiet else lambda file: click.echo(f"migrated {file}")
            rewritten = migrate_store(root / zoo, progress=report)
            click.echo(f"{root / zoo}: store schema {SCHEMA_VERSION} ({rewritten} shards rewritten)")
            return
        overrides = dict(PRESETS[preset])
        overrides.update({k: v for k, v in {
            "epochs": epochs, "mp_epochs": mp_epochs, "vd_epochs": vd_epochs, "vd_kl_objective": vd_kl,
            "model_subset": parse_models(models) if models else None,
            "mp_levels": mp_levels.split(",") if mp_levels else None,
        }.items() if v is not None})
        spec = existing_spec(root, zoo, spec_file).with_overrides(**overrides)
        started = time.time()
        with writer_lock(root / spec.name):  # one lock over ingest and build
            if from_original:  # the original stage then finds every ingested model done
                spec, resume = ingest_original(spec, from_original, root).spec, True
            store, _ = build_zoo(spec, root, stages=[s.strip() for s in stages.split(",") if s.strip()],
                                 resume=resume, device=device, data_dir=data_dir, progress=not quiet,
                                 trainer=make_trainer(executor, engine, device, address, workers=workers))
        summary(store, time.time() - started)


if __name__ == "__main__":
    main()
