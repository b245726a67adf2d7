""""Annotate next": rank the project's unannotated images by model uncertainty; per-cell uncertainty overlay."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QObject, Qt, QTimer
from PySide6.QtWidgets import (
    QDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ...core.cancel import CancelToken
from ..workers import WorkerHandle, launch, start_worker

log = logging.getLogger(__name__)
TOP_K = 5


@dataclass(frozen=True)
class CellUncertainty:
    image_id: int
    rgba: np.ndarray  # (H, W, 4) uint8


def _load_segmenter(opts: Any) -> Any:
    from ...core.pipeline import Segmenter
    from ..jobs import loading_heavy_libraries

    with loading_heavy_libraries():
        return Segmenter.load(opts.model, device=opts.device, encoder_weights=opts.encoder_weights)


def rank_job(project: Any, image_ids: list[int], opts: Any) -> Any:
    """Job: segment each image and yield its ``ImageUncertainty`` (key = image id)."""

    def job(cancel: CancelToken) -> Iterator[Any]:
        from ...core.uncertainty import rank_images

        seg = _load_segmenter(opts)
        loads = [(i, (lambda i=i: project.read_image(i))) for i in image_ids]
        yield from rank_images(seg, loads, opts.diameter, opts.channels, cancel)

    return job


def uncertainty_rgba(labels: np.ndarray, confidence: np.ndarray) -> np.ndarray:
    """Cells coloured from yellow (sure) to red (unsure), more opaque when unsure."""
    from ...core.uncertainty import cell_uncertainty_image

    u = cell_uncertainty_image(labels, confidence)
    rgba = np.zeros(labels.shape + (4,), np.uint8)
    inside = labels > 0
    t = np.clip(u * 2.0, 0.0, 1.0)  # 1 - confidence of 0.5 and more is fully red
    rgba[..., 0] = np.where(inside, 255, 0)
    rgba[..., 1] = np.where(inside, (220 * (1.0 - t)).astype(np.uint8), 0)
    rgba[..., 3] = np.where(inside, (60 + 170 * t).astype(np.uint8), 0)
    return rgba


class SuggestDialog(QDialog):
    """Ranks unannotated images (most uncertain first); "Open" shows one in the viewer."""

    COLUMNS = ("Image", "Set", "Score", "Disagreement", "Doubtful cells", "Cells")
    TIPS = ("", "", "Higher = the model is less sure (half disagreement, half doubtful cells)",
            "How much the model's cell/background and cell-shape branches disagree (0-1)",
            "Share of found cells with confidence below 0.6", "Cells found by the model")

    def __init__(self, window: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Annotate next")
        self.window_ = window
        self.results: list[Any] = []
        self.handle: WorkerHandle | None = None
        self.info = QLabel("The model segments each image not yet annotated; the ones it is least sure about "
                           "teach it the most when you correct them.")
        self.info.setWordWrap(True)
        self.table = QTableWidget(0, len(self.COLUMNS))
        self.table.setHorizontalHeaderLabels(list(self.COLUMNS))
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for col, tip in enumerate(self.TIPS):
            if col:
                header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
            self.table.horizontalHeaderItem(col).setToolTip(tip)
        self.table.verticalHeader().setVisible(False)
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.cellDoubleClicked.connect(lambda row, _c: self.open_row(row))
        self.progress = QProgressBar()
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.open_button = QPushButton("Open selected")
        self.open_button.clicked.connect(lambda: self.open_row(self.table.currentRow()))
        row = QHBoxLayout()
        row.addWidget(self.progress, 1)
        row.addWidget(self.cancel_button)
        row.addWidget(self.open_button)
        lay = QVBoxLayout(self)
        lay.addWidget(self.info)
        lay.addWidget(self.table, 1)
        lay.addLayout(row)
        self.resize(720, 420)

    def candidates(self) -> list[int]:
        project = self.window_.session.project
        annotated = {r.id for r in project.annotated_images()}
        return [r.id for r in project.list_images() if r.id not in annotated and r.status not in ("annotated", "reviewed")]

    def start(self) -> WorkerHandle | None:
        ids = self.candidates()
        if not ids:
            self.info.setText("Every image of the project is annotated already.")
            self.cancel_button.setEnabled(False)
            return None
        self.progress.setRange(0, len(ids))
        self.progress.setValue(0)
        opts = self.window_.session.segment_options()
        self.handle = start_worker(rank_job(self.window_.session.project, ids, opts), parent=self,
                                   threads=self.window_.prefs.effective_threads(), on_event=self._scored)
        self.handle.done.connect(self._finished)
        self.handle.failed.connect(lambda msg: self.info.setText(f"Stopped: {msg}"))
        launch(self.handle)
        return self.handle

    def _scored(self, ev: Any) -> None:
        self.results.append(ev)
        self.progress.setValue(len(self.results))
        if ev.error:
            self.window_.session.problem.emit(ev.error)
        self._fill()

    def ranked(self) -> list[Any]:
        from ...core.uncertainty import suggest

        return suggest(self.results, k=len(self.results))

    def _fill(self) -> None:
        project = self.window_.session.project
        ranked = self.ranked()
        self.table.setRowCount(len(ranked))
        for r, s in enumerate(ranked):
            rec = project.get_image(int(s.key))
            cells = [rec.name, rec.set_name, f"{s.score:.3f}", f"{s.disagreement:.3f}",
                     f"{s.low_confidence_share:.0%}", str(s.n_cells)]
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setData(Qt.ItemDataRole.UserRole, int(s.key))
                if r < TOP_K:
                    f = item.font()
                    f.setBold(True)
                    item.setFont(f)
                self.table.setItem(r, c, item)

    def _finished(self) -> None:
        self.cancel_button.setEnabled(False)
        top = self.ranked()[:TOP_K]
        if top:
            self.info.setText("Suggested next (most uncertain first): "
                              + ", ".join(self.window_.session.project.get_image(int(s.key)).name for s in top))
            self.table.selectRow(0)

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()

    def open_row(self, row: int) -> None:
        item = self.table.item(row, 0) if row >= 0 else None
        if item is None:
            return
        image_id = int(item.data(Qt.ItemDataRole.UserRole))
        self.window_.project_panel.select_image(image_id)
        self.window_.show_image(image_id)

    def done(self, r: int) -> None:
        self.cancel()
        if self.handle is not None:
            self.handle.wait(30_000)
        super().done(r)


class UncertaintyOverlay(QObject):
    """Optional layer: the model's per-cell uncertainty on the image in the viewer."""

    def __init__(self, window: Any) -> None:
        super().__init__(window)
        self.window_ = window
        self.item = pg.ImageItem()
        self.item.setZValue(4)
        self.enabled = False
        self.shown_for: int | None = None
        self.handle: WorkerHandle | None = None
        self._segmenter: Any = None
        self._key: Any = None
        window.viewer.image_item.sigImageChanged.connect(lambda: QTimer.singleShot(0, self._image_changed))

    def set_enabled(self, on: bool) -> None:
        self.enabled = on
        if not on:
            if self.item.scene() is not None:
                self.window_.viewer.view.removeItem(self.item)
            self.shown_for = None
            return
        self._image_changed()

    def _image_changed(self) -> None:
        image_id = self.window_.current_image
        if not self.enabled or image_id is None or image_id == self.shown_for:
            return
        if self.handle is not None and self.handle.is_running():
            self.handle.cancel()
        project = self.window_.session.project
        opts = self.window_.session.segment_options()
        key = (opts.model, opts.device, opts.encoder_weights)

        def job(cancel: CancelToken) -> Iterator[Any]:
            if self._segmenter is None or self._key != key:
                self._segmenter, self._key = _load_segmenter(opts), key
            res = self._segmenter.segment(project.read_image(image_id), diameter=opts.diameter,
                                          channels=opts.channels, cancel=cancel)
            yield CellUncertainty(image_id, uncertainty_rgba(res.labels, res.cell_confidence))

        self.handle = start_worker(job, parent=self, on_event=self._show)
        self.handle.failed.connect(self.window_.session.problem)
        launch(self.handle)

    def _show(self, ev: CellUncertainty) -> None:
        if not self.enabled or ev.image_id != self.window_.current_image:
            return
        if self.item.scene() is None:
            self.window_.viewer.view.addItem(self.item)
        self.item.setImage(ev.rgba, autoLevels=False, levels=(0, 255))
        self.shown_for = ev.image_id
