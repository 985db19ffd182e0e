"""A damaged shard is a StoreError in one line, whatever h5py raises for it.

Flipping one byte of a shard's first 4 KB (superblock, object headers, links, chunk index) once
escaped from ``ZooStore``, the datasets and ``zoo-report`` as h5py's raw ``KeyError`` or
``RuntimeError`` (8 of 75 random flips): the checks caught ``OSError`` only. Every flip here must
either leave the data readable and unchanged or be refused with the toolkit's error."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from _fixtures_loader import shared_loader_store
from click.testing import CliRunner

from analysis import cli as report_cli
from loaders import ZooOriginalDataset
from zoo_dataset.errors import StoreError, ZooError
from zoo_dataset.store import ZooStore

ZOO = "digits_seed"
SHARD = "original/shard-00000.h5"
POSITIONS = range(0, 4096, 37)  # deterministic, spread over the first 4 KB


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return shared_loader_store(tmp_path_factory)


def every_array(store: ZooStore) -> dict[tuple[int, str], np.ndarray]:
    info = store.population("original")
    return {(m, a): store.array(a, "original", m, slice(None)) for m in store.manifest.model_ids for a in info.arrays}


def flipped(pristine, directory, position: int):
    copy = directory / ZOO
    if not copy.exists():
        shutil.copytree(pristine, copy)
    data = bytearray((pristine / SHARD).read_bytes())
    data[position] ^= 0xFF
    (copy / SHARD).write_bytes(bytes(data))
    return copy


def test_every_flipped_metadata_byte_reads_right_or_is_a_store_error(pristine, tmp_path):
    expected = every_array(ZooStore(pristine))
    refused = []
    for position in POSITIONS:
        copy = flipped(pristine, tmp_path, position)
        try:
            got = every_array(ZooStore(copy))
        except ZooError as error:
            assert isinstance(error, StoreError) and "\n" not in str(error), (position, error)
            refused.append(position)
            continue
        except Exception as error:  # what h5py raised untranslated
            pytest.fail(f"flipping byte {position} raised {type(error).__name__}: {error}")
        assert all(np.array_equal(got[k], expected[k]) for k in expected), f"byte {position} changed the data"
    assert refused  # the flips reach the metadata the reader depends on


def test_a_flipped_shard_through_the_dataset_and_zoo_report(pristine, tmp_path):
    refused = []
    for position in POSITIONS:
        copy = flipped(pristine, tmp_path, position)
        try:
            ZooStore(copy).weights("original", 0, -1)
        except StoreError:
            refused.append(position)
    reported = 0
    for position in refused[:: max(1, len(refused) // 4)]:  # a few of them: the report is the slow part
        copy = flipped(pristine, tmp_path, position)
        with pytest.raises(StoreError):
            dataset = ZooOriginalDataset(copy, split=None, epoch=None)
            [dataset[i] for i in range(len(dataset))]
        result = CliRunner().invoke(report_cli.main, ["--zoo", str(copy), "--out", str(tmp_path / "report")])
        assert result.exit_code in (0, 1), (position, result.output)
        if result.exit_code == 1:
            assert result.output.startswith("error: ") and result.output.count("\n") == 1, result.output
            assert SHARD in result.output
            reported += 1
    assert reported
