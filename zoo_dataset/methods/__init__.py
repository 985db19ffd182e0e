"""The method registry: every population a zoo can hold, one module per method.

Each module of this package that defines ``METHOD`` (a :class:`Method`) is registered; adding a
method means writing one file here (``mp_local.py`` is an example). The engine, the stages, the
store, the loaders, the card and the report iterate over :func:`methods`; none of them names a
method. Importing the registry imports no training engine and no dataset reader.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from functools import cache

from ..errors import ZooSpecError
from ..population_hooks import LayerOp, PopulationHooks
from .base import Method

__all__ = ["LayerOp", "Method", "PopulationHooks", "default_methods", "get_method", "methods", "twin_methods"]


@cache
def methods() -> dict[str, Method]:
    """Every registered method by name, in pipeline order (a method after what it requires)."""
    found = []
    for module in pkgutil.iter_modules(__path__):
        method = getattr(importlib.import_module(f"{__name__}.{module.name}"), "METHOD", None)
        if isinstance(method, Method):
            found.append(method)
    return {m.name: m for m in sorted(found, key=lambda m: (m.order, m.name))}


def get_method(name: str) -> Method:
    """The method called ``name``; an unknown name is one line with the closest matches."""
    registered = methods()
    if name not in registered:
        close = difflib.get_close_matches(name, registered, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ZooSpecError(f"unknown method {name!r}{hint}; registered: {', '.join(registered)}")
    return registered[name]


def twin_methods() -> list[Method]:
    """The methods that make twins of another population (every method but the original)."""
    return [m for m in methods().values() if m.requires is not None]


def default_methods() -> list[Method]:
    """The methods a build runs unless told otherwise."""
    return [m for m in methods().values() if m.default]
