"""Files a user names are read only if they are regular files, never past a size bound, and their
contents are checked before use: spec files, zoo-hyperrep checkpoints, standardisation statistics,
dataset files. A FIFO once hung these commands and /dev/zero grew them without bound."""

from __future__ import annotations

import gzip
import json

import pytest
import torch
from _inputs import SPECIAL, hang_guard, special_file
from click.testing import CliRunner

from analysis.hyperrep.cli import main as hyperrep_cli
from builders.cli import main as build_cli
from loaders.transforms import LayerStandardization
from zoo_dataset.data.files import read_bytes
from zoo_dataset.errors import DataFormatError, ZooSpecError
from zoo_dataset.model_layout import layout_for
from zoo_dataset.specs import get_spec


def one_line(result, code: int) -> str:
    assert result.exit_code == code, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


@pytest.mark.parametrize("kind", SPECIAL)
def test_a_spec_that_is_a_fifo_or_a_device_is_refused(tmp_path, kind):
    spec = special_file(tmp_path / "zoos.toml", kind)
    with hang_guard():
        for args in (["--list"], ["--zoo", "x", "--root", str(tmp_path / "stores")]):
            line = one_line(CliRunner().invoke(build_cli, ["--spec", str(spec), *args]), 2)
            assert f"{spec} is not a regular file" in line
    assert not (tmp_path / "stores").exists()


def test_a_spec_file_larger_than_any_spec_is_refused_unread(tmp_path):
    spec = tmp_path / "zoos.toml"
    spec.write_bytes(b"#" * (64 << 20))  # 64 MiB of a comment: far beyond any spec
    line = one_line(CliRunner().invoke(build_cli, ["--spec", str(spec), "--list"]), 2)
    assert f"{spec} is larger than 4 MiB: not a zoo spec file" in line


@pytest.mark.parametrize("kind", SPECIAL)
def test_a_hyperrep_checkpoint_that_is_a_fifo_or_a_device_is_refused(tmp_path, kind):
    checkpoint = special_file(tmp_path / "ae.pt", kind)
    with hang_guard():
        line = one_line(CliRunner().invoke(hyperrep_cli, ["eval", "--zoo", "digits_seed", "--root", str(tmp_path),
                                                          "--checkpoint", str(checkpoint)]), 1)
    assert f"{checkpoint} is not a regular file" in line


def _stats() -> LayerStandardization:
    layout = layout_for(get_spec("digits_seed"))
    return LayerStandardization.from_states(layout, torch.randn(3, layout.num_params, generator=torch.manual_seed(0)))


@pytest.mark.parametrize("kind", SPECIAL)
def test_standardisation_statistics_that_are_a_fifo_or_a_device_are_refused(tmp_path, kind):
    path = special_file(tmp_path / "stats.json", kind)
    with hang_guard(), pytest.raises(ZooSpecError, match="is not a regular file"):
        LayerStandardization.load(path)


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


HOSTILE_STATS = {  # what a statistics file may hold, and the line that refuses it
    "deep nesting": (lambda d: _nested(100_000), "nested too deeply"),
    "a 5000-digit mean": (lambda d: json.dumps(_set_first(d, "mean", 0)).replace('"mean": 0', '"mean": ' + "9" * 5000),
                          "not JSON text"),
    "a string mean": (lambda d: json.dumps(_set_first(d, "mean", "0.1")), "not a finite mean and std"),
    "a NaN std": (lambda d: json.dumps(_set_first(d, "std", float("nan"))), "not a finite mean and std"),
    "an integer beyond a float": (lambda d: json.dumps(_set_first(d, "mean", 10**400)), "not a finite mean and std"),
    "a layer that is a list": (lambda d: json.dumps({**d, "layout": [{**e, "layer": [e["layer"]]}
                                                                     for e in d["layout"]]}), "its layout is refused"),
    "stats a list": (lambda d: json.dumps({**d, "stats": [1, 2]}), "stats is not an object"),
    "a list": (lambda d: json.dumps([d]), "an object of layout and stats"),
}


def _set_first(data: dict, key: str, value) -> dict:
    layer = next(iter(data["stats"]["weights"]))
    data["stats"]["weights"][layer][key] = value
    return data


@pytest.mark.parametrize("case", HOSTILE_STATS)
def test_hostile_standardisation_statistics_are_one_line(tmp_path, case):
    make, message = HOSTILE_STATS[case]
    path = tmp_path / "stats.json"
    path.write_text(make(_stats().to_dict()))
    with pytest.raises(ZooSpecError, match=message) as info:
        LayerStandardization.load(path)
    assert "\n" not in str(info.value)


def test_standardisation_statistics_of_another_layout_are_refused_at_load(tmp_path):
    """Used on a zoo of another architecture they would fail later, deep in a transform."""
    path = _stats().save(tmp_path / "stats.json")
    assert LayerStandardization.load(path, layout_for(get_spec("digits_seed"))).stats == _stats().stats
    other = layout_for(get_spec("cifar10_l_seed"))
    with pytest.raises(ZooSpecError, match="of another parameter layout"):
        LayerStandardization.load(path, other)


def test_a_compressed_dataset_file_is_read_no_further_than_its_bound(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(bytes(4096)))
    assert read_bytes(path) == bytes(4096)
    with pytest.raises(DataFormatError, match="decompresses to more than"):
        read_bytes(path, limit=1024)
    with pytest.raises(DataFormatError, match="is larger than"):
        read_bytes(path, limit=16)
    with hang_guard(), pytest.raises(DataFormatError, match="is not a regular file"):
        read_bytes(special_file(tmp_path / "fifo", "fifo"))
