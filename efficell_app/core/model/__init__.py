"""The EffiCell model: frozen encoder + trainable adapters (CSPE + SMD), and adapter files."""

from .adapters import AdapterConfig, EffiCellAdapters, build_adapters
from .efficell import EffiCellModel

__all__ = ["AdapterConfig", "EffiCellAdapters", "EffiCellModel", "build_adapters"]
