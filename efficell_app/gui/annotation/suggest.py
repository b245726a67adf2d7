""""Annotate next": rank the project's unannotated images by model uncertainty; per-cell uncertainty overlay."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pyqtgraph as pg
from PySide6.QtCore import QObject, Qt, QTimer, Signal
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

from ... import tasks
from ..workers import TaskWorker, start_task

if TYPE_CHECKING:
    from ..session import Session
    from ..viewer import ImageViewer

log = logging.getLogger(__name__)
TOP_K = 5


class SuggestDialog(QDialog):
    """Ranks unannotated images (most uncertain first, ``tasks.rank_uncertainty``);
    "Open" asks for one to be shown (``open_requested(image id)``)."""

    open_requested = Signal(int)

    COLUMNS = ("Image", "Set", "Score", "Disagreement", "Doubtful cells", "Cells")
    TIPS = ("", "", "Higher = the model is less sure (half disagreement, half doubtful cells)",
            "How much the model's cell/background and cell-shape branches disagree (0-1)",
            "Share of found cells with confidence below 0.6", "Cells found by the model")

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Annotate next")
        self.session = session
        self.project = session.project
        self.results: list[Any] = []
        self.handle: TaskWorker | None = None
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
        project = self.project
        annotated = {r.id for r in project.annotated_images()}
        return [r.id for r in project.list_images() if r.id not in annotated and r.status not in ("annotated", "reviewed")]

    def start(self) -> TaskWorker | None:
        ids = self.candidates()
        if not ids:
            self.info.setText("Every image of the project is annotated already.")
            self.cancel_button.setEnabled(False)
            return None
        self.progress.setRange(0, len(ids))
        self.progress.setValue(0)
        self.handle = start_task(tasks.rank_uncertainty, self.project, ids, self.session.segment_options(),
                                 threads=self.session.prefs.effective_threads(), on_event=self._scored,
                                 on_error=lambda exc: self.info.setText(f"Stopped: {tasks.describe_error(exc)}"),
                                 on_finished=self._finished)
        return self.handle

    def _scored(self, ev: Any) -> None:
        self.results.append(ev)
        self.progress.setValue(len(self.results))
        if ev.error:
            self.session.problem.emit(ev.error)
        self._fill()

    def ranked(self) -> list[Any]:
        from ...core.uncertainty import suggest

        return suggest(self.results, k=len(self.results))

    def _fill(self) -> None:
        project = self.project
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
        if top and not self.project.closed:
            self.info.setText("Suggested next (most uncertain first): "
                              + ", ".join(self.project.get_image(int(s.key)).name for s in top))
            self.table.selectRow(0)

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()

    def open_row(self, row: int) -> None:
        item = self.table.item(row, 0) if row >= 0 else None
        if item is None:
            return
        self.open_requested.emit(int(item.data(Qt.ItemDataRole.UserRole)))

    def done(self, r: int) -> None:
        self.cancel()
        if self.handle is not None:
            self.handle.wait(30_000)
        super().done(r)


class UncertaintyOverlay(QObject):
    """Optional layer: the model's per-cell uncertainty on the image in the viewer (``tasks.cell_uncertainty``)."""

    def __init__(self, viewer: ImageViewer, session: Session, current_image: Callable[[], int | None],
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.viewer, self.session, self._current_image = viewer, session, current_image
        self.item = pg.ImageItem()
        self.item.setZValue(4)
        self.enabled = False
        self.shown_for: int | None = None
        self.handle: TaskWorker | None = None
        viewer.image_item.sigImageChanged.connect(lambda: QTimer.singleShot(0, self._image_changed))

    def set_enabled(self, on: bool) -> None:
        self.enabled = on
        if not on:
            if self.item.scene() is not None:
                self.viewer.view.removeItem(self.item)
            self.shown_for = None
            return
        self._image_changed()

    def _image_changed(self) -> None:
        image_id = self._current_image()
        if not self.enabled or image_id is None or image_id == self.shown_for or self.session.project is None:
            return
        if self.handle is not None and self.handle.active:
            self.handle.cancel()
        self.handle = start_task(tasks.cell_uncertainty, self.session.project, image_id, self.session.segment_options(),
                                 on_event=self._show,
                                 on_error=lambda exc: self.session.problem.emit(tasks.describe_error(exc)))

    def _show(self, ev: tasks.CellUncertainty) -> None:
        if not self.enabled or ev.image_id != self._current_image():
            return
        if self.item.scene() is None:
            self.viewer.view.addItem(self.item)
        self.item.setImage(ev.rgba, autoLevels=False, levels=(0, 255))
        self.shown_for = ev.image_id
