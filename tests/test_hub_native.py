"""The Hub and Croissant view of a store: a reduced build of the embedded zoo, its card stage, then
every shard through `datasets`' HDF5 builder, the card validated with the Hub's card tools, the
configs loaded by `datasets`, croissant.json loaded and validated by mlcroissant, the card's
snippets run."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
from _fixtures_loader import shared_loader_store
from huggingface_hub import DatasetCard, DatasetCardData

from builders.build import build_zoo
from builders.croissant import CROISSANT
from builders.stages.card import LICENSE
from loaders import ZooTwinDataset
from zoo_dataset.store import ZooStore

datasets = pytest.importorskip("datasets")
HUB_SPLITS = {"train": "train", "val": "validation", "test": "test"}
# licence ids of the Hub's allowed list (huggingface.co/docs/hub/repositories-licenses) this toolkit may use
HUB_LICENSES = {"cc-by-4.0", "cc-by-sa-4.0", "cc0-1.0", "mit", "apache-2.0", "odc-by"}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """The shared reduced build (original, mp, vd) with the card stage run by build_zoo on a copy."""
    root = tmp_path_factory.mktemp("hub") / "stores"
    shutil.copytree(shared_loader_store(tmp_path_factory), root / "digits_seed")
    store = ZooStore(root / "digits_seed")
    build_zoo(store.spec, root, stages=["card"], resume=True, progress=False)
    return root / "digits_seed"


def test_every_shard_loads_with_datasets_hdf5(zoo, tmp_path):
    store = ZooStore(zoo)
    for population in store.populations:
        for shard in store.population(population).shards:
            rows = datasets.load_dataset("hdf5", data_files=[str(zoo / shard.file)], split="train",
                                         cache_dir=str(tmp_path))
            assert rows["model_id"] == shard.model_ids
            levels = store.population(population).levels
            assert rows[0]["level"] == levels
            for row, model_id in enumerate(shard.model_ids):
                stored = rows.with_format("numpy")[row]
                for name in store.population(population).arrays:
                    for li, level in enumerate(levels):
                        np.testing.assert_array_equal(stored[name][li],
                                                      store.array(name, population, model_id, slice(None), level))


def test_the_card_is_complete_and_valid_for_the_hub(zoo):
    from datasets.info import DatasetInfosDict
    from datasets.utils.metadata import MetadataConfigs, known_task_ids

    card = DatasetCard.load(zoo / "README.md")
    data = card.data
    assert isinstance(data, DatasetCardData)
    assert DatasetCardData(**data.to_dict()).to_dict() == data.to_dict()  # round-trips the card tools
    assert data.license == LICENSE and LICENSE in HUB_LICENSES
    assert data.task_categories and set(data.task_categories) <= set(known_task_ids)
    assert data.source_datasets == ["original"]
    assert data.size_categories and data.pretty_name and "model-zoo" in data.tags
    configs = MetadataConfigs.from_dataset_card_data(data)  # datasets' own validation of the configs
    assert configs.get_default_config_name() == "models"
    infos = DatasetInfosDict.from_dataset_card_data(data)
    assert set(infos) == set(configs)
    split_of = ZooStore(zoo).models().set_index("model_id").split
    for name, config in configs.items():
        assert [f["split"] for f in config["data_files"]] == ["train", "validation", "test"]
        for entry in config["data_files"]:
            table = pd.read_parquet(zoo / entry["path"])
            assert infos[name].splits[entry["split"]].num_examples == len(table)
            stored = {HUB_SPLITS[s] for s in split_of[table.model_id]}
            assert stored <= {entry["split"]}  # a config's split holds only models of that model split


@pytest.mark.parametrize("config", ["models", "states_mp", "pairs_mp", "pairs_vd"])
def test_the_card_configs_load_with_datasets(zoo, tmp_path, config):
    loaded = datasets.load_dataset(str(zoo), config, cache_dir=str(tmp_path))
    assert list(loaded) == ["train", "validation", "test"]
    features = loaded["train"].features
    if config.startswith("pairs_"):
        method = config.removeprefix("pairs_")
        n_params = ZooStore(zoo).layout.num_params
        assert features["twin"] == datasets.List(datasets.Value("float32"), length=n_params)
        assert features["mask"] == datasets.List(datasets.Value("bool"), length=n_params)
        rows = loaded["validation"].with_format("numpy")
        items = list(ZooTwinDataset(zoo, method=method, split="val"))
        assert len(rows) == len(items) > 0
        for row, item in zip(rows, items, strict=True):
            np.testing.assert_array_equal(row["twin"], item["twin"].numpy())
            np.testing.assert_array_equal(row["original"], item["original"].numpy())


def test_croissant_loads_validates_and_describes_tables_and_weights(zoo):
    mlc = pytest.importorskip("mlcroissant")

    raw = json.loads((zoo / CROISSANT).read_text())
    for field in ("rai:dataCollection", "rai:dataLimitations", "rai:dataBiases", "rai:dataUseCases",
                  "rai:dataSocialImpact", "rai:personalSensitiveInformation"):
        assert raw[field], field
    dataset = mlc.Dataset(jsonld=str(zoo / CROISSANT))  # raises ValidationError on an invalid file
    metadata = dataset.metadata
    assert metadata.license and metadata.cite_as and metadata.data_limitations and metadata.data_biases
    assert {"shards-original", "shards-mp", "shards-vd"} <= {d.name for d in metadata.distribution}
    record_sets = {rs.name: rs for rs in metadata.record_sets}
    assert {"models", "states_mp", "pairs_mp", "pairs_vd"} <= set(record_sets)
    store = ZooStore(zoo)
    twin = next(f for f in record_sets["pairs_vd"].fields if f.name == "twin")
    assert twin.is_array and twin.array_shape_tuple == (store.layout.num_params,)
    records = list(dataset.records("pairs_vd"))
    assert len(records) == len(store.manifest.model_ids)
    by_model = {int(r["pairs_vd/model_id"]): r for r in records}
    for model_id, record in by_model.items():
        np.testing.assert_array_equal(np.asarray(record["pairs_vd/log_alpha"], dtype=np.float32),
                                      store.array("log_alpha", "vd", model_id))
    models = list(dataset.records("models"))
    assert sorted(int(r["models/model_id"]) for r in models) == store.manifest.model_ids


def test_the_cards_snippets_run(zoo, monkeypatch, tmp_path):
    text = (zoo / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 2
    monkeypatch.setenv("ZOO_TWINS_CACHE", str(zoo.parent))  # the store is "in the cache": no download
    scope: dict = {}
    exec(blocks[0], scope)  # verbatim
    assert isinstance(scope["pairs"], ZooTwinDataset) and "twin" in scope["item"]
    monkeypatch.chdir(zoo)  # a local copy of the Hub repo stands for it
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path))
    scope = {}
    exec(blocks[1].replace('"zoo-twins/digits_seed"', repr(str(zoo))), scope)
    assert list(scope["pairs"]) == ["train", "validation", "test"]
    assert scope["shard"].num_rows == len(ZooStore(zoo).manifest.model_ids)


def test_an_empty_split_is_left_out_of_the_configs(original_store, tmp_path):
    from builders.hub_tables import write_hub_tables

    copy = tmp_path / "digits_seed"
    shutil.copytree(original_store.zoo_dir, copy)
    store = ZooStore(copy)
    counts = store.models().split.value_counts()
    assert set(counts.index) < {"train", "val", "test"}  # models 0-3: some split has none
    configs = {c.name: c for c in write_hub_tables(store)}
    empty = next(hub for split, hub in HUB_SPLITS.items() if split not in counts.index)
    for name in ("models", "states_original"):
        assert empty not in configs[name].files  # datasets cannot read a parquet file without rows
        loaded = datasets.load_dataset("parquet", data_files={s: str(copy / p) for s, p in configs[name].files.items()},
                                       cache_dir=str(tmp_path / "cache"))
        assert set(loaded) == set(configs[name].files)
        assert all(part.features == configs[name].features for part in loaded.values())
