"""Option types the commands share: a bad value is a one-line usage error (exit 2) before any work."""

from __future__ import annotations

import argparse
import math


def pixel_size_um(text: str) -> float:
    """``--pixel-size``: a positive, finite number of micrometres."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number of micrometres, not '{text}'")
    return value
