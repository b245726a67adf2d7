"""Where the package's bundled resources (built-in model, samples, icons) are, however EffiCell
was installed."""

from __future__ import annotations

import os
import sys
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parents[1]  # efficell_app/


def resources_dir() -> Path:
    """The resources folder, looked for in this order:

    1. ``EFFICELL_RESOURCES`` (a folder given by the user or a test);
    2. inside a PyInstaller bundle: ``sys._MEIPASS/resources`` (build.spec puts it there);
    3. inside the installed package: ``efficell_app/resources`` (a wheel or ``pip install .``:
       setup.py copies the top-level ``resources/`` there at build time);
    4. ``resources/`` beside the package (a source checkout or an editable install).
    """
    env = os.environ.get("EFFICELL_RESOURCES")
    if env:
        return Path(env)
    base = getattr(sys, "_MEIPASS", None)
    if base:
        return Path(base) / "resources"
    inside = _PACKAGE / "resources"
    if inside.is_dir():
        return inside
    return _PACKAGE.parent / "resources"


def models_dir() -> Path:
    return resources_dir() / "models"


def samples_dir() -> Path:
    return resources_dir() / "samples"
