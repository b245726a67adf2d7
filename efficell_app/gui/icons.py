"""Small icons drawn in code (status dots, thumbnails) so the app needs no image files."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtGui import QBrush, QColor, QIcon, QImage, QPainter, QPen, QPixmap

STATUS_COLOURS = {
    "new": "#9aa0a6",
    "running": "#f2a900",
    "segmented": "#3b82f6",
    "annotated": "#16a34a",
    "reviewed": "#a855f7",
    "failed": "#dc2626",
    "missing": "#dc2626",
}
_cache: dict[str, QIcon] = {}


def status_icon(status: str, size: int = 12) -> QIcon:
    """A filled circle in the status colour (cached)."""
    key = f"{status}:{size}"
    if key not in _cache:
        pm = QPixmap(size, size)
        pm.fill(Qt.GlobalColor.transparent)
        p = QPainter(pm)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        colour = QColor(STATUS_COLOURS.get(status, "#9aa0a6"))
        p.setPen(QPen(colour.darker(130), 1))
        p.setBrush(QBrush(colour))
        p.drawEllipse(1, 1, size - 2, size - 2)
        p.end()
        _cache[key] = QIcon(pm)
    return _cache[key]


def thumbnail_array(data: np.ndarray, size: int = 48) -> np.ndarray:
    """``(C, H, W)`` raw image -> ``(s, s, 3)`` uint8 thumbnail (contrast-stretched, letterboxed).

    Pure numpy, so it can run in a worker thread.
    """
    from .overlay import composite, default_displays

    c, h, w = data.shape
    step = max(1, int(np.ceil(max(h, w) / size)))
    small = np.ascontiguousarray(data[:, ::step, ::step])
    rgb = composite(small, default_displays(small, tuple(f"ch{i}" for i in range(c)), c == 3))
    out = np.full((size, size, 3), 20, dtype=np.uint8)
    sh, sw = rgb.shape[:2]
    sh, sw = min(sh, size), min(sw, size)
    r0, c0 = (size - sh) // 2, (size - sw) // 2
    out[r0 : r0 + sh, c0 : c0 + sw] = rgb[:sh, :sw]
    return out


def array_to_icon(rgb: np.ndarray) -> QIcon:
    """``(H, W, 3)`` uint8 -> QIcon (GUI thread only)."""
    rgb = np.ascontiguousarray(rgb)
    h, w = rgb.shape[:2]
    img = QImage(rgb.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()
    return QIcon(QPixmap.fromImage(img))
