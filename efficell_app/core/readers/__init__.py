"""Readers for microscope vendor formats: one module per format, each built on the well-kept
library of that format (the same libraries the bioio plugins wrap; benchmarks/formats.py
measures both, docs/benchmarks.md has the table):

========  ===============  ============================================================
suffix    module           library
========  ===============  ============================================================
.czi      :mod:`.zeiss`    pylibCZIrw (ZEISS; zstd/JPEG-XR subblocks, scenes, mosaics)
.nd2      :mod:`.nikon`    nd2 (positions ``P`` become scenes)
.lif      :mod:`.leica`    liffile (each image of the file is a scene)
.oib      :mod:`.olympus`  oiffile
.dv       :mod:`.deltavision`  mrc
========  ===============  ============================================================

Each module has ``scene_names(path) -> list[str]`` and ``read(path, scene, planes) -> ImageData``
(it checks ``scene`` with :func:`..images.check_scene` and names it, opening the file once).
Imports are late: opening the app or reading a TIFF loads none of them.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from ..image_data import ImageData, PlaneChoice

_MODULES = {".czi": "zeiss", ".nd2": "nikon", ".lif": "leica", ".oib": "olympus", ".dv": "deltavision"}


def _module(path: Path):  # noqa: ANN202 - a reader module
    return importlib.import_module(f"{__name__}.{_MODULES[path.suffix.lower()]}")


def scene_names(path: str | Path) -> list[str]:
    """Names of the scenes of a vendor file (one entry when it has a single scene)."""
    return _module(Path(path)).scene_names(Path(path))


def read(path: str | Path, planes: PlaneChoice | None, scene: int | None) -> ImageData:
    """One scene of a vendor file as ImageData (``scene=None``: the file must have one scene)."""
    path = Path(path)
    return _module(path).read(path, scene, planes or PlaneChoice())
