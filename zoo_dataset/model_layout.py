"""The parameter layout of a zoo's models, from its spec (architecture and the dataset's channels)."""

from __future__ import annotations

from .architectures import build_model
from .data import get_source
from .layout import ParameterLayout
from .specs import ZooSpec


def layout_for(spec: ZooSpec) -> ParameterLayout:
    channels = get_source(spec.dataset).channels
    return ParameterLayout.from_module(build_model(spec.architecture, channels, "tanh"))
