"""zoo twins core: zoo specs, architectures, parameter layouts, data, training, metrics and the store."""

__version__ = "0.1.0"
