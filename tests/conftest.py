"""Shared fixtures: a tiny real build of the embedded zoo, made once per test worker."""

from __future__ import annotations

import os

import pytest
import torch

# Tests never touch the network: hub code paths run against local caches only.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
# pytest -n 2 runs two workers on two cores: one torch thread each avoids oversubscription, unless
# OMP_NUM_THREADS asks for another count (the CI matrix runs the suite with 1 and 2 threads).
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

from builders.build import build_zoo  # noqa: E402  (after the offline settings)
from zoo_dataset.specs import get_spec  # noqa: E402

SMALL = {"model_subset": range(4), "epochs": 2}


@pytest.fixture
def one_thread():
    """One torch thread for the test: tiny models train fastest so, and a comparison with a worker
    process or a subprocess (one thread each) then sees the same reduction order, whatever
    OMP_NUM_THREADS the suite runs with."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def small_spec():
    """digits_seed cut to 4 models and 2 epochs: seconds to train, real data, real store."""
    return get_spec("digits_seed").with_overrides(**SMALL)


@pytest.fixture(scope="session")
def original_store(tmp_path_factory, small_spec):
    """A store holding the original population of ``small_spec``."""
    root = tmp_path_factory.mktemp("stores")
    store, _ = build_zoo(small_spec, root, stages=["original"], progress=False)
    return store
