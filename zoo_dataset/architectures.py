"""The zoos' architectures, one registry entry each: CNN-s and CNN-l exactly as in the original
Model Zoos, and ``smallcnn``, the CNN of the Small CNN Zoo (Unterthiner et al. 2020).

Each is an ``nn.Sequential`` with named stages (``conv1``, ``pool1``, ``act1``, ``drop1``...) so
that state-dict keys read as layer names; its parametrised layers (``conv1, conv2, conv3, fc1,
fc2`` for CNN-s and CNN-l: the per-layer columns of the paper's tables) are the entry's
``layers``. Everything else (stores, layouts, the engine, the loaders) derives from the built
module, so a new architecture is one builder and one :class:`Architecture` here.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .counter_rng import CounterDropout
from .errors import ZooSpecError

BIAS_INIT = 0.01
Stages = list[tuple[str, nn.Module]]


def activation_module(name: str) -> nn.Module:
    table = {"tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "relu": nn.ReLU, "gelu": nn.GELU}
    if name not in table:
        raise ZooSpecError(f"unknown activation {name!r}; choose one of {', '.join(table)}")
    return table[name]()


def _cnn_s(channels: int, activation: str, dropout: float) -> Stages:
    # CNN-s places dropout only where the rate is positive (the original zoos did the same).
    def drop(i: int) -> Stages:
        return [(f"drop{i}", CounterDropout(dropout))] if dropout > 0 else []

    return [
        ("conv1", nn.Conv2d(channels, 8, 5)), ("pool1", nn.MaxPool2d(2)), ("act1", activation_module(activation)),
        *drop(1),
        ("conv2", nn.Conv2d(8, 6, 5)), ("pool2", nn.MaxPool2d(2)), ("act2", activation_module(activation)),
        *drop(2),
        ("conv3", nn.Conv2d(6, 4, 2)), ("act3", activation_module(activation)),
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(36, 20)), ("act4", activation_module(activation)),
        *drop(4),
        ("fc2", nn.Linear(20, 10)),
    ]


def _cnn_l(channels: int, activation: str, dropout: float) -> Stages:
    # CNN-l always has a dropout module after each activation, even at rate 0.
    return [
        ("conv1", nn.Conv2d(channels, 16, 3)), ("pool1", nn.MaxPool2d(2)), ("act1", activation_module(activation)),
        ("drop1", CounterDropout(dropout)),
        ("conv2", nn.Conv2d(16, 32, 3)), ("pool2", nn.MaxPool2d(2)), ("act2", activation_module(activation)),
        ("drop2", CounterDropout(dropout)),
        ("conv3", nn.Conv2d(32, 15, 3)), ("pool3", nn.MaxPool2d(2)), ("act3", activation_module(activation)),
        ("drop3", CounterDropout(dropout)),
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(60, 20)), ("act4", activation_module(activation)),
        ("drop4", CounterDropout(dropout)),
        ("fc2", nn.Linear(20, 10)),
    ]


def _smallcnn(channels: int, activation: str, dropout: float) -> Stages:
    """The Small CNN Zoo's CNN, as ``build_cnn`` of google-research ``dnn_predict_accuracy/train_network.py``
    builds it (docs/research/small-cnn-zoo.md): three Keras ``Conv2D(16, 3, strides=2)`` with the
    activation inside the layer and Keras' default padding ``valid`` (none), each followed by
    ``Dropout`` where the rate is positive, then ``GlobalAveragePooling2D`` and ``Dense(10)``:
    4 970 parameters on 1-channel input, at any input size of at least 15 pixels."""
    stages: Stages = []
    for i, inputs in enumerate((channels, 16, 16), start=1):
        stages += [(f"conv{i}", nn.Conv2d(inputs, 16, 3, stride=2)), (f"act{i}", activation_module(activation))]
        if dropout > 0:
            stages.append((f"drop{i}", CounterDropout(dropout)))
    return [*stages, ("pool", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()), ("fc1", nn.Linear(16, 10))]


@dataclass(frozen=True)
class Architecture:
    """One architecture: how to build it, its input size and its parametrised layers."""

    name: str
    stages: Callable[[int, str, float], Stages]  # (input channels, activation, dropout) -> named stages
    input_size: int | None  # images are resized to this side; None: the dataset's own size
    layers: tuple[str, ...]  # the conv/linear stages in forward order: the layout's and tables' layers
    description: str

    def image_size(self, native: int) -> int:
        """The side the inputs have for a dataset whose images have side ``native``."""
        return self.input_size or native


REGISTRY: dict[str, Architecture] = {a.name: a for a in (
    Architecture("cnn_s", _cnn_s, 28, ("conv1", "conv2", "conv3", "fc1", "fc2"),
                 "CNN-s of the Model Zoos: 3 conv layers with max pooling, 2 dense layers"),
    Architecture("cnn_l", _cnn_l, 32, ("conv1", "conv2", "conv3", "fc1", "fc2"),
                 "CNN-l of the Model Zoos: 3 wider conv layers with max pooling, 2 dense layers"),
    Architecture("smallcnn", _smallcnn, None, ("conv1", "conv2", "conv3", "fc1"),
                 "CNN of the Small CNN Zoo: 3 conv layers of 16 channels, stride 2, global average pooling, "
                 "1 dense layer"),
)}


def get_architecture(name: str) -> Architecture:
    if name not in REGISTRY:
        raise ZooSpecError(f"unknown architecture {name!r}; choose one of {', '.join(REGISTRY)}")
    return REGISTRY[name]


def build_model(architecture: str, channels: int, activation: str, dropout: float = 0.0) -> nn.Sequential:
    """An untrained CNN (PyTorch default init); call :func:`initialize` to apply a zoo's init."""
    return nn.Sequential(OrderedDict(get_architecture(architecture).stages(channels, activation, dropout)))


def parametrised_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The conv and linear layers in forward order: what pruning and layouts act on."""
    return [(n, m) for n, m in model.named_children() if isinstance(m, nn.Conv2d | nn.Linear)]


def initialize(model: nn.Module, method: str) -> None:
    """Apply a zoo init method to every conv/linear weight; biases start at 0.01.

    As in the original zoos, each method is the ``torch.nn.init`` function with its default
    arguments ("uniform" is U(0, 1), "normal" is N(0, 1)), drawing from the global torch RNG.
    """
    init = nn.init
    methods = {
        "uniform": init.uniform_,
        "normal": init.normal_,
        "kaiming_uniform": init.kaiming_uniform_,
        "kaiming_normal": init.kaiming_normal_,
        "xavier_uniform": init.xavier_uniform_,
        "xavier_normal": init.xavier_normal_,
    }
    if method not in methods:
        raise ZooSpecError(f"unknown init {method!r}; choose one of {', '.join(methods)}")
    with torch.no_grad():
        for _, layer in parametrised_layers(model):
            methods[method](layer.weight)
            layer.bias.fill_(BIAS_INIT)


def seeded_model(architecture: str, channels: int, activation: str, dropout: float, init: str,
                 seed: int) -> nn.Sequential:
    """A model initialised from ``seed`` exactly as the original zoos did.

    The originals seeded the global RNG, built the model (layer constructors draw from it), then
    applied the init method. We replay that in a forked RNG, so the global state is untouched.
    (Training randomness after the init is counter-based: :mod:`zoo_dataset.counter_rng`.)
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(architecture, channels, activation, dropout)
        initialize(model, method=init)
    return model
