"""What a zoo's models look like, from its spec: their parameter layout and input size (the
architecture's and the dataset's together)."""

from __future__ import annotations

from .architectures import build_model, get_architecture
from .data import get_source
from .layout import ParameterLayout
from .specs import ZooSpec


def layout_for(spec: ZooSpec) -> ParameterLayout:
    channels = get_source(spec.dataset).channels
    return ParameterLayout.from_module(build_model(spec.architecture, channels, "tanh"))


def input_size(spec: ZooSpec) -> int:
    """The side of the images the zoo's models see: the architecture's, else the dataset's own."""
    return get_architecture(spec.architecture).image_size(get_source(spec.dataset).native_size)
