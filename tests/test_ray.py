"""A Ray build of the embedded zoo holds the same store content as a local build.

Runs on a local Ray instance (2 CPUs); skipped where Ray is not installed (it is an optional extra).
"""

from __future__ import annotations

import numpy as np
import pytest

from builders.build import build_zoo
from builders.executors import RayTrainer
from zoo_dataset.specs import get_spec
from zoo_dataset.training.engine import PopulationEngine

# a grouped convolution's rounding depends on how many models share it (and Adam amplifies it); models
# train in the store's fixed chunks (here [0, 1] and [2]) wherever they run, so stores agree bit for bit

ray = pytest.importorskip("ray", reason="Ray is an optional extra (pip install 'zoo-twins[ray]'); not installed")

SPEC = {"model_subset": range(3), "epochs": 1, "mp_epochs": 1, "mp_levels": (0.5,), "vd_epochs": 1,
        "models_per_shard": 2}


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_build_equals_local_build(local_ray, tmp_path):
    spec = get_spec("digits_seed").with_overrides(**SPEC)
    local, _ = build_zoo(spec, tmp_path / "local", progress=False, trainer=PopulationEngine())
    remote, _ = build_zoo(spec, tmp_path / "ray", progress=False, trainer=RayTrainer())
    assert remote.populations == local.populations == ["original", "mp", "vd"]
    for population in local.populations:
        levels = local.population(population).levels
        for model_id in [m.model_id for m in spec.models()]:
            for level in levels:
                for name in local.population(population).arrays:
                    np.testing.assert_array_equal(remote.array(name, population, model_id, slice(None), level),
                                                  local.array(name, population, model_id, slice(None), level))
        numeric = local.states(population).select_dtypes("number").columns
        columns = [c for c in numeric if c not in ("shard", "row")]
        ours = remote.states(population).sort_values(["model_id", "level", "epoch"])[columns]
        theirs = local.states(population).sort_values(["model_id", "level", "epoch"])[columns]
        np.testing.assert_allclose(ours.to_numpy(float), theirs.to_numpy(float), equal_nan=True)
    remote.verify()
