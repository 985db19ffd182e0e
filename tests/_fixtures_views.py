"""Stores of both architectures for the weight-space view tests: the shared built CNN-s store (real
training, MP and VD twins) and a small CNN-l store written through the real writer (random states;
training CNN-l on the digits takes minutes)."""

from __future__ import annotations

from pathlib import Path

from _analysis_store import synthetic_store
from _fixtures_loader import shared_loader_store


def architecture_stores(tmp_path_factory) -> dict[str, Path]:
    cnn_l = synthetic_store(tmp_path_factory.mktemp("cnn-l"), n_models=3, architecture="cnn_l", original_epochs=1,
                            mp_levels=(0.5, 0.9), mp_epochs=1, vd_epochs=1)
    return {"cnn_s": shared_loader_store(tmp_path_factory), "cnn_l": cnn_l.zoo_dir}
