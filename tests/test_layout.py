"""The flat parameter layout round-trips and knows weights from biases."""

import numpy as np
import pytest
import torch

from zoo_dataset.architectures import build_model, seeded_model
from zoo_dataset.layout import ParameterLayout


def test_flatten_unflatten_round_trip():
    model = seeded_model("cnn_l", 3, "gelu", 0.0, "kaiming_normal", seed=2)
    layout = ParameterLayout.from_module(model)
    flat = layout.flatten_module(model)
    assert flat.shape == (layout.num_params,)
    named = layout.unflatten(flat)
    for name, tensor in model.named_parameters():
        assert torch.equal(named[name], tensor.detach())
    other = layout.load_into(build_model("cnn_l", 3, "gelu"), flat)
    x = torch.randn(3, 3, 32, 32)
    assert torch.allclose(model(x), other(x))


def test_batched_unflatten_and_dict_round_trip():
    layout = ParameterLayout.from_module(build_model("cnn_s", 1, "tanh"))
    batch = torch.randn(5, 7, layout.num_params)
    assert layout.unflatten(batch)["conv2.weight"].shape == (5, 7, 6, 8, 5, 5)
    assert ParameterLayout.from_dict(layout.to_dict()) == layout


def test_weight_mask_and_sparsity_exclude_biases():
    layout = ParameterLayout.from_module(build_model("cnn_s", 1, "tanh"))
    assert layout.weight_mask().sum() == layout.num_weights == 2416
    flat = np.ones(layout.num_params, dtype=np.float32)
    flat[layout.by_name["fc2.weight"].slice] = 0.0  # 200 of 2416 weights
    flat[layout.by_name["fc2.bias"].slice] = 0.0  # biases do not count
    assert layout.global_sparsity(flat) == np.float64(200 / 2416)
    per_layer = layout.layer_sparsity(flat)
    assert per_layer["fc2"] == 1.0 and per_layer["conv1"] == 0.0
    assert list(per_layer) == ["conv1", "conv2", "conv3", "fc1", "fc2"]


def entries():
    return ParameterLayout.from_module(build_model("cnn_s", 1, "tanh")).to_dict()


def changed(change):
    data = entries()
    change(data)
    return data


@pytest.mark.parametrize(("data", "message"), [
    (changed(lambda d: d[2].update(offset=d[2]["offset"] + 1)), "starts at"),  # a gap
    (changed(lambda d: d[2].update(offset=d[2]["offset"] - 10)), "starts at"),  # an overlap
    (changed(lambda d: d[0].update(shape=[8, 1, 5, 4])), "starts at"),  # sizes no longer add up
    (changed(lambda d: d[0].update(shape=[8, 0, 5, 5])), "positive whole numbers"),
    (changed(lambda d: d[0].update(shape=[8, True, 5, 5])), "positive whole numbers"),
    (changed(lambda d: d[0].update(offset=0.0)), "starts at"),
    (changed(lambda d: d.__setitem__(slice(0, 2), [d[1], d[0]])), "is not the weight of its layer"),
    (changed(lambda d: d[1].update(layer="conv2", name="conv2.bias")), "is not the bias of its layer"),
    (changed(lambda d: d.pop()), "each layer once"),
    (changed(lambda d: d[0].pop("kind")), "is not an object"),
    ([], "non-empty list"),
])
def test_from_dict_refuses_a_layout_that_does_not_tile_the_flat_vector(data, message):
    """A manifest's layout is input: one changed digit once shifted every view of every state."""
    with pytest.raises(ValueError, match=message):
        ParameterLayout.from_dict(data)
