"""Ingest of a tiny fake Ray Tune zoo in the published layout, then the twin stages on it."""

from __future__ import annotations

import io
import json
import shutil
import stat
import zipfile
from collections import OrderedDict
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from builders.build import build_zoo
from builders.stages import STAGES
from releases.ingest import ingest_original
from zoo_dataset.architectures import parametrised_layers, seeded_model
from zoo_dataset.errors import DataFormatError, StoreError
from zoo_dataset.safe_extract import safe_extract
from zoo_dataset.specs import get_spec
from zoo_dataset.store import StoreWriter, ZooStore
from zoo_dataset.store.tables import init_check

EPOCHS = 2
MODULE_INDEX = (0, 3, 6, 9, 11)  # CNN-s with dropout 0 in the original code


def spec():
    return get_spec("digits_seed").with_overrides(mp_epochs=1, mp_levels=(0.5,), vd_epochs=1)


def write_trial(zoo, seed, index, checkpoint_hook=None, config=None):
    config = config or spec().models()[0]
    folder = zoo / f"NN_tune_trainable_c0371_{index:05d}_{index}_seed={seed}_2021-07-01_16-59-53"
    folder.mkdir(parents=True)
    params = {"model::type": "CNN", "model::nlin": config.activation, "model::init_type": config.init,
              "model::dropout": config.dropout, "optim::optimizer": config.optimizer, "optim::lr": config.lr,
              "optim::wd": config.weight_decay, "seed": seed, "training::batchsize": 10}
    (folder / "params.json").write_text(json.dumps(params))
    model = seeded_model("cnn_s", 1, config.activation, 0.0, config.init, seed)
    lines, finals = [], []
    for epoch in range(EPOCHS + 1):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01 * epoch)
            if epoch:  # epoch 0 is the seed's init (the trainable saves it in setup)
                model.conv1.weight[0, 0, 0, 0] = 0.0  # one exact zero: sparsity is computed from the weights
        state = OrderedDict()
        for i, (_, layer) in zip(MODULE_INDEX, parametrised_layers(model), strict=True):
            state[f"module_list.{i}.weight"] = layer.weight.detach().clone()
            state[f"module_list.{i}.bias"] = layer.bias.detach().clone()
        ckpt = folder / f"checkpoint_{epoch:06d}"
        ckpt.mkdir()
        torch.save(state, ckpt / "checkpoints")
        if checkpoint_hook:
            checkpoint_hook(epoch, ckpt / "checkpoints")
        train = (-999, -999) if epoch == 0 else (1.0 / (epoch + 1), 0.5 + 0.1 * epoch)
        lines.append({"train_loss": train[0], "train_acc": train[1], "test_loss": 2.0 - epoch,
                      "test_acc": 0.3 + 0.1 * epoch, "training_iteration": epoch, "trial_id": "c0371"})
        finals.append(torch.cat([t.reshape(-1) for t in state.values()]).numpy())
    (folder / "result.json").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return np.stack(finals)


def make_zoo(root):
    zoo = root / "tune_zoo_digits_uniform"
    expected = {seed - 1: write_trial(zoo, seed, i) for i, seed in enumerate((1, 2, 4))}
    write_trial(zoo, 999, 3)  # a seed this zoo does not have

    def corrupt(epoch, path):
        if epoch == 1:
            path.write_bytes(path.read_bytes()[:100])

    write_trial(zoo, 5, 4, corrupt)  # a faulty checkpoint
    return zoo, expected


def check_store(store, expected, report):
    assert store.manifest.model_ids == sorted(expected) == sorted(report.trials)
    assert store.manifest.populations["original"].status == "complete"
    assert len(report.skipped) == 2
    for model_id, weights in expected.items():
        assert np.allclose(store.weights("original", model_id, epoch=-1), weights[-1])
        assert np.allclose(store.weights("original", model_id, epoch=0), weights[0])
    states = store.states("original")
    assert sorted(states.epoch.unique()) == list(range(EPOCHS + 1))
    last = states[states.epoch == EPOCHS]
    assert np.allclose(last.test_acc, 0.3 + 0.1 * EPOCHS)
    assert states[states.epoch == 0].train_acc.isna().all()  # the -999 placeholder
    assert (states[states.epoch > 0].sparsity > 0).all() and states.agreement.isna().all()


def test_ingest_folder_skips_faulty_trials_and_twin_stages_run(tmp_path, capsys, one_thread):
    zoo, expected = make_zoo(tmp_path / "download")
    report = ingest_original(spec(), zoo, tmp_path / "stores")
    store = ZooStore(tmp_path / "stores" / "digits_seed")
    check_store(store, expected, report)
    err = capsys.readouterr().err
    assert "seed=999" in err and "seed=5" in err and "skipped 2" in err
    twins = [s for s in ("mp", "vd") if s in STAGES]
    if not twins:
        pytest.skip("neither the mp nor the vd stage is registered in STAGES yet")
    store, _ = build_zoo(report.spec, tmp_path / "stores", stages=twins, resume=True, progress=False)
    for population in twins:
        assert store.manifest.populations[population].status == "complete"
        assert set(store.states(population).model_id) == set(expected)


def test_ingest_zip_equals_folder(tmp_path):
    zoo, expected = make_zoo(tmp_path / "download")
    archive = tmp_path / "zoo.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(zoo.rglob("*")):
            zf.write(path, path.relative_to(zoo.parent))
    report = ingest_original(spec(), archive, tmp_path / "stores")
    check_store(ZooStore(tmp_path / "stores" / "digits_seed"), expected, report)


def test_missing_epoch0_checkpoint_is_replayed_from_the_seed(tmp_path):
    zoo = tmp_path / "zoo"
    write_trial(zoo, 3, 0, lambda epoch, path: shutil.rmtree(path.parent) if epoch == 0 else None)
    report = ingest_original(spec(), zoo, tmp_path / "stores")
    store = ZooStore(tmp_path / "stores" / "digits_seed")
    start = store.weights("original", 2, epoch=0)
    assert report.trials.keys() == {2}
    model = seeded_model("cnn_s", 1, "tanh", 0.0, "kaiming_uniform", 3)
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy()
    assert np.allclose(start, flat)


def test_random_seed_zoo_keeps_the_published_seeds(tmp_path):
    """A random-seed zoo's seeds are the publisher's draws: the models table, the configs the twin
    stages train from and the replayed epoch 0 all use them, not the spec's own draws."""
    random_spec = get_spec("digits_random")
    config = random_spec.models()[5]
    published_seed = 123_457
    assert config.seed != published_seed
    write_trial(tmp_path / "zoo", published_seed, 0, config=config,
                checkpoint_hook=lambda epoch, path: shutil.rmtree(path.parent) if epoch == 0 else None)
    report = ingest_original(random_spec, tmp_path / "zoo", tmp_path / "stores")
    store = ZooStore(tmp_path / "stores" / "digits_random")
    assert report.trials.keys() == {5}
    assert store.models().set_index("model_id").seed[5] == published_seed
    assert store.model_config(5) == replace(config, seed=published_seed)
    model = seeded_model("cnn_s", 1, config.activation, 0.0, config.init, published_seed)
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy()
    np.testing.assert_allclose(store.weights("original", 5, epoch=0), flat)


def zip_with(tmp_path, name, symlink=False):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("good/params.json", "{}")
        info = zipfile.ZipInfo(name)
        if symlink:
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd" if symlink else "payload")
    return archive


@pytest.mark.parametrize("name, symlink", [("../x", False), ("a/../../x", False), ("/tmp/abs_x", False),
                                           ("link", True)])
def test_unsafe_zip_members_are_refused_before_writing(tmp_path, name, symlink):
    archive = zip_with(tmp_path, name, symlink)
    target = tmp_path / "deep" / "target"
    with pytest.raises(DataFormatError, match="refusing member"):
        safe_extract(archive, target)
    assert not target.exists()
    assert not (tmp_path / "deep" / "x").exists() and not (tmp_path / "x").exists()
    with pytest.raises(DataFormatError):
        ingest_original(spec(), archive, tmp_path / "stores")
    assert not (tmp_path / "stores").exists()


def _rewrite_results(folder, change):
    path = folder / "result.json"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("\n".join(json.dumps(change(line)) for line in lines) + "\n")


def _rewrite_params(folder, **changes):
    params = json.loads((folder / "params.json").read_text())
    (folder / "params.json").write_text(json.dumps({**params, **changes}))


def _checkpoint_value(value):
    def hook(epoch, path):
        state = torch.load(path, weights_only=True)
        state["module_list.0.weight"] = value(state["module_list.0.weight"])
        torch.save(state, path)
    return hook


MISTYPED = {  # what a published trial may hold, and the reason its skip line gives
    "result line is a list": (lambda f: (f / "result.json").write_text("[1, 2]\n"), "line 1 is a list"),
    "training_iteration null": (lambda f: _rewrite_results(f, lambda r: {**r, "training_iteration": None}),
                                "training_iteration is None"),
    "accuracy is an object": (lambda f: _rewrite_results(f, lambda r: {**r, "test_acc": {"top1": 0.5}}),
                              "test_acc of epoch 0 is {'top1': 0.5}"),
    "accuracy is true": (lambda f: _rewrite_results(f, lambda r: {**r, "test_acc": True}),
                         "test_acc of epoch 0 is True"),
    "seed 3.9": (lambda f: _rewrite_params(f, seed=3.9), "seed is 3.9, not a whole number"),
    "lr is a string": (lambda f: _rewrite_params(f, **{"optim::lr": "0.001"}),
                       "optim::lr is '0.001', not a number"),
    "result nested deeply": (lambda f: (f / "result.json").write_text("[" * 100_000 + "]" * 100_000 + "\n"),
                             "result.json line 1: not JSON this toolkit reads (nested too deeply)"),
    "params nested deeply": (lambda f: (f / "params.json").write_text("[" * 100_000 + "]" * 100_000),
                             "params.json lacks or mangles a generating factor"),
}
BAD_TENSORS = {
    "a list": (lambda w: w.tolist(), "module_list.0.weight is a list"),
    "an int": (lambda w: 3, "module_list.0.weight is a int"),
    "integer dtype": (lambda w: w.to(torch.int64), "is a torch.int64"),
    "NaN": (lambda w: w.index_fill(0, torch.tensor([0]), float("nan")), "NaN or infinite"),
    "complex": (lambda w: w.to(torch.complex64), "torch.complex64"),
}


@pytest.mark.parametrize("case", sorted(MISTYPED) + sorted(BAD_TENSORS))
def test_mistyped_trials_are_skipped_with_their_reason_not_coerced(tmp_path, case):
    zoo = tmp_path / "zoo"
    write_trial(zoo, 1, 0)  # model 0, sound
    if case in MISTYPED:
        write_trial(zoo, 2, 1)
        damage, reason = MISTYPED[case]
        damage(next(zoo.glob("*seed=2_*")))
    else:
        value, reason = BAD_TENSORS[case]
        write_trial(zoo, 2, 1, checkpoint_hook=_checkpoint_value(value))
    lines = []
    report = ingest_original(spec(), zoo, tmp_path / "stores", echo=lines.append)
    assert report.trials.keys() == {0}
    (skip,) = report.skipped
    assert "seed=2" in skip and reason in skip and "\n" not in skip
    assert lines[0].startswith("skipped ") and lines[-1].startswith("ingested 1 models")
    assert ZooStore(tmp_path / "stores" / "digits_seed").manifest.model_ids == [0]


def test_zip_that_matches_no_model_of_the_zoo_names_the_zip(tmp_path):
    """The likely mistake of a wrong --zoo: one line that names the zip (not the temporary folder it
    was extracted to) and suggests checking --zoo; no store is made."""
    zoo, _ = make_zoo(tmp_path / "download")
    archive = tmp_path / "zoo.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(zoo.rglob("*")):
            zf.write(path, path.relative_to(zoo.parent))
    with pytest.raises(DataFormatError) as info:
        ingest_original(get_spec("mnist_seed"), archive, tmp_path / "stores")
    message = str(info.value)
    assert message.startswith(f"{archive}: none of 5 trials matches a model of zoo mnist_seed (is --zoo right?)")
    assert "zoo-ingest-" not in message and "\n" not in message
    assert not (tmp_path / "stores").exists()


def _ingested_ids(tmp_path, zoo):
    report = ingest_original(spec(), zoo, tmp_path / "stores", echo=lambda line: None)
    return report, sorted(report.trials)


def test_a_trial_with_an_out_of_range_checkpoint_is_skipped_not_the_ingest(tmp_path):
    """checkpoint_000000001000000000 once built a list of ~1e9 epochs; checkpoint_000060 in a 10-epoch
    zoo made every good trial 'miss' epochs 3..60. Now only that trial is left out, with a line."""
    zoo = tmp_path / "zoo"
    write_trial(zoo, 1, 0)
    write_trial(zoo, 2, 1, lambda epoch, path: (path.parent.parent / "checkpoint_000000001000000000").mkdir()
                if epoch == 0 else None)
    write_trial(zoo, 4, 2, lambda epoch, path: shutil.copytree(path.parent, path.parent.parent / "checkpoint_000060")
                if epoch == 2 else None)
    report, ids = _ingested_ids(tmp_path, zoo)
    assert ids == [0]
    assert report.spec.epochs == EPOCHS
    assert sum("checkpoint_1000000000 is beyond the zoo's 10 epochs" in line for line in report.skipped) == 1
    assert sum("checkpoint_000060 is beyond" in line for line in report.skipped) == 1


def test_linked_trial_files_are_not_followed(tmp_path):
    """result.json -> a file outside the zoo (once /dev/zero: an endless read), a linked checkpoint:
    the trial is skipped and the link never read."""
    zoo = tmp_path / "zoo"
    write_trial(zoo, 1, 0)
    secret = tmp_path / "outside.json"
    secret.write_text(json.dumps({"training_iteration": 1, "test_acc": 0.99}) + "\n")
    folder = zoo / next(p.name for p in zoo.iterdir())
    (folder / "result.json").unlink()
    (folder / "result.json").symlink_to(secret)
    write_trial(zoo, 2, 1)
    other = sorted(zoo.iterdir())[1]
    checkpoint = other / "checkpoint_000001" / "checkpoints"
    checkpoint.rename(tmp_path / "moved")
    checkpoint.symlink_to(tmp_path / "moved")
    write_trial(zoo, 4, 2)
    report, ids = _ingested_ids(tmp_path, zoo)
    assert ids == [3]
    assert sum("symbolic link" in line for line in report.skipped) == 2


def test_a_linked_trial_folder_is_listed_as_skipped(tmp_path):
    """A trial folder that is a link (to a trial outside the zoo) is not entered, and the report says so."""
    zoo = tmp_path / "zoo"
    write_trial(zoo, 1, 0)
    write_trial(tmp_path / "elsewhere", 2, 1)
    outside = next((tmp_path / "elsewhere").iterdir())
    (zoo / "linked_trial").symlink_to(outside, target_is_directory=True)
    report, ids = _ingested_ids(tmp_path, zoo)
    assert ids == [0]
    assert report.skipped == ["linked_trial: a linked folder (not followed)"]


def bomb(path, members):
    """A zip whose members are zeros: tiny on disk, ``size`` bytes each once unpacked."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, size in members:
            with zf.open(name, "w") as fh:
                for _ in range(size >> 20):
                    fh.write(bytes(1 << 20))
    return path


def test_a_zip_bomb_is_refused_before_anything_is_unpacked(tmp_path):
    archive = bomb(tmp_path / "bomb.zip", [("zoo/params.json", 40 << 20)])
    assert archive.stat().st_size < 1 << 20  # 40 MiB of zeros in well under 1 MiB
    with pytest.raises(DataFormatError, match="expands .*x, more than 200x"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(DataFormatError, match="refusing"):
        ingest_original(spec(), archive, tmp_path / "stores")
    assert not (tmp_path / "stores").exists()


def test_extraction_is_bounded_by_total_size_and_ratio(tmp_path):
    """Many members each under the per-member floor still add up: the archive as a whole is judged."""
    archive = bomb(tmp_path / "many.zip", [(f"zoo/{i}.bin", 1 << 20) for i in range(300)])
    with pytest.raises(DataFormatError, match="refusing to unpack"):
        safe_extract(archive, tmp_path / "out")
    random = tmp_path / "random.zip"
    with zipfile.ZipFile(random, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zoo/a.bin", np.random.default_rng(0).bytes(3 << 20))
    with pytest.raises(DataFormatError, match="refusing to unpack"):
        safe_extract(random, tmp_path / "out", max_bytes=2 << 20)
    assert not (tmp_path / "out").exists()
    assert (safe_extract(random, tmp_path / "out") / "zoo" / "a.bin").stat().st_size == 3 << 20


def test_a_lost_shard_of_ingested_originals_is_not_retrained(tmp_path):
    """Retraining would put new models where published ones were: the resume says to re-ingest."""
    zoo = tmp_path / "zoo"
    write_trial(zoo, 1, 0)
    report = ingest_original(spec(), zoo, tmp_path / "stores", echo=lambda line: None)
    store = ZooStore(tmp_path / "stores" / "digits_seed")
    (store.zoo_dir / store.population("original").shards[0].file).unlink()
    with pytest.raises(StoreError, match="ingest them again with zoo-build --from-original"):
        build_zoo(report.spec, tmp_path / "stores", stages=["original"], resume=True, progress=False)
    ingest_original(spec(), zoo, tmp_path / "stores", echo=lambda line: None)
    ZooStore(store.zoo_dir).verify()


def test_a_zip_with_two_members_of_one_name_is_refused(tmp_path):
    """A second <trial>/params.json (saying seed 999) would silently relabel the seed-1 trial's weights."""
    zoo, _ = make_zoo(tmp_path / "src")
    archive = tmp_path / "dup.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(p for p in zoo.rglob("*") if p.is_file()):
            zf.write(path, path.relative_to(zoo.parent).as_posix())
        trial = next(p for p in sorted(zoo.iterdir()) if "seed=1_" in p.name)
        params = json.loads((trial / "params.json").read_text())
        with pytest.warns(UserWarning, match="Duplicate name"):
            zf.writestr(f"{zoo.name}/{trial.name}/params.json", json.dumps({**params, "seed": 999}))
    with pytest.raises(DataFormatError, match="params.json' \\(a second member of that name\\)"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(DataFormatError, match="a second member of that name"):
        ingest_original(spec(), archive, tmp_path / "stores")
    assert not (tmp_path / "stores").exists()


def test_a_trial_whose_epoch0_is_not_its_seeds_replay_is_kept_and_recorded(tmp_path, capsys):
    """params.json naming seed 4 beside the init of seed 2: whether our replay of a seed is the
    original's is unverified, so the trial is ingested as published and the mismatch recorded."""
    zoo = tmp_path / "zoo"
    write_trial(zoo, 1, 0)

    def other_init(epoch, path):
        if epoch == 0:
            model = seeded_model("cnn_s", 1, "tanh", 0.0, "kaiming_uniform", 2)
            state = torch.load(path, weights_only=True)
            for key, (_, layer) in zip(list(state)[::2], parametrised_layers(model), strict=True):
                state[key] = layer.weight.detach().clone()
            torch.save(state, path)

    write_trial(zoo, 4, 1, other_init)
    write_trial(zoo, 5, 2, lambda epoch, path: path.parent.rename(path.parent.with_name("x")) if epoch == 0 else None)
    report = ingest_original(spec(), zoo, tmp_path / "stores")
    assert report.trials.keys() == {0, 3, 4}
    assert "checkpoint_000000 of 1 of 2 ingested trials is not the init their seed replays" in capsys.readouterr().err
    store = ZooStore(tmp_path / "stores" / "digits_seed")
    flags = store.models().set_index("model_id").init_matches_seed
    assert flags[0] and not flags[3] and pd.isna(flags[4])  # model 4 published no checkpoint_000000: replayed
    assert json.loads((store.zoo_dir / "ingest.json").read_text())["init_matches_seed"] == {
        "0": True, "3": False, "4": None}
    assert init_check(store.models()) == (
        "the published checkpoint_000000 of 1 of 2 ingested models is not the init their seed replays in this "
        "toolkit; they are kept as published (init_matches_seed = false in models.parquet); for 1 models without "
        "one it is that replay")


def test_a_store_without_the_init_column_reads_and_reports_nothing_of_it(tmp_path):
    """Stores built here, or ingested before the column existed, have no init_matches_seed."""
    zoo = tmp_path / "zoo"
    write_trial(zoo, 1, 0)
    ingest_original(spec(), zoo, tmp_path / "stores", echo=lambda line: None)
    store = ZooStore(tmp_path / "stores" / "digits_seed")
    writer = StoreWriter.open(tmp_path / "stores", store.spec, store.layout, resume=True, create=False)
    writer.write_models_table(store.models().drop(columns="init_matches_seed"))
    store = ZooStore(store.zoo_dir)
    store.verify()
    assert init_check(store.models()) is None and store.model_config(0).seed == 1


@pytest.mark.parametrize("alias", ["{zoo}/./{trial}", "{zoo}//{trial}", "./{zoo}/{trial}", "{zoo}/{trial}/."])
def test_a_second_copy_of_a_checkpoint_under_an_aliased_name_is_refused(tmp_path, alias):
    """``zoo/./trial/...`` unpacks onto ``zoo/trial/...``: names are compared as they unpack, so the
    copy (weights all 5.0) never replaces the trial's own checkpoint."""
    zoo, _ = make_zoo(tmp_path / "src")
    archive = tmp_path / "alias.zip"
    trial = next(p for p in sorted(zoo.iterdir()) if "seed=1_" in p.name)
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(p for p in zoo.rglob("*") if p.is_file()):
            zf.write(path, path.relative_to(zoo.parent).as_posix())
        state = torch.load(trial / "checkpoint_000002" / "checkpoints", weights_only=True)
        fives = io.BytesIO()
        torch.save({k: torch.full_like(v, 5.0) for k, v in state.items()}, fives)
        name = alias.format(zoo=zoo.name, trial=trial.name) + "/checkpoint_000002/checkpoints"
        zf.writestr(zipfile.ZipInfo(name), fives.getvalue())  # a ZipInfo keeps the name as given
    with pytest.raises(DataFormatError, match="a second member of that name: .* unpacks to the same file") as info:
        ingest_original(spec(), archive, tmp_path / "stores")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "stores").exists()


@pytest.mark.parametrize("names, reason", [
    (["zoo/caf\u00e9/a", "zoo/cafe\u0301/a"], "a second member of that name"),  # one name, NFC and NFD
    (["zoo/a", "zoo/a/b"], "a file, and a folder of other members"),
    (["zoo\\a"], "a backslash in the name"),
    (["zoo/\na"], "a control character"),
    (["./"], "an empty name"),
])
def test_member_names_are_normalised_and_plain(tmp_path, names, reason):
    archive = tmp_path / "names.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name in names:
            zf.writestr(name, "x")
    with pytest.raises(DataFormatError, match=reason):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()
