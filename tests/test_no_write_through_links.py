"""No writer opens a path that is a symbolic link: the writer lock, a download's staged ``.part``
file, the temporaries of atomic writes, report outputs, and a store folder (a store's, a mirror's, a
card copy's) that links elsewhere. A link planted there never gets its target written, truncated or
created; the command is refused in one line or replaces the link."""

from __future__ import annotations

import os
import shutil

import pytest
from _fixtures_loader import shared_loader_store
from click.testing import CliRunner

from analysis import cli as report_cli
from builders import publish
from loaders.download import download_zoo
from zoo_dataset.errors import StoreError
from zoo_dataset.store import ZooStore
from zoo_dataset.store.files import atomic_write_text, open_for_writing
from zoo_dataset.store.lock import writer_lock

ZOO = "digits_seed"
PRECIOUS = b"precious: must survive every writer\n"


@pytest.fixture
def store(tmp_path_factory, tmp_path):
    copy = tmp_path / "root" / ZOO
    shutil.copytree(shared_loader_store(tmp_path_factory), copy)
    return copy


@pytest.fixture
def victim(tmp_path):
    path = tmp_path / "outside" / "precious.txt"
    path.parent.mkdir()
    path.write_bytes(PRECIOUS)
    return path


def one_line(result) -> str:
    assert result.exit_code == 1, result.output
    assert result.output.count("\n") == 1, result.output
    return result.output


def test_a_lock_that_is_a_link_is_refused_and_its_target_left_alone(store, victim):
    """``ln -s ~/precious.txt ROOT/.<zoo>.lock`` once had the lock's JSON written into the target."""
    (store.parent / f".{ZOO}.lock").symlink_to(victim)
    with pytest.raises(StoreError, match="symbolic link; the toolkit never writes through a link"), writer_lock(store):
        pass
    output = one_line(CliRunner().invoke(publish.main, ["--zoo", str(store), "--cards-dir", str(store.parent / "c")]))
    assert "never writes through a link" in output
    assert victim.read_bytes() == PRECIOUS


def test_a_dangling_lock_link_creates_nothing_outside(store, tmp_path):
    target = tmp_path / "outside" / "created-by-the-lock"
    target.parent.mkdir()
    (store.parent / f".{ZOO}.lock").symlink_to(target)
    with pytest.raises(StoreError, match="never writes through a link"), writer_lock(store):
        pass
    assert not target.exists()


def test_a_staged_part_file_that_is_a_link_is_never_written(store, victim, tmp_path):
    """``ln -s ~/victim DL/.<zoo>.download/mp/shard-00000.h5.part`` once got the shard written into it."""
    root = tmp_path / "downloads"
    part = root / f".{ZOO}.download" / "mp" / "shard-00000.h5.part"
    part.parent.mkdir(parents=True)
    part.symlink_to(victim)
    with pytest.raises(StoreError, match="never writes through a link"):
        download_zoo(ZOO, str(store), root=root, progress=False)
    assert victim.read_bytes() == PRECIOUS
    assert download_zoo(ZOO, str(store), root=root, progress=False) == root / ZOO  # the link was removed: resumes
    ZooStore(root / ZOO).verify()


def test_an_atomic_write_never_writes_through_a_link_at_its_temporary_or_final_name(tmp_path, victim):
    final = tmp_path / "manifest.json"
    (tmp_path / f"manifest.json.{os.getpid()}.tmp").symlink_to(victim)  # the temporary's name, planted
    atomic_write_text(final, "{}")
    assert final.read_text() == "{}" and not final.is_symlink()
    final.unlink()
    final.symlink_to(victim)  # a link at the final name is replaced, not written through
    atomic_write_text(final, "[]")
    assert final.read_text() == "[]" and not final.is_symlink()
    assert victim.read_bytes() == PRECIOUS


@pytest.mark.parametrize("append", [False, True])
def test_open_for_writing_refuses_links_and_non_files(tmp_path, victim, append):
    link = tmp_path / "link"
    link.symlink_to(victim)
    with pytest.raises(StoreError, match="never writes through a link"):
        open_for_writing(link, append)
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(StoreError, match="never writes through a link"):
        open_for_writing(tmp_path / "dangling", append)
    assert not (tmp_path / "nowhere").exists() and victim.read_bytes() == PRECIOUS
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(OSError):  # no reader: refused at once (non-blocking), never a hang
        open_for_writing(tmp_path / "fifo", append)


@pytest.mark.parametrize("option", ["--mirror", "--cards-dir"])
def test_a_mirror_or_card_folder_that_links_outside_is_refused_before_anything_is_written(store, tmp_path, option):
    """``--mirror M`` / ``--cards-dir D`` whose ``<zoo>`` folder links outside once wrote into the
    link's target (as a documented rule): no writer writes through a linked store folder."""
    folder, outside = tmp_path / "published", tmp_path / "outside-folder"
    folder.mkdir()
    outside.mkdir()
    (folder / ZOO).symlink_to(outside, target_is_directory=True)
    output = one_line(CliRunner().invoke(publish.main, ["--zoo", str(store), option, str(folder)]))
    assert "writers never write through a linked store folder" in output
    assert not any(outside.iterdir())
    assert not (store / "README.md").exists()  # refused before the card was written into the store


def test_a_store_folder_that_is_a_link_is_refused_by_writers_read_by_readers(store, tmp_path):
    linked = tmp_path / "other-root" / ZOO
    linked.parent.mkdir()
    linked.symlink_to(store, target_is_directory=True)
    with pytest.raises(StoreError, match="writers never write through a linked store folder"), writer_lock(linked):
        pass
    assert not (linked.parent / f".{ZOO}.lock").exists() and not (store.parent / f".{ZOO}.lock").exists()
    assert ZooStore(linked).populations == ZooStore(store).populations


def test_report_outputs_replace_links_instead_of_writing_through_them(store, tmp_path, victim):
    out = tmp_path / "report"
    out.mkdir()
    (out / "report.md").symlink_to(victim)
    result = CliRunner().invoke(report_cli.main, ["--zoo", str(store), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert not (out / "report.md").is_symlink() and (out / "report.md").read_text().startswith("# Zoo report")
    assert victim.read_bytes() == PRECIOUS
