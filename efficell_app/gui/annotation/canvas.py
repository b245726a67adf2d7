"""The annotation layer on the viewer: a tiled label overlay redrawn only where edits happen,
and the mouse gestures of the tools (strokes, clicks, outlines, lines).

The canvas is one pyqtgraph ``GraphicsObject`` over the image (item coordinates = image
pixels: x = column, y = row). It holds the overlay as 512 x 512 tiles (``ImageItem``
children), so an edit re-renders only the tiles it touches: a brush stroke on a 4k x 4k
image costs a few small renders, not a full-image one. With the "navigate" tool it lets every
mouse event through to the viewer (pan/zoom/select).
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QPainter, QPen

from ...core import overlay as ov

TILE = 512
TOOLS = ("navigate", "brush", "eraser", "fill", "polygon", "freehand", "delete", "merge", "split")
_CLICK_TOOLS = ("fill", "delete", "merge", "polygon")
_DRAG_TOOLS = ("brush", "eraser", "freehand", "split")


class AnnotationCanvas(pg.GraphicsObject):
    """Overlay + gestures. Signals carry image coordinates as ``(row, col)`` floats."""

    stroke_started = Signal(float, float)
    stroke_moved = Signal(float, float)
    stroke_finished = Signal(object)  # list[(row, col)] of the whole gesture
    clicked = Signal(float, float, bool)  # row, col, double-click
    size_step = Signal(int)  # +1 / -1 from Ctrl+wheel

    def __init__(self) -> None:
        super().__init__()
        self.tool = "navigate"
        self.mode = "fill"
        self.brush_radius = 4
        self._shape = (0, 0)
        self._labels: np.ndarray | None = None
        self.lut = np.zeros((1, 4), np.uint8)
        self._tiles: dict[tuple[int, int], pg.ImageItem] = {}
        self._path: list[tuple[float, float]] = []
        self.preview = pg.PlotCurveItem(pen=pg.mkPen((255, 255, 255), width=1.5, style=Qt.PenStyle.DashLine))
        self.preview.setParentItem(self)
        self.preview.setZValue(10)
        self.cursor = pg.QtWidgets.QGraphicsEllipseItem(self)
        self.cursor.setPen(QPen(QColor(255, 255, 255, 200), 0))
        self.cursor.setZValue(11)
        self.cursor.hide()
        self.setAcceptHoverEvents(True)
        self.setZValue(5)

    # ------------------------------------------------------------------ geometry
    def boundingRect(self) -> QRectF:
        return QRectF(0, 0, float(self._shape[1]), float(self._shape[0]))

    def paint(self, painter: QPainter, *args: object) -> None:
        pass

    # ------------------------------------------------------------------ overlay
    def set_labels(self, labels: np.ndarray | None) -> None:
        """Show ``labels`` (kept by reference: call :meth:`refresh` with a box after edits)."""
        for item in self._tiles.values():
            item.setParentItem(None)
            if item.scene() is not None:
                item.scene().removeItem(item)
        self._tiles.clear()
        self._labels = labels
        self.prepareGeometryChange()
        self._shape = (0, 0) if labels is None else (int(labels.shape[0]), int(labels.shape[1]))
        if labels is None:
            return
        self.lut = ov.label_colours(labels)
        h, w = self._shape
        for ty in range(0, h, TILE):
            for tx in range(0, w, TILE):
                item = pg.ImageItem()
                item.setParentItem(self)
                item.setPos(tx, ty)
                self._tiles[(ty // TILE, tx // TILE)] = item
        self.refresh(None)

    def set_mode(self, mode: str) -> None:
        self.mode = mode
        self.setVisible(mode != "hidden")
        if mode != "hidden":
            self.refresh(None)

    def _grow_lut(self, needed: int) -> None:
        if needed < len(self.lut):
            return
        n_old = len(self.lut)
        lut = np.zeros((max(needed + 1, 2 * n_old), 4), np.uint8)
        lut[:n_old] = self.lut
        ids = np.arange(n_old, len(lut))
        lut[n_old:, :3] = ov.PALETTE[(ids * 5) % len(ov.PALETTE)]
        lut[n_old:, 3] = 255
        self.lut = lut

    def _recolour(self, crop: np.ndarray) -> None:
        """Give cells in ``crop`` that touch a same-coloured neighbour another palette colour."""
        pairs = ov.touching_pairs(crop)
        if not len(pairs):
            return
        k = len(ov.PALETTE)
        colour = {}

        def col(i: int) -> int:
            if i not in colour:
                rgb = self.lut[i, :3]
                colour[i] = int(np.argmax((ov.PALETTE == rgb).all(axis=1)))
            return colour[i]

        neighbours: dict[int, set[int]] = {}
        for a, b in pairs.tolist():
            neighbours.setdefault(a, set()).add(b)
            neighbours.setdefault(b, set()).add(a)
        for a in sorted(neighbours, reverse=True):  # newest ids move first
            taken = {col(b) for b in neighbours[a]}
            if col(a) in taken:
                free = next((c for c in range(k) if c not in taken), col(a))
                colour[a] = free
                self.lut[a, :3] = ov.PALETTE[free]

    def refresh(self, box: tuple[int, int, int, int] | None) -> None:
        """Re-render the tiles under ``box`` (r0, r1, c0, c1); ``None``: everything."""
        lab = self._labels
        if lab is None or not self.isVisible() and box is not None:
            return
        h, w = self._shape
        r0, r1, c0, c1 = box if box is not None else (0, h, 0, w)
        r0, r1, c0, c1 = max(0, r0 - 1), min(h, r1 + 1), max(0, c0 - 1), min(w, c1 + 1)
        if box is not None:
            sub = lab[max(0, r0 - 2) : r1 + 2, max(0, c0 - 2) : c1 + 2]
            self._grow_lut(int(sub.max()) if sub.size else 0)
            self._recolour(sub)
        else:
            self._grow_lut(int(lab.max()) if lab.size else 0)
        mode = "outline" if self.mode == "outline" else "fill"
        for ty in range(r0 // TILE, (r1 - 1) // TILE + 1):
            for tx in range(c0 // TILE, (c1 - 1) // TILE + 1):
                y0, x0 = ty * TILE, tx * TILE
                y1, x1 = min(h, y0 + TILE), min(w, x0 + TILE)
                my0, mx0 = max(0, y0 - 1), max(0, x0 - 1)  # 1-px margin: edges at tile borders
                crop = lab[my0 : min(h, y1 + 1), mx0 : min(w, x1 + 1)]
                rgba = ov.overlay_rgba(crop, mode, self.lut)[y0 - my0 : y0 - my0 + (y1 - y0), x0 - mx0 : x0 - mx0 + (x1 - x0)]
                self._tiles[(ty, tx)].setImage(np.ascontiguousarray(rgba), autoLevels=False, levels=(0, 255))

    def tile_count(self) -> int:
        return len(self._tiles)

    # ------------------------------------------------------------------ previews
    def show_path(self, points: list[tuple[float, float]], closed: bool = False) -> None:
        if not points:
            self.preview.setData([], [])
            return
        pts = list(points) + ([points[0]] if closed and len(points) > 2 else [])
        ys = np.array([p[0] for p in pts]) + 0.5
        xs = np.array([p[1] for p in pts]) + 0.5
        self.preview.setData(xs, ys)

    def set_tool(self, tool: str) -> None:
        if tool not in TOOLS:
            raise ValueError(f"unknown tool '{tool}'")
        self.tool = tool
        self._path = []
        self.show_path([])
        self.cursor.setVisible(False)

    def _place_cursor(self, pos: QPointF) -> None:
        if self.tool in ("brush", "eraser"):
            r = self.brush_radius + 0.5
            self.cursor.setRect(QRectF(np.floor(pos.x()) + 0.5 - r, np.floor(pos.y()) + 0.5 - r, 2 * r, 2 * r))
            self.cursor.show()
        else:
            self.cursor.hide()

    # ------------------------------------------------------------------ mouse
    def hoverEvent(self, ev) -> None:
        if ev.isExit():
            self.cursor.hide()
            return
        self._place_cursor(ev.pos())

    def mouseDragEvent(self, ev) -> None:
        if self.tool not in _DRAG_TOOLS or ev.button() != Qt.MouseButton.LeftButton:
            ev.ignore()
            return
        ev.accept()
        p = ev.pos()
        if ev.isStart():
            start = ev.buttonDownPos()
            self._path = [(start.y(), start.x())]
            self.stroke_started.emit(start.y(), start.x())
        self._path.append((p.y(), p.x()))
        self._place_cursor(p)
        if self.tool in ("freehand", "split"):
            self.show_path(self._path, closed=self.tool == "freehand")
        else:
            self.stroke_moved.emit(p.y(), p.x())
        if ev.isFinish():
            path, self._path = self._path, []
            self.show_path([])
            self.stroke_finished.emit(path)

    def mouseClickEvent(self, ev) -> None:
        if self.tool not in _CLICK_TOOLS + ("brush", "eraser") or ev.button() != Qt.MouseButton.LeftButton:
            ev.ignore()
            return
        ev.accept()
        p = ev.pos()
        if self.tool in ("brush", "eraser"):  # a click is a one-dab stroke
            self.stroke_started.emit(p.y(), p.x())
            self.stroke_finished.emit([(p.y(), p.x())])
            return
        self.clicked.emit(p.y(), p.x(), bool(ev.double()))

    def wheelEvent(self, ev) -> None:
        if self.tool in ("brush", "eraser") and ev.modifiers() & Qt.KeyboardModifier.ControlModifier:
            self.size_step.emit(1 if ev.delta() > 0 else -1)
            ev.accept()
        else:
            ev.ignore()
