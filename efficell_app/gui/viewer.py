"""The image viewer: zoom/pan, channels with per-channel contrast, label overlay, hover, pick.

pyqtgraph ``ImageItem``s in a ``ViewBox``: the composite image, the label overlay (fill or
outline, opacity slider, touching cells in different colours) and the selected cell's
outline. The viewer knows nothing of projects: it is given arrays and emits ``cell_clicked``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QSlider,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ..core import overlay as ov

pg.setConfigOptions(imageAxisOrder="row-major", antialias=False)

COMPOSITE = -1
#: Zoomed out, images up to this size are shown averaged (pyqtgraph's auto-downsampling: smooth, but
#: each change of zoom costs about 0.1 s per 4 million pixels in the window's thread, 2 s at 8192²);
#: larger ones are sampled by Qt as they are drawn (no pause; a grainier overview, the same at 1:1).
SMOOTH_ZOOM_OUT_MAX_PIXELS = 2 * 2048 * 2048


class ImageViewer(QWidget):
    """Central image view. ``set_image`` then ``set_labels``; ``select_cell`` highlights one."""

    cell_clicked = Signal(int)  # label id under the mouse (0 = background)
    hovered = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._data: np.ndarray | None = None
        self._displays: list[ov.ChannelDisplay] = []
        self._labels: np.ndarray | None = None
        self._lut: np.ndarray | None = None
        self._selected = 0
        self._last_hover = -1
        self._overlay_paused = False
        self.describe_cell: Callable[[int], str] | None = None  # hover text for a cell id

        self.graphics = pg.GraphicsLayoutWidget()
        self.graphics.setBackground((24, 24, 28))
        self.view: pg.ViewBox = self.graphics.addViewBox(lockAspect=True, invertY=True, enableMenu=False)
        self.image_item = pg.ImageItem(autoDownsample=True)
        self.overlay_item = pg.ImageItem(autoDownsample=False)
        self.highlight_item = pg.ImageItem()
        for z, item in enumerate((self.image_item, self.overlay_item, self.highlight_item)):
            item.setZValue(z)
            self.view.addItem(item)
        self.overlay_item.setOpacity(0.5)

        # Contrast of the active channel: a histogram with a draggable range.
        self.histogram = pg.HistogramLUTWidget(gradientPosition="left", orientation="horizontal")
        self.histogram.setFixedHeight(72)  # pyqtgraph asks for 95 px at least: under a maximum of 72 it overlapped the read-out below
        self.histogram.item.gradient.hide()
        self.histogram.item.sigLevelsChanged.connect(self._levels_from_histogram)
        self._hist_item = pg.ImageItem()  # invisible carrier of the active channel for the histogram

        self.channel_box = QComboBox()
        self.channel_box.setToolTip("Show the colour composite or a single channel")
        self.channel_box.currentIndexChanged.connect(self._channel_changed)
        self.contrast_box = QComboBox()
        self.contrast_box.setToolTip("Channel whose contrast the histogram below adjusts")
        self.contrast_box.currentIndexChanged.connect(self._contrast_channel_changed)
        self.colour_box = QComboBox()
        self.colour_box.addItems(list(ov.CHANNEL_COLOURS))
        self.colour_box.setToolTip("Colour of this channel in the composite")
        self.colour_box.currentTextChanged.connect(self._colour_changed)
        self.visible_box = QCheckBox("in composite")
        self.visible_box.toggled.connect(self._visible_changed)
        self.auto_button = QToolButton(text="Auto")
        self.auto_button.setToolTip("Automatic contrast for this channel")
        self.auto_button.clicked.connect(self._auto_contrast)

        self.overlay_box = QComboBox()
        self.overlay_box.addItems(["Fill", "Outline", "Hidden"])
        self.overlay_box.setToolTip("How segmented cells are drawn")
        self.overlay_box.currentIndexChanged.connect(self._render_overlay)
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(50)
        self.opacity.setFixedWidth(110)
        self.opacity.setToolTip("Overlay opacity")
        self.opacity.valueChanged.connect(lambda v: self.overlay_item.setOpacity(v / 100.0))
        # Combos as wide as their usual entries, not the longest channel name: the tool bar must
        # fit beside the side panels at the default window size (the popups show names whole).
        for box, chars in ((self.channel_box, 6), (self.contrast_box, 5), (self.colour_box, 5)):
            box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            box.setMinimumContentsLength(chars)
        self.opacity.setFixedWidth(80)
        self.fit_button = QToolButton(text="Fit")
        self.fit_button.setToolTip("Zoom to show the whole image")
        self.fit_button.clicked.connect(self.fit)

        # The cursor read-out: position and values on the first line, the cell under the cursor
        # on the second; two lines always reserved, so the layout never jumps or clips it.
        self.info = QLabel(" ")
        self.info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.info.setWordWrap(True)
        self.info.setMinimumWidth(1)
        self.info.setFixedHeight(2 * self.info.fontMetrics().lineSpacing() + 6)

        bar = QHBoxLayout()
        bar.setContentsMargins(4, 2, 4, 2)
        bar.addWidget(QLabel("View"))
        bar.addWidget(self.channel_box)
        bar.addSpacing(10)
        bar.addWidget(QLabel("Contrast"))
        bar.addWidget(self.contrast_box)
        bar.addWidget(self.colour_box)
        bar.addWidget(self.visible_box)
        bar.addWidget(self.auto_button)
        bar.addStretch(1)
        bar.addWidget(QLabel("Cells"))
        bar.addWidget(self.overlay_box)
        bar.addWidget(self.opacity)
        bar.addWidget(self.fit_button)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addLayout(bar)
        layout.addWidget(self.graphics, 1)
        layout.addWidget(self.histogram)
        layout.addWidget(self.info)

        self.graphics.scene().sigMouseMoved.connect(self._mouse_moved)
        self.graphics.scene().sigMouseClicked.connect(self._mouse_clicked)
        self._updating = False
        self._set_controls_enabled(False)

    # ------------------------------------------------------------------ public API
    def set_image(self, data: np.ndarray, channel_names: tuple[str, ...] = (), rgb: bool = False,
                  keep_view: bool = False) -> None:
        """Show a ``(C, H, W)`` image (raw values); resets overlay and selection."""
        self._data = data
        self.image_item.setAutoDownsample(data.shape[1] * data.shape[2] <= SMOOTH_ZOOM_OUT_MAX_PIXELS)
        self._displays = ov.default_displays(data, channel_names, rgb)
        self._labels, self._lut, self._selected = None, None, 0
        self._updating = True
        self.channel_box.clear()
        if data.shape[0] > 1:
            self.channel_box.addItem("Composite", COMPOSITE)
        for i, d in enumerate(self._displays):
            self.channel_box.addItem(d.name, i)
        self.contrast_box.clear()
        for i, d in enumerate(self._displays):
            self.contrast_box.addItem(d.name, i)
        self._updating = False
        self._set_controls_enabled(True)
        self._contrast_channel_changed()
        self._render_image()
        self.overlay_item.clear()
        self.highlight_item.clear()
        if not keep_view:
            self.fit()

    def clear(self) -> None:
        self._data, self._labels, self._lut, self._selected = None, None, None, 0
        for item in (self.image_item, self.overlay_item, self.highlight_item):
            item.clear()
        self.channel_box.clear()
        self.contrast_box.clear()
        self.info.setText(" ")
        self._set_controls_enabled(False)

    def set_labels(self, labels: np.ndarray | None, colours: np.ndarray | None = None) -> None:
        """Show an ``(H, W)`` label image over the picture (None removes it).

        ``colours``: the RGBA table from :func:`overlay.label_colours` when a worker made it already.
        """
        if labels is not None and self._data is not None and labels.shape != self._data.shape[1:]:
            raise ValueError(f"labels {labels.shape} do not match the image {self._data.shape[1:]}")
        self._labels = labels
        if labels is None:
            self._lut = None
        elif colours is not None and len(colours) > int(labels.max(initial=0)):
            self._lut = colours
        else:
            self._lut = ov.label_colours(labels)
        self._render_overlay()
        self.select_cell(self._selected if labels is not None else 0, center=False)

    def labels(self) -> np.ndarray | None:
        return self._labels

    def set_overlay_paused(self, paused: bool) -> None:
        """Hide the cell overlay and stop redrawing it while another layer draws the cells (the
        annotation canvas); labels set meanwhile are kept for hover and selection. Un-pausing
        shows the overlay again, drawn from the current labels."""
        paused = bool(paused)
        if paused == self._overlay_paused:
            return
        self._overlay_paused = paused
        self.overlay_item.setVisible(not paused)
        if not paused:
            lab = self._labels
            if lab is not None and (self._lut is None or len(self._lut) <= int(lab.max(initial=0))):
                self._lut = ov.label_colours(lab)  # cells were added while paused
            self._render_overlay()

    def overlay_paused(self) -> bool:
        return self._overlay_paused

    def has_image(self) -> bool:
        return self._data is not None

    def displays(self) -> list[ov.ChannelDisplay]:
        return list(self._displays)

    def selected_cell(self) -> int:
        return self._selected

    def select_cell(self, label: int, center: bool = True) -> None:
        """Outline one cell (0 clears); optionally pan so it is in view."""
        self._selected = int(label)
        hl = None if self._labels is None else ov.highlight_rgba(self._labels, self._selected)
        if hl is None:
            self.highlight_item.clear()
            return
        rgba, (r0, c0) = hl
        self.highlight_item.setImage(rgba, autoLevels=False)
        self.highlight_item.setPos(c0, r0)
        if center:
            h, w = rgba.shape[:2]
            vr = self.view.viewRect()
            if not vr.contains(QPointF(c0 + w / 2, r0 + h / 2)):
                self.view.translateBy(x=c0 + w / 2 - vr.center().x(), y=r0 + h / 2 - vr.center().y())

    def cell_at(self, row: int, col: int) -> int:
        lab = self._labels
        if lab is None or not (0 <= row < lab.shape[0] and 0 <= col < lab.shape[1]):
            return 0
        return int(lab[row, col])

    def scene_to_pixel(self, scene_pos: QPointF) -> tuple[int, int]:
        p = self.view.mapSceneToView(scene_pos)
        return int(np.floor(p.y())), int(np.floor(p.x()))

    def pixel_to_scene(self, row: float, col: float) -> QPointF:
        return self.view.mapViewToScene(QPointF(col + 0.5, row + 0.5))

    def fit(self) -> None:
        if self._data is not None:
            h, w = self._data.shape[1:]
            self.view.setRange(xRange=(0, w), yRange=(0, h), padding=0.01)

    def set_channel_levels(self, channel: int, lo: float, hi: float) -> None:
        d = self._displays[channel]
        d.lo, d.hi = float(lo), float(max(hi, lo + 1e-9))
        if self.contrast_box.currentData() == channel:
            self._contrast_channel_changed()
        self._render_image()

    def rendered_image(self) -> np.ndarray | None:
        return self.image_item.image

    # ------------------------------------------------------------------ rendering
    def _set_controls_enabled(self, on: bool) -> None:
        for w in (self.channel_box, self.contrast_box, self.colour_box, self.visible_box, self.auto_button,
                  self.overlay_box, self.opacity, self.fit_button, self.histogram):
            w.setEnabled(on)

    def _render_image(self) -> None:
        if self._data is None or self._updating:
            return
        only = self.channel_box.currentData()
        only = None if only in (None, COMPOSITE) else int(only)
        rgb = ov.composite(self._data, self._displays, only=only)
        self.image_item.setImage(rgb, autoLevels=False, levels=(0, 255))

    def _render_overlay(self) -> None:
        if self._overlay_paused:
            return
        if self._labels is None or self.overlay_box.currentText() == "Hidden":
            self.overlay_item.clear()
            return
        mode = "outline" if self.overlay_box.currentText() == "Outline" else "fill"
        self.overlay_item.setImage(ov.overlay_rgba(self._labels, mode, self._lut), autoLevels=False, levels=(0, 255))

    # ------------------------------------------------------------------ controls
    def _channel_changed(self) -> None:
        if self._updating:
            return
        ch = self.channel_box.currentData()
        if ch not in (None, COMPOSITE):
            self.contrast_box.setCurrentIndex(self.contrast_box.findData(ch))
        self._render_image()

    def _contrast_channel_changed(self) -> None:
        if self._updating or self._data is None:
            return
        ch = self.contrast_box.currentData()
        if ch is None:
            return
        d = self._displays[ch]
        self._updating = True
        self.colour_box.setCurrentText(d.colour)
        self.visible_box.setChecked(d.visible)
        plane = self._data[ch]
        step = max(1, int(np.ceil(np.sqrt(plane.size / 250_000))))
        self._hist_item.setImage(plane[::step, ::step], autoLevels=False, levels=(d.lo, d.hi))
        self.histogram.item.setImageItem(self._hist_item)
        self.histogram.item.setLevels(d.lo, d.hi)
        self._updating = False

    def _levels_from_histogram(self) -> None:
        if self._updating or self._data is None:
            return
        ch = self.contrast_box.currentData()
        if ch is None:
            return
        lo, hi = self.histogram.item.getLevels()
        d = self._displays[ch]
        d.lo, d.hi = float(lo), float(max(hi, lo + 1e-9))
        self._render_image()

    def _colour_changed(self, colour: str) -> None:
        ch = self.contrast_box.currentData()
        if self._updating or ch is None:
            return
        self._displays[ch].colour = colour
        self._render_image()

    def _visible_changed(self, on: bool) -> None:
        ch = self.contrast_box.currentData()
        if self._updating or ch is None:
            return
        self._displays[ch].visible = on
        self._render_image()

    def _auto_contrast(self) -> None:
        ch = self.contrast_box.currentData()
        if self._data is None or ch is None:
            return
        lo, hi = ov.auto_levels(self._data[ch])
        self.set_channel_levels(ch, lo, hi)

    # ------------------------------------------------------------------ mouse
    def _mouse_moved(self, scene_pos: QPointF) -> None:
        if self._data is None:
            return
        row, col = self.scene_to_pixel(scene_pos)
        h, w = self._data.shape[1:]
        if not (0 <= row < h and 0 <= col < w):
            self.info.setText(" ")
            self._last_hover = -1
            return
        values = ", ".join(ov.format_number(v) for v in self._data[:, row, col])
        label = self.cell_at(row, col)
        text = f"x {col}  y {row}   value {values}"
        if label:
            extra = self.describe_cell(label) if self.describe_cell else ""
            text += f"\ncell {label}" + (f":  {extra}" if extra else "")
        self.info.setText(text)
        if label != self._last_hover:
            self._last_hover = label
            self.hovered.emit(label)

    def _mouse_clicked(self, event: object) -> None:
        if self._data is None or self._labels is None:
            return
        if event.button() != Qt.MouseButton.LeftButton:  # type: ignore[attr-defined]
            return
        row, col = self.scene_to_pixel(event.scenePos())  # type: ignore[attr-defined]
        label = self.cell_at(row, col)
        self.select_cell(label, center=False)
        self.cell_clicked.emit(label)
