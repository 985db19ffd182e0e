"""``zoo-download``: fetch a published store into the cache (or ``--root``)."""

from __future__ import annotations

import click

from zoo_dataset.cli_support import Command, one_line_errors, version_option, writable_dir
from zoo_dataset.store import ZooStore

from .cache import cache_dir
from .download import download_zoo


@click.command(cls=Command, context_settings={"help_option_names": ["-h", "--help"]})
@version_option()
@click.option("--zoo", required=True, help="Zoo name, e.g. digits_seed.")
@click.option(
    "--source",
    default="hf",
    show_default=True,
    help="hf (Hugging Face Hub), mirror (HTTP mirror) or the path of a local store or mirror.",
)
@click.option("--repo-id", help="Hub dataset repo (default zoo-twins/<zoo>, org from $ZOO_TWINS_HF_ORG).")
@click.option("--url", help="Mirror base URL (default $ZOO_TWINS_MIRROR); files at URL/<zoo>/...")
@click.option("--root", type=click.Path(file_okay=False), help="Where stores go (default: the cache dir).")
@click.option("--populations", help="Comma-separated populations to fetch, e.g. original,vd (default: all).")
@click.option("--revision", help="Hub revision (branch, tag or commit).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def main(zoo, source, repo_id, url, root, populations, revision, quiet):
    """Download a zoo-twins store, verify every shard's sha256, and print where it is."""
    with one_line_errors():
        root = writable_dir(root or cache_dir(), "--root")
        pops = [p.strip() for p in populations.split(",") if p.strip()] if populations else None
        path = download_zoo(
            zoo,
            source,
            repo_id=repo_id,
            url=url,
            root=root,
            populations=pops,
            revision=revision,
            progress=not quiet,
        )
        store = ZooStore(path)
        click.echo(f"{zoo}: {path} (populations: {', '.join(store.populations)})")


if __name__ == "__main__":
    main()
