"""Resume is bit-identical: models train in fixed chunks of ids recorded in the manifest, so which
models share an engine group never depends on what a killed run had finished."""

from __future__ import annotations

import shutil

import numpy as np

from builders.build import build_zoo
from zoo_dataset.specs import get_spec
from zoo_dataset.store import ZooStore
from zoo_dataset.training.engine import PopulationEngine

SPEC = get_spec("digits_seed").with_overrides(model_subset=range(4), epochs=1, vd_epochs=1, models_per_shard=2)


class Killed(Exception):
    """Stands in for SIGKILL: the build stops with some VD units staged and the rest not."""


class KillDuringVD:
    """The population engine, stopped after ``after`` VD results have been handed out."""

    def __init__(self, after: int):
        self.engine, self.after = PopulationEngine(), after

    def run(self, jobs, data, on_epoch=None):
        for result in self.engine.run(jobs, data, on_epoch):
            if jobs[0].method == "vd":
                if self.after == 0:
                    raise Killed
                self.after -= 1
            yield result


def same_population(a: ZooStore, b: ZooStore, population: str) -> None:
    info = a.population(population)
    for model_id in a.manifest.model_ids:
        for name in info.arrays:
            np.testing.assert_array_equal(a.array(name, population, model_id, slice(None)),
                                          b.array(name, population, model_id, slice(None)))
    keys = ["model_id", "epoch"]
    assert a.states(population).sort_values(keys).reset_index(drop=True).equals(
        b.states(population).sort_values(keys).reset_index(drop=True))


def test_a_vd_build_killed_mid_chunk_resumes_bit_identical(tmp_path):
    """Killed with 3 of 4 VD units staged (chunk [2, 3] half done), the resumed build retrains that
    chunk whole; once, model 3 trained alone and its twin differed from an uninterrupted build's."""
    original, _ = build_zoo(SPEC, tmp_path / "whole", stages=["original"], progress=False)
    assert original.manifest.chunk_size == 2
    root = tmp_path / "killed"
    shutil.copytree(original.zoo_dir, root / SPEC.name)
    whole, _ = build_zoo(SPEC, tmp_path / "whole", stages=["vd"], progress=False)
    try:
        build_zoo(SPEC, root, stages=["vd"], progress=False, trainer=KillDuringVD(after=3))
    except Killed:
        pass
    else:
        raise AssertionError("the build was not interrupted")
    assert len(list((root / SPEC.name / "_staging" / "vd").glob("*.h5"))) == 1  # model 2 staged, 3 not
    resumed, reports = build_zoo(SPEC, root, stages=["original", "vd"], resume=True, progress=False)
    assert [r.units_trained for r in reports] == [0, 1]  # one unit staged; its chunk-mate trained again
    same_population(resumed, whole, "original")
    same_population(resumed, whole, "vd")
    resumed.verify()
