"""Models dialog: the registered encoders, their size and status; download, cancel, import.

Downloads and imports run in a background worker with progress and cancel; the weights
store (``core/encoders/weights.py``) does the work, this dialog only shows it.
"""

from __future__ import annotations

import html
import logging
import re
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
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
from ..icons import status_icon
from ..workers import CallWorker, start_call

log = logging.getLogger(__name__)
COLUMNS = ("Encoder", "Family", "Parameters", "Download size", "Licence", "Status")


def _size_text(n: int | None) -> str:
    if not n:
        return "—"
    from ...core.encoders.weights import format_size

    return format_size(n)


class ModelsDialog(QDialog):
    """Lists encoders; a row's status is ready / not downloaded. Works with no network."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Models")
        self.resize(820, 380)
        self.table = QTableWidget(0, len(COLUMNS))  # a handful of rows: items are fine here
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        header = self.table.horizontalHeader()
        for col in range(len(COLUMNS) - 1):  # every text whole (the licence line too); the status takes the rest
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        self.table.setWordWrap(False)
        self.table.itemSelectionChanged.connect(self._update_buttons)
        self.description = QLabel("")
        self.description.setWordWrap(True)
        self.download_button = QPushButton("Download")
        self.download_button.clicked.connect(self.download_selected)
        self.import_button = QPushButton("Import file…")
        self.import_button.setToolTip("Use a weights file you already have (checked before use)")
        self.import_button.clicked.connect(self._import_clicked)
        self.cancel_button = QPushButton("Cancel download")
        self.cancel_button.clicked.connect(self.cancel)
        self.cancel_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.message = QLabel("")
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        row = QHBoxLayout()
        row.addWidget(self.download_button)
        row.addWidget(self.import_button)
        row.addWidget(self.cancel_button)
        row.addWidget(self.progress, 1)
        close = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        close.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.description)
        layout.addLayout(row)
        layout.addWidget(self.message)
        layout.addWidget(close)
        self._specs: list[Any] = []
        self._handle: CallWorker | None = None
        self.refresh()

    # ------------------------------------------------------------------ content
    def refresh(self) -> None:
        from ...core.encoders import list_specs

        self._specs = list_specs()
        self.table.setRowCount(len(self._specs))
        for r, spec in enumerate(self._specs):
            ready = _is_ready(spec)
            size = spec.weights.size_bytes if spec.weights else None
            values = (spec.name, spec.family, f"{spec.approx_params_m:.1f} M" if spec.approx_params_m else "—",
                      "bundled" if spec.builtin else _size_text(size), spec.licence,
                      "ready (built in)" if spec.builtin else ("ready" if ready else "not downloaded"))
            for c, v in enumerate(values):
                item = QTableWidgetItem(v)
                if c == len(values) - 1:
                    item.setIcon(status_icon("segmented" if ready else "new"))
                self.table.setItem(r, c, item)
        if self._specs and not self.table.selectedItems():
            self.table.selectRow(0)
        self._update_buttons()
        self._fit_width()

    def _fit_width(self) -> None:
        """Wide enough for every column's text (the dialog never opens with a clipped cell)."""
        self.table.resizeColumnsToContents()
        header = self.table.horizontalHeader()
        status_col = len(COLUMNS) - 1
        need = sum(header.sectionSize(c) for c in range(status_col)) + self.table.sizeHintForColumn(status_col)
        need += self.table.verticalScrollBar().sizeHint().width() + 2 * self.table.frameWidth() + 40
        if need > self.width():
            self.resize(need, self.height())

    def status_of(self, name: str) -> str:
        for r, spec in enumerate(self._specs):
            if spec.name == name:
                return self.table.item(r, len(COLUMNS) - 1).text()
        raise KeyError(name)

    def selected_spec(self) -> Any | None:
        rows = self.table.selectionModel().selectedRows()
        return self._specs[rows[0].row()] if rows else None

    def select(self, name: str) -> None:
        for r, spec in enumerate(self._specs):
            if spec.name == name:
                self.table.selectRow(r)

    def _update_buttons(self) -> None:
        spec = self.selected_spec()
        busy = self._handle is not None
        downloadable = spec is not None and not spec.builtin and spec.weights is not None and not _is_ready(spec)
        self.download_button.setEnabled(downloadable and not busy)
        self.import_button.setEnabled(spec is not None and not spec.builtin and not busy)
        self.cancel_button.setEnabled(busy)
        if spec is not None:
            src = spec.weights
            text = spec.description
            if src is not None and not spec.builtin:
                text += f"<br><span style='color:gray'>Source: {src.url}</span>"
            self.description.setText(text)

    # ------------------------------------------------------------------ work
    def download_selected(self) -> None:
        spec = self.selected_spec()
        if spec is None:
            return
        from ...core.encoders import weights

        def fn(report: Any, cancel: Any) -> Any:
            return weights.download(spec, progress=lambda done, total: report((done, total)), cancel=cancel)

        self._run(fn, f"Downloading {spec.name}…")

    def import_file(self, path: str | Path) -> None:
        spec = self.selected_spec()
        if spec is None:
            return
        from ...core.encoders import weights

        def fn(report: Any, cancel: Any) -> Any:
            return weights.import_file(spec, Path(path))

        self._run(fn, f"Checking and importing {Path(path).name}…")

    def _import_clicked(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import encoder weights", "",
                                              "Weights (*.pth *.pt *.safetensors *.bin);;All files (*)")
        if path:
            self.import_file(path)

    def _run(self, fn: Any, text: str) -> None:
        self.message.setText(text)
        self.progress.setVisible(True)
        self.progress.setRange(0, 0)
        # Each slot names its own worker: the signals of an earlier, finished worker may still be
        # queued when the next one starts, and must not end the new one.
        holder: list[Any] = []
        self._handle = start_call(fn, on_progress=self._event, on_finished=lambda: self._ended(holder[0]),
                                  on_error=lambda exc: self._failed(holder[0], exc))
        holder.append(self._handle)
        self._update_buttons()

    def _failed(self, handle: Any, exc: BaseException) -> None:
        if handle is self._handle:
            # the core's hint names the command line; here the same step is the Import file… button
            text = re.sub(r"run `efficell models import \S+ FILE`", "choose it with Import file…",
                          tasks.describe_error(exc))
            self._done(f"<span style='color:#b91c1c'>{html.escape(text)}</span>")

    def _ended(self, handle: Any) -> None:
        if handle is not self._handle or handle.outcome == "failed":
            return
        self._done("Cancelled. The partial download is kept and resumes next time." if handle.outcome == "cancelled"
                   else "Done: the encoder is ready.")

    def _event(self, ev: Any) -> None:
        if isinstance(ev, tuple) and len(ev) == 2:
            done, total = ev
            if total:
                self.progress.setRange(0, 1000)
                self.progress.setValue(int(1000 * done / total))
                self.progress.setFormat(f"{done / 1e6:.1f} / {total / 1e6:.1f} MB")

    def _done(self, text: str) -> None:
        self._handle = None
        self.progress.setVisible(False)
        self.message.setText(text)
        self.refresh()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()

    def is_busy(self) -> bool:
        return self._handle is not None

    def reject(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle.wait(10_000)
            self._handle = None
        super().reject()


def _is_ready(spec: Any) -> bool:
    if spec.builtin:
        return True
    try:
        from ...core.encoders import weights

        return bool(weights.is_present(spec))
    except (ImportError, AttributeError) as exc:
        log.debug("weights store unavailable: %s", exc)
        return False
