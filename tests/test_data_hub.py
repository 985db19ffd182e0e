"""The Hugging Face route: images in the Hub's parquet layout decode to the same raw arrays."""

import socket
import sys

import numpy as np
import pytest
from PIL import Image

from zoo_dataset.data.hub import HubEntry, is_cached, read_hub
from zoo_dataset.errors import DataUnavailableError


def write_hub_layout(root, image_column, shape, rng):
    """A dataset repo as the Hub stores it: data/<split>-00000-of-00001.parquet with an Image feature."""
    import datasets

    features = datasets.Features({image_column: datasets.Image(), "label": datasets.ClassLabel(num_classes=10)})
    expected = {}
    for split, n in (("train", 12), ("test", 5)):
        pixels = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
        labels = [int(i % 10) for i in range(n)]
        table = datasets.Dataset.from_dict(
            {image_column: [Image.fromarray(p) for p in pixels], "label": labels}, features=features)
        (root / "data").mkdir(parents=True, exist_ok=True)
        table.to_parquet(str(root / "data" / f"{split}-00000-of-00001.parquet"))
        expected[split] = (pixels, np.asarray(labels))
    return expected


@pytest.mark.parametrize(("column", "shape"), [("image", (28, 28)), ("img", (32, 32, 3))])
def test_hub_layout_decodes_to_nchw_uint8(tmp_path, column, shape):
    expected = write_hub_layout(tmp_path / "repo", column, shape, np.random.default_rng(0))
    raw = read_hub(HubEntry(str(tmp_path / "repo"), image=column), "no local files")
    for split, (x, y) in (("train", (raw.train_x, raw.train_y)), ("test", (raw.test_x, raw.test_y))):
        pixels, labels = expected[split]
        nchw = pixels[:, None] if pixels.ndim == 3 else pixels.transpose(0, 3, 1, 2)
        np.testing.assert_array_equal(x, nchw)
        np.testing.assert_array_equal(y, labels)


def test_offline_cache_miss_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    entry = HubEntry("zoo-twins-tests/not-a-dataset")
    assert not is_cached(entry)
    with pytest.raises(DataUnavailableError, match="expected mnist files") as info:
        read_hub(entry, "expected mnist files")
    assert "\n" not in str(info.value) and "Hugging Face Hub failed" in str(info.value)


def test_unreachable_hub_fails_at_once_without_retries(tmp_path, monkeypatch):
    """Online mode on a machine without network: one line, no datasets retry loop (it takes ~25 s)."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with socket.socket() as closed:  # a local port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setitem(sys.modules, "datasets", None)  # reaching datasets.load_dataset would fail the test
    with pytest.raises(DataUnavailableError, match=f"cannot connect to 127.0.0.1:{port}") as info:
        read_hub(HubEntry("zoo-twins-tests/not-a-dataset"), "expected mnist files")
    assert "\n" not in str(info.value) and "expected mnist files" in str(info.value)
