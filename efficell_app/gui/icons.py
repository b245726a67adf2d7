"""Small icons drawn in code (status dots, thumbnails from ``core.overlay.thumbnail_array``) so the app needs no image files."""

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


def array_to_icon(rgb: np.ndarray) -> QIcon:
    """``(H, W, 3)`` uint8 -> QIcon (GUI thread only)."""
    rgb = np.ascontiguousarray(rgb)
    h, w = rgb.shape[:2]
    img = QImage(rgb.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()
    return QIcon(QPixmap.fromImage(img))
