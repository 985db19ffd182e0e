"""``zoo-download``: fetch a published store (or the published Model Zoos, converted) into the store root."""

from __future__ import annotations

import click

from zoo_dataset.cli_support import (
    Command,
    NonEmptyPath,
    check_repo_id,
    one_line_errors,
    version_option,
    writable_dir,
)
from zoo_dataset.errors import ZooSpecError
from zoo_dataset.store import ZooStore

from .cache import store_root
from .download import download_zoo
from .sources import SOURCE_ENV


def parse_files(values: tuple[str, ...]) -> dict[str, str]:
    """``("original=a.zip", "vd=b.zip")`` -> ``{"original": "a.zip", "vd": "b.zip"}``."""
    files = {}
    for value in values:
        population, sep, name = value.partition("=")
        if not sep or not population.strip() or not name.strip():
            raise ZooSpecError(f"--file {value!r} is not POPULATION=NAME, e.g. original=mnist_seed.zip")
        if population.strip() in files:
            raise ZooSpecError(f"--file names the {population.strip()} population twice")
        files[population.strip()] = name.strip()
    return files


def parse_populations(ctx: click.Context, param: click.Parameter, text: str | None) -> list[str] | None:
    """``"original,vd"`` -> ``["original", "vd"]``; None (all published) when not given, refused when it names none."""
    if text is None:
        return None
    populations = [p.strip() for p in text.split(",") if p.strip()]
    if not populations:
        raise click.BadParameter(f"{text!r} names no population; give e.g. original,vd or leave it out")
    return populations


@click.command(cls=Command, context_settings={"help_option_names": ["-h", "--help"]})
@version_option()
@click.option("--zoo", required=True, help="Zoo name, e.g. mnist_seed.")
@click.option(
    "--source",
    help=f"hub (Hugging Face Hub), modelzoos (the published Model Zoos on Zenodo, converted), mirror, "
    f"a mirror URL, or the path of a local store or mirror [default: ${SOURCE_ENV}, else hub].",
)
@click.option("--repo-id", callback=check_repo_id,
              help="Hub dataset repo (default zoo-twins/<zoo>, org from $ZOO_TWINS_HF_ORG).")
@click.option("--url", help="Mirror base URL for --source mirror (default $ZOO_TWINS_MIRROR); files at URL/<zoo>/...")
@click.option("--root", type=NonEmptyPath(file_okay=False),
              help="Where stores live [default: $ZOO_TWINS_CACHE, else the cache dir].")
@click.option("--populations", callback=parse_populations,
              help="Comma-separated populations to fetch, e.g. original,vd (default: all published).")
@click.option("--revision", help="Hub: a branch, tag or commit. modelzoos: a Zenodo version id (e.g. 6632087) "
              "for the original population, or POPULATION=ID,... [default: the latest version].")
@click.option("--file", "files", multiple=True, metavar="POPULATION=NAME",
              help="modelzoos: the Zenodo zip of a population where its record holds several.")
@click.option("--verify", is_flag=True,
              help="Then check the whole store as ZooStore.verify() does (every chunk stored, every table's rows): "
                   "do this before reading shards with another library, which would serve zeros for a lost chunk.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def main(zoo, source, repo_id, url, root, populations, revision, files, verify, quiet):
    """Download a zoo-twins store, verify every file's checksum, and print where it is."""
    with one_line_errors():
        root = writable_dir(store_root(root), "--root")
        path = download_zoo(
            zoo,
            source,
            repo_id=repo_id,
            url=url,
            root=root,
            populations=populations,
            revision=revision,
            files=parse_files(files),
            progress=not quiet,
        )
        store = ZooStore(path)
        if verify:
            store.verify()
        click.echo(f"{zoo}: {path} (populations: {', '.join(store.populations)})")


if __name__ == "__main__":
    main()
