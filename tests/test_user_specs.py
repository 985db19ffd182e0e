"""User-defined zoos: a TOML file of the packaged schema, one parser and one validation for both."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from builders.cli import main
from zoo_dataset.errors import ZooSpecError
from zoo_dataset.specs import MAX_EPOCHS, get_spec, load_specs, parse_level, registry

USER_ZOOS = """
[defaults]
epochs = 1

[zoo.tiny_digits]
dataset = "digits"
architecture = "cnn_s"
variant = "fixed"
description = "two activations, one seed"
models_per_shard = 2
mp = { lr = 1e-3, epochs = 1, levels = [50, 90] }
vd = { lr = 1e-3, epochs = 1 }

[zoo.tiny_digits.factors]
seeds = [3]
activation = ["tanh", "relu"]
optimizer = ["adam"]
lr = [1e-3]
weight_decay = [0.0]
dropout = [0.0]
init = ["kaiming_uniform"]
"""


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "my_zoos.toml"
    path.write_text(USER_ZOOS)
    return path


def test_user_file_parses_like_the_packaged_zoos(spec_file):
    spec = get_spec("tiny_digits", spec_file)
    assert [m.activation for m in spec.models()] == ["tanh", "relu"]
    assert spec.epochs == 1  # the user's default
    assert spec.batch_size == registry()["digits_seed"].batch_size  # the packaged default
    assert spec.mp.levels == (0.5, 0.9) and spec.vd.threshold == registry()["mnist_seed"].vd.threshold
    assert spec.source == str(spec_file.resolve())
    assert get_spec("digits_seed").source == "zoos.toml"
    assert set(load_specs(spec_file)) == {"tiny_digits"}


@pytest.mark.parametrize(("edit", "message"), [
    (("architecture = \"cnn_s\"", "architecure = \"cnn_s\""), "unknown key 'architecure' (did you mean architecture?)"),
    (("activation = [\"tanh\", \"relu\"]", "activation = [\"tanhh\"]"), "unknown activation 'tanhh'"),
    (("levels = [50, 90]", "levels = [150]"), "sparsity level 150 out of range"),
    (("epochs = 1\n\n", "epochs = -1\n\n"), "invalid epochs = -1"),
    (("dataset = \"digits\"\n", ""), "missing dataset"),
    (("[zoo.tiny_digits]", "[zoo.tiny_digits"), "is not valid TOML"),
])
def test_a_bad_user_file_is_one_clear_line(tmp_path, spec_file, edit, message):
    spec_file.write_text(USER_ZOOS.replace(*edit, 1))
    result = CliRunner().invoke(main, ["--spec", str(spec_file), "--zoo", "tiny_digits", "--root", str(tmp_path)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output


GRID_16M = ("lr = [1e-3]", f"lr = {[1e-3 + i * 1e-7 for i in range(4096)]}")  # x 4096 weight decays: 16M
NONSENSE = [  # (edit of USER_ZOOS, what the error names): refused by the parser, before anything is allocated
    (("seeds = [3]", "seeds = { start = 1, count = 1e12 }"), "seeds.count = 1000000000000.0 is out of range"),
    (("epochs = 1\n\n", "epochs = 1e9\n\n"), "epochs = 1000000000 (1 to 10000)"),
    (("epochs = 1\n\n", "epochs = 0\n\n"), "epochs = 0 (1 to 10000)"),
    (("epochs = 1\n\n", "epochs = 2.5\n\n"), "epochs is 2.5, not a whole number"),
    (("epochs = 1\n\n", "epochs = inf\n\n"), "epochs is inf, not a whole number"),
    (("lr = [1e-3]", "lr = [nan]"), "invalid lr nan"),
    (("lr = [1e-3]", "lr = [-1e-3]"), "invalid lr -0.001"),
    (("vd = { lr = 1e-3, epochs = 1 }", "vd = { lr = inf, epochs = 1 }"), "invalid lr inf"),
    (("vd = { lr = 1e-3, epochs = 1 }", "vd = { lr = 1e-3, epochs = 1, kl_warmup_epochs = -7 }"),
     "vd.kl_warmup_epochs = -7 (0 to 10000)"),
    (("vd = { lr = 1e-3, epochs = 1 }", "vd = { lr = 1e-3, epochs = 1, threshold = nan }"), "vd.threshold nan"),
    (("dropout = [0.0]", "dropout = [1.5]"), "dropout 1.5"),
    (("weight_decay = [0.0]", "weight_decay = [nan]"), "weight_decay nan"),
    (("seeds = [3]", f"seeds = [{2**64 + 1}]"), f"seed = {2**64 + 1} is out of range"),
    (("seeds = [3]", "seeds = [-5]"), "seed = -5 is out of range"),
    (("[zoo.tiny_digits]\n", "[zoo.tiny_digits]\nsplit_seed = -1\n"), "split_seed = -1"),
    (("[zoo.tiny_digits]\n", "[zoo.tiny_digits]\nmodel_split = [nan, 0.5, 0.5]\n"), "model_split [nan, 0.5, 0.5]"),
    (("levels = [50, 90] }", 'levels = [50, 90], in_paper = "no" }'), "mp.in_paper = 'no' is not true or false"),
    (GRID_16M, "grid of 33554432 models (at most 100000)"),  # 2 activations x 4096 x 4096
]


@pytest.mark.parametrize(("edit", "message"), NONSENSE)
def test_nonsense_in_a_spec_file_is_refused_before_anything_is_allocated(spec_file, edit, message):
    text = USER_ZOOS.replace(*edit, 1)
    if edit == GRID_16M:
        text = text.replace("weight_decay = [0.0]", f"weight_decay = {[i * 1e-6 for i in range(4096)]}")
    assert text != USER_ZOOS
    spec_file.write_text(text)
    with pytest.raises(ZooSpecError, match=re.escape(message)):
        load_specs(spec_file)


@pytest.mark.parametrize(("content", "message"), [
    (b"\xff\xfe[zoo.x]\n", "is not UTF-8 text"),
    (b"zoo = 5\n", "zoo must hold [zoo.NAME] tables"),
    (b"[defaults]\nmp = 5\n[zoo]\n", "defaults.mp must be a table"),
    (USER_ZOOS.replace("tiny_digits", '"../evil"').encode(), "zoo name '../evil' is not a plain name"),
])
def test_a_malformed_spec_file_is_one_line_even_for_list(tmp_path, content, message):
    """Not only a build: ``--list`` reads the file too, and never prints a zoo that could not be built."""
    path = tmp_path / "zoos.toml"
    path.write_bytes(content)
    result = CliRunner().invoke(main, ["--spec", str(path), "--list"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output


@pytest.mark.parametrize("override", [{"epochs": 10**9}, {"vd_kl_warmup_epochs": -7}, {"mp_lr": float("nan")},
                                      {"split_seed": -1}])
def test_overrides_meet_the_same_bounds(override):
    with pytest.raises(ZooSpecError, match="invalid"):
        get_spec("digits_seed").with_overrides(**override)


def test_a_huge_model_subset_is_refused_before_it_is_listed():
    with pytest.raises(ZooSpecError, match="at most 100000 models"):
        get_spec("digits_seed").with_overrides(model_subset=range(10**11))


def test_the_command_line_and_the_spec_share_the_epoch_bound():
    from zoo_dataset.cli_support import EPOCHS

    assert EPOCHS.max == MAX_EPOCHS
    get_spec("digits_seed").with_overrides(epochs=MAX_EPOCHS)
    with pytest.raises(ZooSpecError):
        get_spec("digits_seed").with_overrides(epochs=MAX_EPOCHS + 1)


def test_user_zoo_builds_and_its_store_records_the_file(tmp_path, spec_file):
    result = CliRunner().invoke(main, ["--spec", str(spec_file), "--zoo", "tiny_digits", "--stages", "original,card",
                                       "--root", str(tmp_path), "--quiet"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "tiny_digits" / "manifest.json").read_text())
    assert manifest["spec"]["source"] == str(spec_file.resolve())
    assert manifest["spec"]["factors"]["activation"] == ["tanh", "relu"]
    assert str(spec_file.resolve()) in (tmp_path / "tiny_digits" / "README.md").read_text()


def test_overrides_are_validated_like_files():
    spec = get_spec("digits_seed")
    with pytest.raises(ZooSpecError, match="invalid epochs = -1"):
        spec.with_overrides(epochs=-1)
    with pytest.raises(ZooSpecError, match="unknown activation"):
        spec.with_overrides(factors=spec.factors.__class__(**{**spec.factors.__dict__, "activation": ("swish",)}))


@pytest.mark.parametrize(("given", "level"), [(0.5, 0.5), (50, 0.5), ("80", 0.8), (99.9, 0.999)])
def test_levels_are_fractions_or_percentages(given, level):
    assert parse_level(given) == pytest.approx(level)


@pytest.mark.parametrize("given", [0, 1.0, 100, -5, "half"])
def test_levels_outside_zero_and_one_are_refused(given):
    with pytest.raises(ZooSpecError, match="sparsity level"):
        parse_level(given)
