"""``zoo-export``: one population of a store in another zoo format, for tools that read that format.

``--format smallcnnzoo`` writes the Small CNN Zoo's files (weights.npy, layout.csv, metrics.csv.gz,
a split file), which NFN, NFT, ScaleGMN and neural graphs load (releases/smallcnn_export.py).
"""

from __future__ import annotations

import click

from loaders.resolve import open_store
from releases.smallcnn_export import Selection, export_smallcnnzoo
from zoo_dataset.cli_support import Command, NonEmptyPath, one_line_errors, version_option, writable_dir
from zoo_dataset.errors import ZooSpecError

FORMATS = {"smallcnnzoo": export_smallcnnzoo}


def _selection(ctx: click.Context, param: click.Parameter, value: str) -> Selection:
    try:
        return Selection.parse(value)
    except ZooSpecError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command(cls=Command, context_settings={"help_option_names": ["-h", "--help"]})
@version_option()
@click.option("--zoo", required=True, help="Zoo name (a store under ROOT) or a store directory.")
@click.option("--root", type=NonEmptyPath(file_okay=False),
              help="Where stores live [default: $ZOO_TWINS_CACHE, else the cache dir].")
@click.option("--population", "selection", required=True, callback=_selection,
              help="original, vd, or a population with levels at one of them: mp@0.5 (or mp@50).")
@click.option("--format", "fmt", type=click.Choice(sorted(FORMATS)), default="smallcnnzoo", show_default=True,
              help="smallcnnzoo: weights.npy, layout.csv, metrics.csv.gz and a split file.")
@click.option("--out", required=True, type=NonEmptyPath(file_okay=False), help="Folder to write the files into.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def main(zoo: str, root: str | None, selection: Selection, fmt: str, out: str, quiet: bool) -> None:
    """Write one population of a zoo store in another zoo format."""
    with one_line_errors():
        store = open_store(zoo, root)
        folder = FORMATS[fmt](store, selection, writable_dir(out, "--out"), progress=not quiet)
        click.echo(f"{store.manifest.zoo} {selection}: {fmt} files in {folder}")


if __name__ == "__main__":
    main()
