"""CNN-s and CNN-l exactly as in the original model zoos.

Both are ``nn.Sequential`` models with named stages (``conv1``, ``pool1``, ``act1``, ``drop1``...)
so that state-dict keys read as layer names. The parametrised layers are always
``conv1, conv2, conv3, fc1, fc2``: the per-layer columns of the paper's tables.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from .counter_rng import CounterDropout
from .errors import ZooSpecError

BIAS_INIT = 0.01
LAYER_NAMES = ("conv1", "conv2", "conv3", "fc1", "fc2")


INPUT_SIZE = {"cnn_s": 28, "cnn_l": 32}


def activation_module(name: str) -> nn.Module:
    table = {"tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "relu": nn.ReLU, "gelu": nn.GELU}
    if name not in table:
        raise ZooSpecError(f"unknown activation {name!r}; choose one of {', '.join(table)}")
    return table[name]()


def _cnn_s(channels: int, activation: str, dropout: float) -> list[tuple[str, nn.Module]]:
    # CNN-s places dropout only where the rate is positive (the original zoos did the same).
    def drop(i: int) -> list[tuple[str, nn.Module]]:
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


def _cnn_l(channels: int, activation: str, dropout: float) -> list[tuple[str, nn.Module]]:
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


def build_model(architecture: str, channels: int, activation: str, dropout: float = 0.0) -> nn.Sequential:
    """An untrained CNN (PyTorch default init); call :func:`initialize` to apply a zoo's init."""
    builders = {"cnn_s": _cnn_s, "cnn_l": _cnn_l}
    if architecture not in builders:
        raise ZooSpecError(f"unknown architecture {architecture!r}; choose one of {', '.join(builders)}")
    return nn.Sequential(OrderedDict(builders[architecture](channels, activation, dropout)))


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
