"""Export dialog: scope, formats, pixel size and channel names, destination; runs ``tasks.export_images``
in a worker. Pixel size and channel names start empty: each image's own, by the same rule as the
table, so the files hold what the window shows unless the user overrides it here."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ... import tasks
from ...tasks import FORMATS, ExportFailed, ExportOptions, ExportProgress
from ..workers import TaskWorker, start_task

SCOPES = (("image", "Current image"), ("set", "Current set"), ("project", "Whole project"))


class ExportDialog(QDialog):
    """Collects :class:`ExportOptions` and runs the task ``make_task(options)`` gives
    (``(generator function, *arguments)``) with progress."""

    def __init__(self, make_task: Callable[[ExportOptions], tuple[Any, ...]], destination: Path,
                 channel_names: tuple[str, ...] = (), pixel_size_um: float = 0.0,
                 scope: str = "image", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Export measurements and masks")
        self._make_task = make_task
        self._handle: TaskWorker | None = None
        self.written: list[Path] = []
        self.errors: list[str] = []

        self.scope = QComboBox()
        for key, text in SCOPES:
            self.scope.addItem(text, key)
        self.scope.setCurrentIndex(max(0, self.scope.findData(scope)))

        fmt_box = QGroupBox("Formats")
        grid = QGridLayout(fmt_box)
        self.format_boxes: dict[str, QCheckBox] = {}
        for i, (key, text) in enumerate(FORMATS.items()):
            cb = QCheckBox(text)
            cb.setChecked(key in ("xlsx",))
            self.format_boxes[key] = cb
            grid.addWidget(cb, i // 2, i % 2)

        self.pixel_size = QDoubleSpinBox()
        self.pixel_size.setRange(0.0, 1000.0)
        self.pixel_size.setDecimals(4)
        self.pixel_size.setSuffix(" µm")
        self.pixel_size.setSpecialValueText("each image's own (as in the table)")
        self.pixel_size.setToolTip("Leave at 0 to use each image's pixel size, as the measurements table does; "
                                   "a value here applies to every image exported")
        self.pixel_size.setValue(pixel_size_um)
        self.channel_names = QLineEdit(", ".join(channel_names))
        self.channel_names.setPlaceholderText("each image's own; or e.g. DAPI, GFP for every image")

        self.destination = QLineEdit(str(destination))
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        dest_row = QHBoxLayout()
        dest_row.addWidget(self.destination, 1)
        dest_row.addWidget(browse)

        form = QFormLayout()
        form.addRow("Export", self.scope)
        form.addRow("Pixel size", self.pixel_size)
        form.addRow("Channel names", self.channel_names)
        form.addRow("Folder", dest_row)

        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.error_list = QListWidget()
        self.error_list.setVisible(False)
        self.error_list.setMaximumHeight(90)

        self.export_button = QPushButton("Export")
        self.export_button.setDefault(True)
        self.export_button.clicked.connect(self.start)
        self.open_button = QPushButton("Open folder")
        self.open_button.setVisible(False)
        self.open_button.clicked.connect(self._open_folder)
        self.close_button = QPushButton("Close")
        self.close_button.clicked.connect(self.reject)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.open_button)
        buttons.addWidget(self.export_button)
        buttons.addWidget(self.close_button)

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(fmt_box)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.error_list)
        layout.addLayout(buttons)

    # ------------------------------------------------------------------ options
    def options(self) -> ExportOptions:
        names = tuple(s.strip() for s in self.channel_names.text().split(",") if s.strip())
        return ExportOptions(
            scope=str(self.scope.currentData()),
            formats=tuple(k for k, cb in self.format_boxes.items() if cb.isChecked()),
            destination=Path(self.destination.text().strip()).expanduser(),
            pixel_size_um=float(self.pixel_size.value()) or None,
            channel_names=names,
        )

    def set_formats(self, formats: tuple[str, ...]) -> None:
        for k, cb in self.format_boxes.items():
            cb.setChecked(k in formats)

    def _browse(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Export to folder", self.destination.text())
        if d:
            self.destination.setText(d)

    # ------------------------------------------------------------------ run
    def start(self) -> None:
        opts = self.options()
        if not opts.formats:
            self.status.setText("Choose at least one format.")
            return
        if not str(opts.destination).strip():
            self.status.setText("Choose a folder to export to.")
            return
        self.written, self.errors = [], []
        self.error_list.clear()
        self.error_list.setVisible(False)
        self.open_button.setVisible(False)
        self.progress.setVisible(True)
        self.progress.setRange(0, 0)
        self.status.setText("Exporting…")
        self.export_button.setEnabled(False)
        self.close_button.setText("Cancel")
        task, *args = self._make_task(opts)
        self._handle = start_task(task, *args, on_event=self._event, on_returned=lambda _v: self._finish(None),
                                  on_aborted=lambda: self._finish("Cancelled."),
                                  on_error=lambda exc: self._finish(tasks.describe_error(exc)))

    def is_running(self) -> bool:
        return self._handle is not None

    def _event(self, ev: Any) -> None:
        if isinstance(ev, ExportProgress):
            self.progress.setRange(0, max(ev.total, 1))
            self.progress.setValue(ev.done)
            self.status.setText(ev.message)
            if ev.path is not None:
                self.written.append(ev.path)
        elif isinstance(ev, ExportFailed):
            self.errors.append(ev.message)
            self.error_list.addItem(ev.message)
            self.error_list.setVisible(True)

    def _finish(self, error: str | None) -> None:
        self._handle = None
        self.progress.setVisible(False)
        self.export_button.setEnabled(True)
        self.close_button.setText("Close")
        if error:
            self.status.setText(f"<span style='color:#b91c1c'>{error}</span>")
            return
        n = len(self.written)
        extra = f"; {len(self.errors)} problem(s) listed below" if self.errors else ""
        self.status.setText(f"Wrote {n} file{'s' if n != 1 else ''} to {self.options().destination}{extra}.")
        self.open_button.setVisible(n > 0)

    def _open_folder(self) -> None:
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.options().destination)))

    def reject(self) -> None:
        """Close, or while exporting, cancel (the dialog stays open and says so)."""
        if self._handle is not None:
            self._handle.cancel()
            return
        super().reject()
