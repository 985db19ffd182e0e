"""Jobs and data for timing the engine without a zoo's data: random images, untrained start states.

Step time does not depend on what the pixels are, so MNIST-sized random images time an MNIST
build; the start state of MP and VD twins is an untrained CNN (MP pruned at 50 %).
"""

from __future__ import annotations

import torch

from zoo_dataset.architectures import build_model, get_architecture
from zoo_dataset.data import ImageData
from zoo_dataset.layout import ParameterLayout
from zoo_dataset.sparsify.magnitude import global_magnitude_mask
from zoo_dataset.specs import ModelConfig
from zoo_dataset.training import TrainJob, UnitKey

MP_LEVEL = 0.5


def random_data(n_train: int, n_test: int, architecture: str = "cnn_s", channels: int = 1,
                size: int = 28) -> ImageData:
    """Random images at the architecture's input size (``size`` where it takes the dataset's own)."""
    g = torch.Generator().manual_seed(0)
    size = get_architecture(architecture).image_size(size)

    def images(n: int) -> torch.Tensor:
        return torch.rand(n, channels, size, size, generator=g)

    def labels(n: int) -> torch.Tensor:
        return torch.randint(0, 10, (n,), generator=g)

    return ImageData("random", images(n_train), labels(n_train), images(n_test), labels(n_test))


def group_jobs(method: str, n: int, architecture: str = "cnn_s", channels: int = 1, dropout: float = 0.0,
               epochs: int = 1, batch_size: int = 10) -> list[TrainJob]:
    """``n`` jobs of ``method`` ("original", "mp" or "vd") that the engine trains as one group."""
    layout = ParameterLayout.from_module(build_model(architecture, channels, "tanh"))
    start = layout.flatten_module(build_model(architecture, channels, "tanh", dropout)).numpy()
    mask = global_magnitude_mask(start, layout, MP_LEVEL) if method == "mp" else None
    configs = [ModelConfig(m, seed=m + 1, activation="tanh", optimizer="adam", lr=1e-3, weight_decay=0.0,
                           dropout=dropout, init="uniform") for m in range(n)]
    return [TrainJob(key=UnitKey(c.model_id, MP_LEVEL if method == "mp" else 0.0), config=c,
                     architecture=architecture, method=method, epochs=epochs, lr=c.lr, batch_size=batch_size,
                     seed=c.seed, initial=None if method == "original" else start, mask=mask)
            for c in configs]
