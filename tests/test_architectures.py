"""The registry's architectures: CNN-s and CNN-l match the original zoos (parameter counts, layer
order, init semantics), smallcnn the Small CNN Zoo's Keras model."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zoo_dataset.architectures import REGISTRY, build_model, get_architecture, parametrised_layers, seeded_model
from zoo_dataset.layout import ParameterLayout

# (architecture, channels) -> (parameters, weights); the paper's W column counts weights only.
COUNTS = {("cnn_s", 1): (2464, 2416), ("cnn_s", 3): (2864, 2816), ("cnn_l", 1): (10565, 10472),
          ("cnn_l", 3): (10853, 10760),
          # Small CNN Zoo README: "a total of 4970 parameters" on 1-channel input (4 biases of 16, 16, 16, 10)
          ("smallcnn", 1): (4970, 4970 - 58)}


@pytest.mark.parametrize(("arch", "channels"), sorted(COUNTS))
def test_parameter_counts(arch, channels):
    model = build_model(arch, channels, "tanh")
    layout = ParameterLayout.from_module(model)
    assert (layout.num_params, layout.num_weights) == COUNTS[(arch, channels)]
    assert sum(p.numel() for p in model.parameters()) == layout.num_params
    size = get_architecture(arch).image_size(28)
    assert model(torch.zeros(2, channels, size, size)).shape == (2, 10)
    assert tuple(name for name, _ in parametrised_layers(model)) == get_architecture(arch).layers


def test_dropout_placement_follows_the_originals():
    small = [n for n, _ in build_model("cnn_s", 1, "relu", dropout=0.0).named_children()]
    assert not any(n.startswith("drop") for n in small)
    small_drop = [n for n, _ in build_model("cnn_s", 1, "relu", dropout=0.5).named_children()]
    assert [n for n in small_drop if n.startswith("drop")] == ["drop1", "drop2", "drop4"]
    large = build_model("cnn_l", 3, "relu", dropout=0.0)
    assert sum(isinstance(m, nn.Dropout) for m in large.children()) == 4


def test_init_methods_and_bias():
    uniform = seeded_model("cnn_s", 1, "tanh", 0.0, "uniform", seed=1)
    w = uniform.conv2.weight.detach()
    assert float(w.min()) >= 0.0 and float(w.max()) <= 1.0  # torch's default U(0, 1)
    assert torch.all(uniform.fc1.bias == 0.01)
    normal = seeded_model("cnn_s", 1, "tanh", 0.0, "normal", seed=1)
    assert float(normal.fc1.weight.detach().std()) == pytest.approx(1.0, abs=0.15)


def test_seeded_model_is_a_function_of_the_seed_and_leaves_global_rng_alone():
    state = torch.get_rng_state()
    a = seeded_model("cnn_s", 1, "tanh", 0.0, "kaiming_uniform", seed=7)
    b = seeded_model("cnn_s", 1, "tanh", 0.0, "kaiming_uniform", seed=7)
    c = seeded_model("cnn_s", 1, "tanh", 0.0, "kaiming_uniform", seed=8)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a.conv1.weight, b.conv1.weight)
    assert not torch.equal(a.conv1.weight, c.conv1.weight)


def test_seeded_init_replays_the_original_global_seed_recipe():
    """The originals: torch.manual_seed(seed), build the model, then init from the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        reference = build_model("cnn_s", 1, "tanh")
        for layer in (reference.conv1, reference.conv2, reference.conv3, reference.fc1, reference.fc2):
            nn.init.uniform_(layer.weight)
    ours = seeded_model("cnn_s", 1, "tanh", 0.0, "uniform", seed=3)
    assert torch.equal(ours.fc2.weight, reference.fc2.weight)


@pytest.mark.parametrize("arch", sorted(REGISTRY))
def test_every_registered_architecture_builds_with_its_layers_and_dropout(arch):
    size = get_architecture(arch).image_size(32)
    for dropout in (0.0, 0.3):
        model = build_model(arch, 1, "relu", dropout)
        assert tuple(n for n, _ in parametrised_layers(model)) == REGISTRY[arch].layers
        assert model.eval()(torch.zeros(3, 1, size, size)).shape == (3, 10)


def keras_small_cnn(x, convs, dense, activation):
    """The Small CNN Zoo's forward pass written from train_network.py's build_cnn, independently of
    our builder: Conv2D(16, 3, strides=2) with Keras' default padding "valid" and the activation
    inside the layer (x3), GlobalAveragePooling2D (a mean over height and width), Dense(10)."""
    for weight, bias in convs:
        x = activation(F.conv2d(x, weight, bias, stride=2, padding=0))
    return F.linear(x.mean(dim=(2, 3)), *dense)


@pytest.mark.parametrize(("activation", "function"), [("relu", torch.relu), ("tanh", torch.tanh)])
@pytest.mark.parametrize("size", [28, 32])  # MNIST / Fashion-MNIST, greyscale CIFAR-10 / SVHN
def test_smallcnn_computes_the_small_cnn_zoo_model(activation, function, size):
    model = seeded_model("smallcnn", 1, activation, 0.0, "kaiming_uniform", seed=5).eval()
    x = torch.randn(4, 1, size, size, generator=torch.Generator().manual_seed(0))
    convs = [(model.get_submodule(f"conv{i}").weight, model.get_submodule(f"conv{i}").bias) for i in (1, 2, 3)]
    expected = keras_small_cnn(x, convs, (model.fc1.weight, model.fc1.bias), function)
    torch.testing.assert_close(model(x), expected)
    assert model.conv3(model.act2(model.conv2(model.act1(model.conv1(x))))).shape[-1] == {28: 2, 32: 3}[size]
