"""Tiny files in each official format, loaded through the same path a user's real files take."""

from __future__ import annotations

import bz2
import gzip
import os
import pickle
import struct

import h5py
import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from zoo_dataset.data import SOURCES, is_available, load_dataset
from zoo_dataset.data.raw import SPLIT_SEED, train_subset
from zoo_dataset.errors import DataFormatError, DataUnavailableError

RNG = np.random.default_rng(0)
N_TRAIN, N_TEST = 24, 10


@pytest.fixture(autouse=True)
def files_only(monkeypatch):
    monkeypatch.setenv("ZOO_TWINS_DATA_SOURCE", "files")  # never reach for the network


def labels(n, low=0, high=10):
    return RNG.integers(low, high, size=n).astype(np.uint8)


def write_idx(path, array, magic=None, compress=False, cut=0):
    header = magic if magic is not None else struct.pack(">HBB", 0, 8, array.ndim)
    data = header + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()
    data = data[: len(data) - cut]
    path.write_bytes(gzip.compress(data) if compress else data)


def make_idx(folder, compress=False):
    folder.mkdir(parents=True, exist_ok=True)
    raw = {"train_x": RNG.integers(0, 256, (N_TRAIN, 28, 28)), "train_y": labels(N_TRAIN),
           "test_x": RNG.integers(0, 256, (N_TEST, 28, 28)), "test_y": labels(N_TEST)}
    names = {"train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
             "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte"}
    for key, name in names.items():
        write_idx(folder / (name + (".gz" if compress else "")), raw[key], compress=compress)
    return raw


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_idx_loads_the_seed42_train_subset_normalised(tmp_path, compress):
    raw = make_idx(tmp_path / "mnist", compress)
    assert is_available("mnist", tmp_path)
    data = load_dataset("mnist", 28, tmp_path)
    keep = train_subset(N_TRAIN, SOURCES["mnist"].prep)
    assert len(keep) == round(N_TRAIN * 50000 / 60000) == len(data.train_y)
    assert torch.equal(data.train_y, torch.from_numpy(raw["train_y"][keep.numpy()].astype(np.int64)))
    expected = (torch.from_numpy(raw["train_x"][keep.numpy()]).float() / 255 - 0.1307) / 0.3081
    assert torch.allclose(data.train_x[:, 0], expected, atol=1e-5)
    assert data.test_x.shape == (N_TEST, 1, 28, 28)


def test_fmnist_uses_half_normalisation_and_env_data_dir(tmp_path, monkeypatch):
    raw = make_idx(tmp_path / "fmnist" / "raw")  # torchvision's folder works too
    monkeypatch.setenv("ZOO_TWINS_DATA", str(tmp_path))
    data = load_dataset("fmnist", 28)
    expected = (torch.from_numpy(raw["test_x"]).float() / 255 - 0.5) / 0.5
    assert torch.allclose(data.test_x[:, 0], expected, atol=1e-5)


def test_train_subset_matches_torch_random_split():
    prep = SOURCES["mnist"].prep
    subset, _ = torch.utils.data.random_split(range(60000), [50000, 10000],
                                              generator=torch.Generator().manual_seed(SPLIT_SEED))
    assert train_subset(60000, prep).tolist() == list(subset.indices)


@pytest.mark.parametrize("damage, message", [
    ("magic", "magic number"), ("truncated", "truncated"), ("gzip", "compressed"), ("label", "out of range"),
])
def test_malformed_idx_files_raise_a_clear_error(tmp_path, damage, message):
    raw = make_idx(tmp_path / "mnist")
    folder = tmp_path / "mnist"
    if damage == "magic":
        write_idx(folder / "t10k-images-idx3-ubyte", raw["test_x"], magic=b"\x00\x00\x08\x01")
    elif damage == "truncated":
        write_idx(folder / "t10k-images-idx3-ubyte", raw["test_x"], cut=5)
    elif damage == "gzip":
        (folder / "t10k-images-idx3-ubyte").unlink()
        (folder / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"x" * 1000)[:20])
    else:
        write_idx(folder / "t10k-labels-idx1-ubyte", np.full(N_TEST, 12))
    with pytest.raises(DataFormatError, match=message):
        load_dataset("mnist", 28, tmp_path)


def test_missing_files_name_the_files_their_source_and_the_option(tmp_path):
    assert not is_available("cifar10", tmp_path)
    with pytest.raises(DataUnavailableError) as err:
        load_dataset("cifar10", 28, tmp_path)
    text = str(err.value)
    assert "\n" not in text
    needles = ("data_batch_1", "test_batch", "cs.toronto.edu", "--data-dir", "ZOO_TWINS_DATA", "cifar10")
    for needle in needles:
        assert needle in text


def make_svhn(folder, n_train=N_TRAIN, test_labels=None):
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n in (("train", n_train), ("test", N_TEST)):
        x = RNG.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = labels(n, 1, 11) if split == "train" or test_labels is None else test_labels
        scipy.io.savemat(folder / f"{split}_32x32.mat", {"X": x, "y": y.reshape(-1, 1).astype(np.uint8)})
        out[split] = (x, y)
    return out


def test_svhn_mat_greyscale_center_crop_matches_pil(tmp_path):
    raw = make_svhn(tmp_path / "svhn")
    data = load_dataset("svhn", 28, tmp_path)
    x, y = raw["test"]
    assert data.test_x.shape == (N_TEST, 1, 28, 28)
    assert torch.equal(data.test_y, torch.from_numpy(np.where(y == 10, 0, y).astype(np.int64)))
    pil = np.asarray(Image.fromarray(x[..., 3]).convert("L"), dtype=np.float32)[2:30, 2:30]
    ours = data.test_x[3, 0].numpy() * 0.5 + 0.5
    assert np.abs(ours * 255 - pil).max() <= 1.0  # PIL rounds in fixed point


def test_svhn_truncated_and_bad_labels_are_refused(tmp_path):
    make_svhn(tmp_path / "svhn", test_labels=np.full(N_TEST, 11))
    with pytest.raises(DataFormatError, match="out of range"):
        load_dataset("svhn", 28, tmp_path)
    path = tmp_path / "svhn" / "test_32x32.mat"
    make_svhn(tmp_path / "svhn")
    path.write_bytes(path.read_bytes()[:-500])
    with pytest.raises(DataFormatError, match="test_32x32.mat"):
        load_dataset("svhn", 28, tmp_path)


def libsvm_lines(images, label_values):
    lines = []
    for img, label in zip(images, label_values, strict=True):
        values = img.reshape(-1) / 255 * 2 - 1
        lines.append(f"{label} " + " ".join(f"{i + 1}:{v:.6f}" for i, v in enumerate(values)))
    return ("\n".join(lines) + "\n").encode()


def test_usps_libsvm_bz2_resized_like_pil(tmp_path):
    folder = tmp_path / "usps"
    folder.mkdir()
    train = RNG.integers(0, 256, (N_TRAIN, 16, 16)).astype(np.uint8)
    test = RNG.integers(0, 256, (N_TEST, 16, 16)).astype(np.uint8)
    test_labels = labels(N_TEST, 1, 11)
    (folder / "usps.bz2").write_bytes(bz2.compress(libsvm_lines(train, labels(N_TRAIN, 1, 11))))
    (folder / "usps.t.bz2").write_bytes(bz2.compress(libsvm_lines(test, test_labels)))
    data = load_dataset("usps", 28, tmp_path)
    assert torch.equal(data.test_y, torch.from_numpy(test_labels.astype(np.int64) - 1))
    written = np.array([float(f"{v:.6f}") for v in test[0].reshape(-1) / 255 * 2 - 1])
    decoded = ((written + 1) / 2 * 255).astype(np.uint8).reshape(16, 16)  # torchvision's conversion
    pil = np.asarray(Image.fromarray(decoded).resize((28, 28), Image.BILINEAR), dtype=np.float32)
    ours = (data.test_x[0, 0].numpy() * 0.3081 + 0.1307) * 255
    assert np.abs(ours - pil).max() <= 1.01


def test_usps_hdf5_and_bad_label(tmp_path):
    folder = tmp_path / "usps"
    folder.mkdir()
    with h5py.File(folder / "usps.h5", "w") as f:
        for split, n in (("train", N_TRAIN), ("test", N_TEST)):
            f[f"{split}/data"] = RNG.random((n, 256))
            f[f"{split}/target"] = labels(n)
    assert load_dataset("usps", 28, tmp_path).train_x.shape == (round(N_TRAIN * 6000 / 7291), 1, 28, 28)
    (folder / "usps.bz2").write_bytes(bz2.compress(libsvm_lines(np.zeros((2, 16, 16)), [3, 11])))
    (folder / "usps.t.bz2").write_bytes(bz2.compress(libsvm_lines(np.zeros((2, 16, 16)), [3, 4])))
    with pytest.raises(DataFormatError, match="out of range"):
        load_dataset("usps", 28, tmp_path)


def make_cifar(folder, per_batch=6):
    folder.mkdir(parents=True)
    batches = {}
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        pixels = RNG.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        batch = {b"batch_label": name.encode(), b"data": pixels,
                 b"labels": [int(v) for v in labels(per_batch)], b"filenames": [b"x.png"] * per_batch}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        batches[name] = batch
    return batches


@pytest.mark.parametrize("size", [28, 32])
def test_cifar_batches_rgb_resized_for_cnn_s_kept_for_cnn_l(tmp_path, size):
    batches = make_cifar(tmp_path / "cifar10" / "cifar-10-batches-py")
    data = load_dataset("cifar10", size, tmp_path)
    assert data.test_x.shape == (6, 3, size, size)
    hwc = batches["test_batch"][b"data"][1].reshape(3, 32, 32).transpose(1, 2, 0)
    pil = np.asarray(Image.fromarray(hwc).resize((size, size), Image.BILINEAR), dtype=np.float32)
    ours = (data.test_x[1].numpy().transpose(1, 2, 0) * 0.5 + 0.5) * 255
    assert np.abs(ours - pil).max() <= 1.01  # PIL's fixed-point rounding differs by at most one level


def test_cifar_pickle_with_code_is_refused_without_running_it(tmp_path):
    make_cifar(tmp_path / "cifar10")
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (tmp_path / "cifar10" / "test_batch").write_bytes(pickle.dumps({b"data": Exploit()}, protocol=2))
    with pytest.raises(DataFormatError, match="not allowed"):
        load_dataset("cifar10", 28, tmp_path)
    assert not marker.exists()


def write_stl(folder, split, images, label_values, cut=0):
    column_major = images.transpose(0, 1, 3, 2).tobytes()
    (folder / f"{split}_X.bin").write_bytes(column_major[: len(column_major) - cut])
    (folder / f"{split}_y.bin").write_bytes(np.asarray(label_values, dtype=np.uint8).tobytes())


def test_stl10_binary_orientation_and_malformed(tmp_path):
    folder = tmp_path / "stl10" / "stl10_binary"
    folder.mkdir(parents=True)
    images = np.zeros((4, 3, 96, 96), dtype=np.uint8)
    images[:, :, :48] = 255  # top half white: rows, not columns
    write_stl(folder, "train", images, [1, 2, 3, 10])
    write_stl(folder, "test", images[:2], [10, 1])
    data = load_dataset("stl10", 32, tmp_path)
    assert data.test_y.tolist() == [9, 0]
    top, bottom = data.test_x[0, :, :8].mean(), data.test_x[0, :, -8:].mean()
    assert top > 0.9 and bottom < -0.9
    write_stl(folder, "test", images[:2], [10, 1], cut=7)
    with pytest.raises(DataFormatError, match="truncated"):
        load_dataset("stl10", 28, tmp_path)
    write_stl(folder, "test", images[:2], [0, 1])
    with pytest.raises(DataFormatError, match="out of range"):
        load_dataset("stl10", 28, tmp_path)


@pytest.mark.parametrize("dataset", ["mnist", "fmnist", "svhn", "usps", "cifar10", "stl10"])
def test_a_torchvision_root_is_a_data_dir(tmp_path, dataset):
    """Files where torchvision's dataset classes keep them under ``root`` are found as they are."""
    root = tmp_path / "torchvision"
    if dataset in ("mnist", "fmnist"):
        make_idx(root / {"mnist": "MNIST", "fmnist": "FashionMNIST"}[dataset] / "raw", compress=True)
        other = {"mnist": "fmnist", "fmnist": "mnist"}[dataset]
        assert not is_available(other, root)  # MNIST's files are not taken for Fashion-MNIST's
    elif dataset == "svhn":
        make_svhn(root)  # torchvision.datasets.SVHN keeps the .mat files in root itself
    elif dataset == "usps":
        root.mkdir()
        for name, n in (("usps.bz2", N_TRAIN), ("usps.t.bz2", N_TEST)):
            (root / name).write_bytes(bz2.compress(libsvm_lines(np.zeros((n, 16, 16)), labels(n, 1, 11))))
    elif dataset == "cifar10":
        make_cifar(root / "cifar-10-batches-py")
    else:
        folder = root / "stl10_binary"
        folder.mkdir(parents=True)
        images = np.zeros((4, 3, 96, 96), dtype=np.uint8)
        write_stl(folder, "train", images, [1, 2, 3, 10])
        write_stl(folder, "test", images[:2], [10, 1])
    assert is_available(dataset, root)
    assert len(load_dataset(dataset, 28, root).test_y) > 0


def test_small_cnn_zoo_datasets_read_the_same_files_as_its_pipeline_prepared_them(tmp_path):
    """train_network.py's _preprocess_batch: image / 255, scaled to [-1, 1], then
    tf.math.reduce_mean over channels (not luma); tfds' whole train split, images at their own size
    (32 for CIFAR-10 and SVHN, 28 for MNIST); the files are the ones the Model Zoos' datasets read."""
    batches = make_cifar(tmp_path / "cifar10" / "cifar-10-batches-py")
    svhn = make_svhn(tmp_path / "svhn")
    raw = make_idx(tmp_path / "mnist")
    cifar = load_dataset("cifar10gs", 32, tmp_path)
    x = batches["test_batch"][b"data"].reshape(-1, 3, 32, 32) / 255 * 2 - 1
    np.testing.assert_allclose(cifar.test_x[:, 0].numpy(), x.mean(axis=1), atol=1e-6)
    train = np.concatenate([batches[f"data_batch_{i}"][b"data"] for i in range(1, 6)]).reshape(-1, 3, 32, 32)
    np.testing.assert_allclose(cifar.train_x[:, 0].numpy(), (train / 255 * 2 - 1).mean(axis=1), atol=1e-6)
    grey = load_dataset("svhngs", 32, tmp_path)
    np.testing.assert_allclose(grey.test_x[:, 0].numpy(),
                               (np.transpose(svhn["test"][0], (3, 2, 0, 1)) / 255 * 2 - 1).mean(axis=1), atol=1e-6)
    assert grey.train_y.tolist() == np.where(svhn["train"][1] == 10, 0, svhn["train"][1]).tolist()
    mnist = load_dataset("mnist_tf", 28, tmp_path)
    np.testing.assert_allclose(mnist.train_x[:, 0].numpy(), raw["train_x"] / 255 * 2 - 1, atol=1e-6)
    assert mnist.train_y.tolist() == raw["train_y"].tolist()  # every train image, in file order
