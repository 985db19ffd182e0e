"""Bad input, tool by tool: one ``error:`` line, exit 2 for usage and 1 for runtime errors, and
nothing created before the input is validated. No test here trains: validation alone is tested
(stores come from the shared fixtures and are copied before they are damaged)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import sys
import types

import numpy as np
import pytest
import torch
from _fixtures_loader import shared_loader_store
from _inputs import hang_guard, special_file
from click.testing import CliRunner

from analysis import cli as report_cli
from analysis.bench import cli as bench_cli
from analysis.hyperrep import cli as hyperrep_cli
from builders import cli as build_cli
from builders import publish
from loaders import ZooTrajectoryDataset, ZooTwinDataset, download
from loaders import cli as download_cli
from releases import network
from zoo_dataset import __version__
from zoo_dataset.cli_support import describe_os_error, one_line_errors, writable_dir
from zoo_dataset.counter_rng import GENERATOR
from zoo_dataset.errors import StoreError
from zoo_dataset.store import StoreWriter, ZooStore
from zoo_dataset.store.layout_on_disk import MODELS_TABLE

ZOO = "digits_seed"
TOOLS = {"zoo-build": build_cli.main, "zoo-download": download_cli.main, "zoo-publish": publish.main,
         "zoo-report": report_cli.main, "zoo-hyperrep": hyperrep_cli.main, "zoo-bench": bench_cli.main}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The shared loader store (original, mp, vd of 3 models)."""
    return shared_loader_store(tmp_path_factory)


@pytest.fixture
def copy(built, tmp_path):
    """A private copy of the built store (``tmp/stores/digits_seed``) to damage."""
    target = tmp_path / "stores" / ZOO
    shutil.copytree(built, target)
    return target


def one_error_line(result, code: int) -> str:
    """The single ``error:`` line of a failed command (and its exit code)."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def snapshot(folder) -> dict:
    """Every file under ``folder`` and its bytes: what a refused command must leave as it was."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def invoke(tool, *args):
    return CliRunner().invoke(TOOLS[tool], [str(a) for a in args], prog_name=tool)


# ------------------------------------------------------------------ conventions
@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_every_tool_has_version(tool):
    result = invoke(tool, "--version")
    assert result.exit_code == 0 and result.output.strip().endswith(f"(zoo-twins) {__version__}")


def test_missing_zoo_is_one_usage_line(tmp_path):
    line = one_error_line(invoke("zoo-build", "--out", tmp_path), 2)
    assert "--zoo NAME is required" in line and "--help" in line


@pytest.mark.parametrize(("args", "message"), [([], "Missing command. Commands: eval, train, zero-shot."),
                                             (["bogus"], "No such command 'bogus'. Commands: eval, train, zero-shot.")])
def test_a_group_without_or_with_an_unknown_command_is_one_usage_line(args, message):
    line = one_error_line(invoke("zoo-hyperrep", *args), 2)
    assert message in line and "zoo-hyperrep --help" in line


def test_a_message_of_several_lines_is_printed_as_one(capsys):
    with pytest.raises(SystemExit) as exit_info, one_line_errors():
        raise StoreError("first line\n  second line\n")
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == "error: first line second line\n"


# the commands a --root or another folder option reaches, each with that option empty: the empty path
# is refused (pathlib reads '' as the working directory, so builds and downloads landed there)
EMPTY_PATHS = [
    ("zoo-build", ["--zoo", ZOO, "--root", "", "--models", "0", "--epochs", "1", "--stages", "original", "--quiet"]),
    ("zoo-build", ["--zoo", ZOO, "--data-dir", "", "--root", "r", "--quiet"]),
    ("zoo-build", ["--spec", "", "--list"]),
    ("zoo-download", ["--zoo", ZOO, "--source", "{store}", "--root", "", "--quiet"]),
    ("zoo-publish", ["--zoo", ZOO, "--root", "", "--mirror", "m"]),
    ("zoo-publish", ["--zoo", "{store}", "--mirror", ""]),
    ("zoo-report", ["--zoo", ZOO, "--root", ""]),
    ("zoo-report", ["--zoo", "{store}", "--out", ""]),
    ("zoo-hyperrep", ["train", "--zoo", ZOO, "--root", "", "--epochs", "1"]),
    ("zoo-hyperrep", ["eval", "--zoo", ZOO, "--root", ""]),
    ("zoo-bench", ["--zoo", ZOO, "--root", ""]),
    ("zoo-bench", ["--zoo", "{store}", "--out", ""]),
    ("zoo-bench", ["--zoo", "{store}", "--split", ""]),
]


@pytest.mark.parametrize(("tool", "args"), EMPTY_PATHS)
def test_an_empty_path_is_refused_and_nothing_lands_in_the_working_directory(built, tmp_path, monkeypatch, tool,
                                                                             args):
    monkeypatch.chdir(tmp_path)
    line = one_error_line(invoke(tool, *(a.format(store=built) for a in args)), 2)
    assert "empty path" in line
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ zoo-build: refused before anything is made
@pytest.mark.parametrize(("args", "message"), [
    (["--mp-levels", "0.5,0.5"], "given twice"),
    (["--mp-levels", "50,0.5"], "given twice"),
    (["--mp-levels", "a,b"], "not a list of numbers"),
    (["--device", "bogus"], "not a torch device"),
    (["--device", "meta"], "cpu, cuda or mps"),
    (["--stages", ""], "no stage given"),
    (["--stages", " , "], "no stage given"),
    (["--models", "5-2"], "runs backwards"),
    (["--models", ","], "selects no model"),
    (["--models", "0-99999"], "out of range"),
    (["--models", "0-99999999999"], "out of range"),  # once listed before any check: MemoryError
    (["--epochs", "-3"], "--epochs"),
    (["--epochs", "0"], "--epochs"),
    (["--mp-epochs", "-1"], "--mp-epochs"),
    (["--vd-epochs", "0"], "--vd-epochs"),
    (["--epochs", "1000000000000"], "10000"),
    (["--epochs", "2", "--from-original", "."], "--epochs cannot be combined with --from-original"),
    (["--address", "ray://head:10001"], "--address is for --executor ray"),
])
def test_build_refuses_nonsense_before_creating_anything(args, message, tmp_path):
    out = tmp_path / "out"
    line = one_error_line(invoke("zoo-build", "--zoo", ZOO, *args, "--out", out, "--quiet"), 2)
    assert message in line
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_build_on_cuda_without_a_gpu_leaves_no_store(tmp_path):
    out = tmp_path / "out"
    line = one_error_line(invoke("zoo-build", "--zoo", ZOO, "--device", "cuda", "--out", out), 2)
    assert "sees no CUDA device" in line and not out.exists()


def test_out_under_a_file_is_one_usage_line(tmp_path):
    (tmp_path / "file").write_text("x")
    line = one_error_line(invoke("zoo-build", "--zoo", ZOO, "--out", tmp_path / "file" / "stores"), 2)
    assert "lies under the file" in line and "'--root'" in line


def test_read_only_destination_is_named(tmp_path, monkeypatch):
    """A read-only mount cannot be made in a test; os.access reports it as it would there."""
    monkeypatch.setattr("os.access", lambda path, mode: False)
    with pytest.raises(Exception, match="not writable|read-only") as info:
        writable_dir(tmp_path / "new", "--out")
    assert "--out" in info.value.format_message() or "--out" in str(info.value.param_hint)


@pytest.mark.parametrize("content", [b"[]", b"null", b"\x89PNG\r\n\x1a\n\x00\xff"])
def test_build_on_a_damaged_manifest_is_one_runtime_line(copy, content):
    (copy / "manifest.json").write_bytes(content)
    line = one_error_line(invoke("zoo-build", "--zoo", ZOO, "--out", copy.parent, "--stages", "mp", "--quiet"), 1)
    assert "manifest.json is corrupt" in line


def test_resumed_build_with_nothing_to_do_says_so(built, tmp_path):
    """Every unit is stored: nothing trains (the test is fast) and the summary says so."""
    spec = ZooStore(built).spec
    shutil.copytree(built, tmp_path / ZOO)
    models = ",".join(str(m) for m in spec.model_subset)
    args = ["--zoo", ZOO, "--out", tmp_path, "--models", models, "--epochs", spec.epochs, "--mp-epochs",
            spec.mp.epochs, "--mp-levels", ",".join(map(str, spec.mp.levels)), "--vd-epochs", spec.vd.epochs,
            "--resume", "--quiet"]  # every stage, the card included (it is rewritten, which trains nothing)
    result = invoke("zoo-build", *args)
    assert result.exit_code == 0, result.output
    assert "nothing to train" in result.output and "built in" not in result.output


def test_a_build_over_a_finished_one_without_resume_is_a_usage_error(built, tmp_path):
    """The store holds this very build: the command line must change (add --resume), so exit 2."""
    spec = ZooStore(built).spec
    shutil.copytree(built, tmp_path / ZOO)
    before = (tmp_path / ZOO / "manifest.json").read_bytes()
    models = ",".join(str(m) for m in spec.model_subset)
    line = one_error_line(invoke("zoo-build", "--zoo", ZOO, "--out", tmp_path, "--models", models, "--epochs",
                                 spec.epochs, "--stages", "original", "--quiet"), 2)
    assert "already holds a build; pass --resume" in line
    assert (tmp_path / ZOO / "manifest.json").read_bytes() == before


@pytest.fixture
def read_only(monkeypatch):
    """Make folders read-only as a read-only mount would (root ignores permission bits, and a test
    cannot mount): ``os.access`` and ``os.statvfs`` answer for paths under the returned folders."""
    folders: list = []

    def under(path) -> bool:
        return any(str(path) == str(f) or str(path).startswith(f"{f}/") for f in folders)

    real_access, real_statvfs = os.access, os.statvfs
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if under(path) and mode & os.W_OK
                        else real_access(path, mode, **kw))
    monkeypatch.setattr(os, "statvfs", lambda path: types.SimpleNamespace(f_flag=os.ST_RDONLY) if under(path)
                        else real_statvfs(path))
    return folders


# every command that writes under a read-only folder: the same exit code (2, choose another folder),
# before anything is written
READ_ONLY = [
    ("zoo-build", ["--zoo", ZOO, "--root", "{ro}", "--models", "0", "--epochs", "1", "--stages", "original"]),
    ("zoo-build", ["--zoo", ZOO, "--root", "{ro}", "--migrate"]),
    ("zoo-publish", ["--zoo", ZOO, "--root", "{ro}", "--cards-dir", "{tmp}/cards"]),
    ("zoo-publish", ["--zoo", "{ro}/" + ZOO, "--mirror", "{tmp}/mirror"]),
    ("zoo-download", ["--zoo", ZOO, "--source", "{store}", "--root", "{ro}", "--quiet"]),
    ("zoo-report", ["--zoo", "{store}", "--out", "{ro}/report"]),
    ("zoo-hyperrep", ["train", "--zoo", "{store}", "--out", "{ro}/ae.pt", "--epochs", "1"]),
    ("zoo-bench", ["--zoo", "{store}", "--out", "{ro}/bench", "--no-store"]),
    ("zoo-bench", ["--zoo", "{ro}/" + ZOO, "--out", "{tmp}/bench"]),
]


@pytest.mark.parametrize(("tool", "args"), READ_ONLY)
def test_a_read_only_destination_is_the_same_usage_error_from_every_command(built, copy, tmp_path, read_only, tool,
                                                                            args):
    read_only.append(copy.parent)
    before = snapshot(copy.parent)
    args = [a.format(ro=copy.parent, tmp=tmp_path, store=built) for a in args]
    line = one_error_line(invoke(tool, *args), 2)
    assert "read-only file system" in line
    assert snapshot(copy.parent) == before


# ------------------------------------------------------------------ runtime errors are one line too
def test_disk_full_is_named_and_never_names_a_removed_temp_file(tmp_path):
    exc = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "original" / "shard_000.h5.4242.tmp"))
    line = describe_os_error(exc)
    assert line.startswith("disk full") and "shard_000.h5;" in line and ".tmp" not in line
    h5py_style = OSError("Can't write data (file write failed: errno = 28, error message = 'No space left')")
    assert describe_os_error(h5py_style).startswith("disk full")


def test_disk_full_while_packing_leaves_the_store_usable(tmp_path, monkeypatch, capsys):
    """ENOSPC while a shard is packed: one "disk full" line, the manifest and the staged units are
    untouched, and the same packing succeeds once there is space."""
    import pandas as pd

    from zoo_dataset.model_layout import layout_for
    from zoo_dataset.specs import get_spec
    from zoo_dataset.training import JobResult, UnitKey

    spec = get_spec(ZOO).with_overrides(model_subset=[0, 1], epochs=1, models_per_shard=2)
    layout = layout_for(spec)
    writer = StoreWriter.open(tmp_path, spec, layout, resume=False)
    population = writer.population("original", [0.0], 1, ["weights"], GENERATOR)
    rng = np.random.default_rng(0)
    results = [JobResult(UnitKey(m), rng.standard_normal((2, layout.num_params)).astype(np.float32),
                         [{"epoch": e, "test_acc": 0.5} for e in range(2)]) for m in (0, 1)]
    population.stage(results[0])
    manifest = (writer.zoo_dir / "manifest.json").read_text()

    def full(self, path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(pd.DataFrame, "to_parquet", full)
    with pytest.raises(SystemExit) as exit_info, one_line_errors():
        population.stage(results[1])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: disk full") and ".tmp" not in err and "\n" not in err
    assert (writer.zoo_dir / "manifest.json").read_text() == manifest
    assert not list(writer.zoo_dir.rglob("*.tmp"))
    monkeypatch.undo()
    resumed = StoreWriter.open(tmp_path, spec, layout, resume=True).population("original", [0.0], 1, ["weights"],
                                                                               GENERATOR)
    assert resumed.pack_ready() == [0]
    ZooStore(writer.zoo_dir).verify()


@pytest.mark.parametrize("content", [b"[]", b"null", b"\xff\xfe\x00binary"])
def test_loader_on_a_damaged_manifest_is_a_store_error(copy, content):
    (copy / "manifest.json").write_bytes(content)
    with pytest.raises(StoreError, match="manifest.json is corrupt"):
        ZooTwinDataset(copy, method="mp", split=None)


@pytest.mark.parametrize("damage", ["missing", "garbage"])
@pytest.mark.parametrize("table", ["models", "states"])
def test_loader_on_a_missing_or_corrupt_table_is_a_store_error(copy, damage, table):
    manifest = json.loads((copy / "manifest.json").read_text())
    path = copy / (MODELS_TABLE if table == "models" else manifest["populations"]["vd"]["shards"][0]["states_file"])
    if damage == "missing":
        path.unlink()
    else:
        path.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(StoreError, match="is missing|unreadable|checksum mismatch"):
        ZooTwinDataset(copy, method="vd", split=None)


def test_unreadable_chunk_through_the_datasets_is_a_store_error(copy):
    ds = ZooTrajectoryDataset(copy, method="vd", split=None)
    shard = copy / ds.store.population("vd").shards[0].file
    ds.store.close()
    data = bytearray(shard.read_bytes())
    start = len(data) // 4  # past the superblock and object headers: compressed chunks
    data[start:-4096] = bytes(len(data) - 4096 - start)
    shard.write_bytes(bytes(data))
    ds = ZooTrajectoryDataset(copy, method="vd", split=None)
    with pytest.raises(StoreError, match="is corrupt"):
        for i in range(len(ds)):
            ds[i]


@pytest.mark.parametrize("epoch", [True, 1.0, "1"])
def test_epoch_must_be_an_int(built, epoch):
    with pytest.raises(TypeError, match="epoch must be an int"):
        ZooTwinDataset(built, method="mp", split=None, epoch=epoch)


# ------------------------------------------------------------------ zoo-download
def test_download_of_a_not_url_is_one_usage_line(tmp_path):
    line = one_error_line(invoke("zoo-download", "--zoo", ZOO, "--source", "mirror", "--url", "not a url",
                                 "--root", tmp_path / "r", "--quiet"), 2)
    assert "not an http(s) URL" in line and not (tmp_path / "r").exists()


def test_download_whose_source_is_its_own_target(copy):
    line = one_error_line(invoke("zoo-download", "--zoo", ZOO, "--source", copy, "--root", copy.parent), 2)
    assert "own target" in line
    ZooStore(copy).verify()  # untouched


@pytest.mark.parametrize("content", [b"[]", b"null", b"\x89\x00\xff", b"[" * 100_000 + b"]" * 100_000])
def test_download_of_a_damaged_manifest_names_the_source_not_a_temp_folder(copy, tmp_path, content):
    (copy / "manifest.json").write_bytes(content)
    line = one_error_line(invoke("zoo-download", "--zoo", ZOO, "--source", copy, "--root", tmp_path / "r"), 1)
    assert "corrupt" in line and str(copy) in line and "tmp" not in line.replace(str(copy), "")


def test_download_that_keeps_being_cut_names_the_cause(tmp_path, monkeypatch):
    def cut(self, *args):
        raise network.CutTransfer("the connection closed before the whole file arrived")

    monkeypatch.setattr(download.HttpFetcher, "_transfer", cut)
    monkeypatch.setattr(network, "BACKOFF_S", 0.0)
    with pytest.raises(StoreError) as info:
        download.HttpFetcher("http://127.0.0.1:9/zoo").fetch("manifest.json", tmp_path / "m", 1 << 20)
    assert str(info.value).startswith("http://127.0.0.1:9/zoo/manifest.json failed after 4 tries (the connection "
                                      "closed before the whole file arrived)")


def test_download_to_a_root_under_a_file(tmp_path, copy):
    (tmp_path / "file").write_text("x")
    line = one_error_line(invoke("zoo-download", "--zoo", ZOO, "--source", copy, "--root", tmp_path / "file" / "r"), 2)
    assert "'--root'" in line


@pytest.mark.parametrize(("args", "message"), [
    (["--source", "{store}", "--populations", ",,,"], "names no population"),
    (["--source", "{store}", "--populations", ""], "names no population"),
    (["--source", "hub", "--repo-id", "../../x y"], "is not a Hub repo id"),
    (["--source", "modelzoos", "--populations", "mp"], "modelzoos.cc publishes the original, vd population(s)"),
    (["--source", "{store}", "--populations", "mp_local"], "has no mp_local population"),
])
def test_download_refuses_a_selection_the_source_cannot_meet(built, tmp_path, args, message):
    root = tmp_path / "r"
    line = one_error_line(invoke("zoo-download", "--zoo", "mnist_seed" if "modelzoos" in args else ZOO,
                                 *(a.format(store=built) for a in args), "--root", root, "--quiet"), 2)
    assert message in line
    # no store; a download's staging folder (.<zoo>.download, resumed by the next run) may remain
    assert not root.exists() or [p for p in root.iterdir() if not p.name.startswith(".")] == []


# ------------------------------------------------------------------ zoo-publish
@pytest.mark.parametrize("content", [b"[]", b"null", b"\x00\x01binary"])
def test_publish_of_a_damaged_manifest_is_one_runtime_line(copy, tmp_path, content):
    (copy / "manifest.json").write_bytes(content)
    line = one_error_line(invoke("zoo-publish", "--zoo", ZOO, "--root", copy.parent, "--mirror", tmp_path / "m"), 1)
    assert "manifest.json is corrupt" in line


def test_publish_to_the_hub_offline_is_one_runtime_line(copy):
    """The suite runs with HF_HUB_OFFLINE=1 (conftest): the Hub is unreachable, as on a plane."""
    line = one_error_line(invoke("zoo-publish", "--zoo", ZOO, "--root", copy.parent, "--repo-id", "org/name"), 1)
    assert "cannot publish to hf://datasets/org/name" in line


@pytest.mark.parametrize("content", [b"{", b"[]", b'{"zoos": 5}', b'{"zoos": [1]}', b"\xff\xfe",
                                     b"[" * 100_000 + b"]" * 100_000, "fifo", "/dev/zero"])
def test_publish_to_a_mirror_with_a_damaged_index_writes_nothing(copy, tmp_path, content):
    mirror = tmp_path / "m"
    mirror.mkdir()
    if isinstance(content, str):  # not a regular file: once a hang (FIFO) or an endless read
        special_file(mirror / "index.json", content)
        content = None
    else:
        (mirror / "index.json").write_bytes(content)
    before = snapshot(copy)
    with hang_guard():
        line = one_error_line(invoke("zoo-publish", "--zoo", ZOO, "--root", copy.parent, "--mirror", mirror), 1)
    assert "mirror index" in line and "is corrupt" in line
    assert snapshot(mirror) == ({"index.json": content} if content else {}) and snapshot(copy) == before


def test_publish_refuses_a_mirror_copy_whose_folder_links_outside(copy, tmp_path):
    """Writers follow the readers' link rule (issue 25.6): a linked vd/ in the mirror's copy is not written through."""
    mirror, outside = tmp_path / "m", tmp_path / "outside"
    outside.mkdir()
    (mirror / ZOO).mkdir(parents=True)
    (mirror / ZOO / "vd").symlink_to(outside)
    line = one_error_line(invoke("zoo-publish", "--zoo", ZOO, "--root", copy.parent, "--mirror", mirror), 1)
    assert "outside the store" in line
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize("repo_id", ["../../x y", "a/b/c", ""])
def test_publish_to_a_repo_id_the_hub_refuses_is_a_usage_line_before_any_work(copy, repo_id):
    before = snapshot(copy)
    line = one_error_line(invoke("zoo-publish", "--zoo", ZOO, "--root", copy.parent, "--repo-id", repo_id), 2)
    assert "is not a Hub repo id" in line and "--repo-id" in line
    assert snapshot(copy) == before  # no card written


@pytest.mark.parametrize("option", ["--mirror", "--cards-dir"])
def test_publish_to_a_folder_under_a_file(copy, tmp_path, option):
    (tmp_path / "file").write_text("x")
    args = ["--zoo", ZOO, "--root", copy.parent, option, tmp_path / "file" / "x"]
    line = one_error_line(invoke("zoo-publish", *args), 2)
    assert f"'{option}'" in line


# ------------------------------------------------------------------ zoo-report and zoo-hyperrep
@pytest.mark.parametrize("sparsity", ["nan", "-5", "1000", "inf"])
def test_report_refuses_a_sparsity_outside_0_100(built, tmp_path, sparsity):
    line = one_error_line(invoke("zoo-report", "--zoo", built, "--out", tmp_path / "r", "--sparsity", sparsity), 2)
    assert "--sparsity" in line and not (tmp_path / "r").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--batch-size", "0"], "--batch-size"),
    (["--epochs", "0"], "--epochs"),
    (["--epochs", "-1"], "--epochs"),
    (["--device", "bogus"], "not a torch device"),
    (["--beta", "nan", "--epochs", "1"], "--beta"),  # once trained on NaN losses, then a 464-line traceback
    (["--beta", "inf", "--epochs", "1"], "--beta"),
    (["--beta", "1.5", "--epochs", "1"], "--beta"),
    (["--seed", str(2**70), "--epochs", "1"], "--seed"),
    (["--seed", "-1", "--epochs", "1"], "--seed"),
])
def test_hyperrep_train_refuses_nonsense(built, tmp_path, args, message):
    line = one_error_line(invoke("zoo-hyperrep", "train", "--zoo", built, "--out", tmp_path / "ae.pt", *args), 2)
    assert message in line and "zoo-hyperrep train --help" in line and not (tmp_path / "ae.pt").exists()


@pytest.mark.parametrize("content", [b"garbage", b"PK\x03\x04 not a zip"])
def test_hyperrep_eval_on_a_garbage_checkpoint(built, tmp_path, content):
    (tmp_path / "ae.pt").write_bytes(content)
    line = one_error_line(invoke("zoo-hyperrep", "eval", "--zoo", built, "--checkpoint", tmp_path / "ae.pt"), 1)
    assert "is not a zoo-hyperrep checkpoint" in line


def test_hyperrep_eval_on_a_foreign_torch_file(built, tmp_path):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    line = one_error_line(invoke("zoo-hyperrep", "eval", "--zoo", built, "--checkpoint", tmp_path / "other.pt"), 1)
    assert "is not a zoo-hyperrep checkpoint" in line


def test_python_entry_points_exit_with_the_documented_codes(tmp_path):
    """The console scripts run the same click commands: exit 2 for usage, as CliRunner saw above."""
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "builders.cli", "--zoo", ZOO, "--stages", ""],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1
