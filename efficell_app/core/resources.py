"""Where the package's bundled resources are, in a source checkout and in a PyInstaller bundle."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def resources_dir() -> Path:
    """``resources/`` beside the package (checkout) or inside the bundle (``sys._MEIPASS``)."""
    env = os.environ.get("EFFICELL_RESOURCES")
    if env:
        return Path(env)
    base = getattr(sys, "_MEIPASS", None)
    if base:
        return Path(base) / "resources"
    return Path(__file__).resolve().parents[2] / "resources"


def models_dir() -> Path:
    return resources_dir() / "models"


def samples_dir() -> Path:
    return resources_dir() / "samples"
