"""The image datasets: format reader, preprocessing, official URL, Hub id.

The paper's six follow the original Model Zoos generators (docs/research/original-zoos.md,
section 1.2); the Small CNN Zoo's four read the same files, prepared as its TensorFlow pipeline
prepared them (docs/research/small-cnn-zoo.md). docs/datasets.md explains each entry.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from .base import ImageData
from .cifar import CifarReader
from .files import candidate_folders, data_source_mode, missing_error
from .hub import HubEntry, is_cached, read_hub
from .idx import IdxReader
from .raw import Preprocessing, RawImages, prepare
from .stl10 import Stl10Reader
from .svhn import SvhnReader
from .usps import UspsReader

MNIST_NORM = {"mean": (0.1307,), "std": (0.3081,)}
HALF = {"mean": (0.5,), "std": (0.5,)}
HALF_RGB = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}


class FormatReader(Protocol):
    files: tuple[str, ...]  # what a user must provide, for messages
    subfolders: tuple[str, ...]  # folders an official archive unpacks to, inside <data dir>/<dataset>

    def locate(self, folders: list[Path]) -> Path | None: ...

    def read(self, folder: Path) -> RawImages: ...


@dataclass(frozen=True)
class FileSource:
    """A dataset read from its official files, or from the Hub when allowed ($ZOO_TWINS_DATA_SOURCE)."""

    name: str
    channels: int  # channels the zoos use
    raw_channels: int  # channels of the distributed images
    native_size: int  # side of the distributed images
    reader: FormatReader
    prep: Preprocessing
    url: str
    hub: HubEntry
    torchvision: tuple[str, ...] = ()  # where torchvision's dataset class keeps the files under its root
    folder: str = ""  # <data dir>/<folder> holds the files (default: the name); datasets may share files

    @property
    def files_folder(self) -> str:
        return self.folder or self.name

    def folders(self, data_dir: Path | None) -> list[Path]:
        return candidate_folders(self.files_folder, data_dir, self.reader.subfolders, self.torchvision)

    def is_available(self, data_dir: Path | None = None) -> bool:
        """Cheap: the files are present, or the Hub copy is prepared in the HF cache."""
        mode = data_source_mode()
        if mode != "hub" and self.reader.locate(self.folders(data_dir)) is not None:
            return True
        return mode != "files" and is_cached(self.hub)

    def load(self, image_size: int, data_dir: Path | None = None) -> ImageData:
        return prepare(self.name, self.read_raw(data_dir).check(self.raw_channels), image_size, self.prep)

    def read_raw(self, data_dir: Path | None = None) -> RawImages:
        mode = data_source_mode()
        folder = None if mode == "hub" else self.reader.locate(self.folders(data_dir))
        if folder is not None:
            return self.reader.read(folder)
        missing = missing_error(self.files_folder, data_dir, self.reader.files, self.url, self.hub.repo)
        if mode == "files":
            raise missing
        return read_hub(self.hub, str(missing))


IMAGE_SOURCES: dict[str, FileSource] = {
    s.name: s
    for s in (
        FileSource("mnist", 1, 1, 28, IdxReader(),
                   Preprocessing(**MNIST_NORM, official_train=60000, zoo_train=50000),
                   "https://ossci-datasets.s3.amazonaws.com/mnist/ (mirror of yann.lecun.com/exdb/mnist)",
                   HubEntry("ylecun/mnist", "mnist"), ("MNIST/raw",)),
        FileSource("fmnist", 1, 1, 28, IdxReader(), Preprocessing(**HALF, official_train=60000, zoo_train=50000),
                   "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                   HubEntry("zalando-datasets/fashion_mnist", "fashion_mnist"), ("FashionMNIST/raw",)),
        FileSource("svhn", 1, 3, 32, SvhnReader(),
                   Preprocessing(**HALF, official_train=73257, zoo_train=60000, greyscale=True, crop=True),
                   "http://ufldl.stanford.edu/housenumbers/",
                   HubEntry("ufldl-stanford/svhn", "cropped_digits"), ("SVHN", "")),
        FileSource("usps", 1, 1, 16, UspsReader(),
                   Preprocessing(**MNIST_NORM, official_train=7291, zoo_train=6000),
                   "https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/multiclass.html#usps",
                   HubEntry("flwrlabs/usps"), ("USPS", "")),
        FileSource("cifar10", 3, 3, 32, CifarReader(),
                   Preprocessing(**HALF_RGB, official_train=50000, zoo_train=42000),
                   "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz (unpacked)",
                   HubEntry("uoft-cs/cifar10", "plain_text", image="img"), ("cifar-10-batches-py",)),
        FileSource("stl10", 3, 3, 96, Stl10Reader(),
                   Preprocessing(**HALF_RGB, official_train=5000, zoo_train=4200),
                   "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz (unpacked)",
                   HubEntry("tanganke/stl10"), ("stl10_binary",)),
    )
}


def small_cnn_zoo(name: str, base: FileSource) -> FileSource:
    """``base``'s files as the Small CNN Zoo's ``train_network.py`` prepared them (tfds, then
    ``_preprocess_batch``): the whole official train split, pixels / 255 scaled to [-1, 1], colour
    averaged over channels (``tf.math.reduce_mean``, not luma), images at their own size."""
    n = base.prep.official_train
    prep = Preprocessing(**HALF, official_train=n, zoo_train=n, channel_mean=base.raw_channels > 1)
    return replace(base, name=name, channels=1, prep=prep, folder=base.name)


IMAGE_SOURCES.update({s.name: s for s in (
    small_cnn_zoo("mnist_tf", IMAGE_SOURCES["mnist"]), small_cnn_zoo("fmnist_tf", IMAGE_SOURCES["fmnist"]),
    small_cnn_zoo("cifar10gs", IMAGE_SOURCES["cifar10"]), small_cnn_zoo("svhngs", IMAGE_SOURCES["svhn"]),
)})
