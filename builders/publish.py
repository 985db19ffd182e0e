"""``zoo-publish``: put a built store on the Hugging Face Hub, or lay it out as a static HTTP mirror.

Both carry exactly the files the manifest lists (plus the models table, the card, croissant.json and
the card's parquet configs), after the store has passed its own sha256 check, so a downloader can
verify what it receives.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import click

from loaders.cache import check_known, is_path, zoo_dir
from zoo_dataset.cli_support import (
    Command,
    NonEmptyPath,
    check_repo_id,
    one_line_errors,
    version_option,
    writable_dir,
)
from zoo_dataset.errors import StoreError
from zoo_dataset.inputs import parse_json, read_regular
from zoo_dataset.store import ZooStore
from zoo_dataset.store.files import atomic_path, atomic_write_text
from zoo_dataset.store.layout_on_disk import MODELS_TABLE
from zoo_dataset.store.lock import writer_lock
from zoo_dataset.store.manifest import MANIFEST
from zoo_dataset.store.paths import check_writable

from .croissant import CROISSANT
from .hub_tables import hub_files
from .stages.card import CARD, write_card

MIRROR_INDEX = "index.json"
MAX_INDEX_BYTES = 16 << 20  # a list of zoo names: kilobytes


def published_files(store: ZooStore) -> list[str]:
    """Paths (relative to the zoo directory) that make up the published store; manifest last."""
    files = [MODELS_TABLE] + [f for f in (CARD, CROISSANT) if (store.zoo_dir / f).exists()]
    files += hub_files(store.zoo_dir)
    for name in store.populations:
        for shard in store.population(name).shards:
            files += [shard.file, shard.states_file]
    return [*files, MANIFEST]


def mirror_index(mirror: Path) -> dict:
    """The mirror's ``index.json`` (``{"zoos": [names]}``; a new mirror has none), checked before the
    store is copied: a damaged index stops the publication with nothing written."""
    path = Path(mirror) / MIRROR_INDEX
    if not path.exists() and not path.is_symlink():
        return {"zoos": []}
    try:
        index = parse_json(read_regular(path, MAX_INDEX_BYTES, "mirror index"), str(path))
    except StoreError:  # not a regular file, too large, not JSON
        index = None
    zoos = index.get("zoos") if isinstance(index, dict) else None
    if not (isinstance(zoos, list) and all(isinstance(zoo, str) for zoo in zoos)):
        raise StoreError(f"the mirror index {path} is corrupt (not {{\"zoos\": [names]}}); "
                         "repair or remove it and publish every zoo of the mirror again")
    return index


def publish_mirror(store: ZooStore, mirror: Path) -> Path:
    """Copy the store to ``mirror/<zoo>/`` (the layout ``zoo-download --source mirror`` reads), under
    that copy's writer lock, and list it in the mirror's index."""
    target = Path(mirror) / store.manifest.zoo
    index = mirror_index(mirror)
    with writer_lock(target):
        check_writable(target)  # the copy's folders, like a store's, may not lead a write elsewhere
        for relative in published_files(store):
            with atomic_path(target / relative) as tmp:
                shutil.copyfile(store.zoo_dir / relative, tmp)
    index["zoos"] = sorted(set(index["zoos"]) | {store.manifest.zoo})
    atomic_write_text(Path(mirror) / MIRROR_INDEX, json.dumps(index, indent=1))
    return target


def publish_hub(store: ZooStore, repo_id: str, private: bool = False) -> str:
    """Upload the store as a Hub dataset repo; returns the commit URL."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi()
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        commit = api.upload_folder(
            folder_path=store.zoo_dir,
            repo_id=repo_id,
            repo_type="dataset",
            allow_patterns=published_files(store),
            commit_message=f"zoo-twins store {store.manifest.zoo}",
        )
    except (HfHubHTTPError, OSError) as exc:  # offline, no token, no rights, network down
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StoreError(f"cannot publish to hf://datasets/{repo_id}: {first}") from None
    return str(getattr(commit, "commit_url", commit))


@click.command(cls=Command, context_settings={"help_option_names": ["-h", "--help"]})
@version_option()
@click.option("--zoo", required=True, help="Zoo name under --root, or the path of a store.")
@click.option(
    "--root",
    type=NonEmptyPath(file_okay=False),
    help="Where stores live [default: $ZOO_TWINS_CACHE, else the cache dir].",
)
@click.option("--repo-id", callback=check_repo_id,
              help="Hub dataset repo to upload to, e.g. ORG/NAME (needs a write token).")
@click.option("--private", is_flag=True, help="Create the Hub repo as private.")
@click.option(
    "--mirror", type=NonEmptyPath(file_okay=False), help="Lay out a static HTTP mirror in this directory."
)
@click.option(
    "--cards-dir",
    type=NonEmptyPath(file_okay=False),
    help="Also write the card to CARDS_DIR/<zoo>/README.md (e.g. dataset_cards).",
)
def main(zoo, root, repo_id, private, mirror, cards_dir):
    """Verify a built store, refresh its dataset card, and publish it."""
    with one_line_errors():
        if not (repo_id or mirror or cards_dir):
            raise click.UsageError("give --repo-id, --mirror and/or --cards-dir")
        for option, path in (("--mirror", mirror), ("--cards-dir", cards_dir)):
            if path:
                writable_dir(path, option)
        directory = zoo_dir(zoo, root)
        check_known(zoo, directory)
        writable_dir(directory, "--zoo" if is_path(zoo) else "--root")  # the card is written into the store
        if mirror:
            mirror_index(Path(mirror))
        with writer_lock(directory):  # the card is written into the store; no build may change it meanwhile
            store = ZooStore(directory)
            if not store.populations:
                raise StoreError(f"{directory} holds no finished shards yet; build it first")
            store.verify()
            write_card(store, Path(cards_dir) if cards_dir else None, repo_id)
            if mirror:
                click.echo(f"mirror: {publish_mirror(store, Path(mirror))}")
            if repo_id:
                click.echo(f"hub: {publish_hub(store, repo_id, private)}")


if __name__ == "__main__":
    main()
