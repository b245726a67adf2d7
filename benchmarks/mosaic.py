"""Large test images made of real ones: tiles laid row by row (the speed and GPU benchmarks share it)."""

from __future__ import annotations

import numpy as np


def tile_mosaic(tiles: list[np.ndarray], size: int, start: int = 0) -> np.ndarray:
    """A size x size image tiled row by row from ``tiles`` (cycled from ``start``), cut at the edges."""
    out = np.zeros((size, size), tiles[0].dtype)
    y = x = row_h = 0
    i = start
    while y < size:
        t = tiles[i % len(tiles)]
        i += 1
        h, w = t.shape
        out[y:y + h, x:x + w] = t[: size - y, : size - x]
        x += w
        row_h = max(row_h, h)
        if x >= size:
            x, y, row_h = 0, y + row_h, 0
    return out
