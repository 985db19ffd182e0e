"""``zoo-report``: the paper's tables and figures for one built or downloaded zoo."""

from __future__ import annotations

import click

from loaders.resolve import open_store
from zoo_dataset.cli_support import (
    Command,
    NonEmptyPath,
    check_percentage,
    one_line_errors,
    version_option,
    writable_dir,
)
from zoo_dataset.specs import parse_level

from .report import build_report, summary, write_report
from .tables import DEFAULT_SPARSITY


@click.command(cls=Command, context_settings={"help_option_names": ["-h", "--help"]})
@version_option()
@click.option("--zoo", required=True, help="Zoo name (a store under ROOT) or a store directory.")
@click.option(
    "--root",
    type=NonEmptyPath(file_okay=False),
    help="Where stores live [default: $ZOO_TWINS_CACHE, else the cache dir].",
)
@click.option(
    "--out", type=NonEmptyPath(file_okay=False), help="Output directory [default: ./<zoo>-report]."
)
@click.option(
    "--sparsity",
    type=float,
    default=DEFAULT_SPARSITY,
    show_default=True,
    callback=check_percentage,
    help="Sparsity at which twins are compared with originals (Tables 1, 2, 9); 0.8 or 80.",
)
def main(zoo: str, root: str | None, out: str | None, sparsity: float) -> None:
    """Write markdown tables, CSVs and PNG figures of a zoo store and print a summary."""
    with one_line_errors():
        store = open_store(zoo, root)
        out_dir = writable_dir(out or f"{store.manifest.zoo}-report", "--out")
        report = build_report(store, parse_level(sparsity))
        path = write_report(report, out_dir)
        click.echo(summary(report))
        click.echo(f"\nreport: {path}")


if __name__ == "__main__":
    main()
