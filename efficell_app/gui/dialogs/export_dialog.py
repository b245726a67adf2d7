"""Export dialog: scope, formats, pixel size and channel names, destination; runs ``tasks.export_images``
in a worker. Pixel size and channel names start empty: each image's own, by the same rule as the
table, so the files hold what the window shows unless the user overrides it here; the dialog says
which pixel sizes the images of the chosen scope record. The scope starts as the table's."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QUrl
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
    QMessageBox,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ... import tasks
from ...tasks import FORMATS, ExportFailed, ExportOptions, ExportProgress
from ..workers import TaskWorker, start_task
from . import path_row

SCOPES = (("image", "Current image"), ("set", "Current set"), ("project", "Whole project"))
MAX_PATH_WIDTH = 760  # px: the folder field grows with its path up to this
MIN_WIDTH = 560  # px: room for the pixel-size note and the channel-name hint on a line or two


class ExportDialog(QDialog):
    """Collects :class:`ExportOptions` and runs the task ``make_task(options)`` gives
    (``(generator function, *arguments)``) with progress."""

    def __init__(self, make_task: Callable[[ExportOptions], tuple[Any, ...]], destination: Path,
                 channel_names: tuple[str, ...] = (), pixel_size_um: float = 0.0,
                 scope: str = "image", parent: QWidget | None = None,
                 pixel_sizes: Callable[[str], list[float | None]] | None = None,
                 default_pixel_size_um: float | None = None,
                 existing: Callable[[ExportOptions], list[Path]] | None = None) -> None:
        super().__init__(parent)
        self._existing = existing  # the files an export with these options would replace (asked before)
        self.setWindowTitle("Export measurements and masks")
        self._make_task = make_task
        self._pixel_sizes = pixel_sizes
        self._default_px = default_pixel_size_um
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
        self.pixel_info = QLabel("")
        self.pixel_info.setWordWrap(True)
        self.pixel_info.setStyleSheet("color: palette(placeholder-text);")
        self.channel_names = QLineEdit(", ".join(channel_names))
        self.channel_names.setPlaceholderText("each image's own (or type e.g. DAPI, GFP)")
        self.channel_names.setToolTip("Leave empty for each image's own channel names; names typed here "
                                      "apply to every image exported")

        self.destination = QLineEdit(str(destination))
        # The whole folder path in view: the field is as wide as the path (up to a sensible width);
        # a longer path is also shown below it, wrapped at its separators.
        self.destination.setMinimumWidth(min(MAX_PATH_WIDTH,
                                             self.destination.fontMetrics().horizontalAdvance(str(destination)) + 24))
        self.full_path = QLabel("")
        self.full_path.setWordWrap(True)
        self.full_path.setStyleSheet("color: palette(placeholder-text);")
        self.full_path.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.destination.textChanged.connect(self._show_full_path)
        dest_row = path_row(self.destination, self._browse)

        form = QFormLayout()
        form.addRow("Export", self.scope)
        form.addRow("Pixel size", self.pixel_size)
        form.addRow("", self.pixel_info)
        form.addRow("Channel names", self.channel_names)
        form.addRow("Folder", dest_row)
        form.addRow("", self.full_path)

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
        self.scope.currentIndexChanged.connect(self._describe_pixel_sizes)
        self.pixel_size.valueChanged.connect(self._describe_pixel_sizes)
        self.setMinimumWidth(MIN_WIDTH)
        self._describe_pixel_sizes()
        self._show_full_path()

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

    def _describe_pixel_sizes(self) -> None:
        """Say what "each image's own" means for the chosen scope: the sizes the files record, and
        how images that record none are measured."""
        if self.pixel_size.value() > 0:
            self.pixel_info.setText("Every image exported is measured with this pixel size.")
            return
        if self._pixel_sizes is None:
            self.pixel_info.setText("")
            return
        self.pixel_info.setText(describe_pixel_sizes(self._pixel_sizes(str(self.scope.currentData())),
                                                     self._default_px))
        self._fit_height()

    def _show_full_path(self) -> None:
        """The folder path in full under the field when the field cannot show all of it."""
        text = self.destination.text()
        self.destination.setToolTip(text)
        fits = self.destination.fontMetrics().horizontalAdvance(text) + 24 <= max(self.destination.width(),
                                                                                   self.destination.minimumWidth())
        # a zero-width space after each separator lets the label wrap there
        self.full_path.setText("" if fits else text.replace("/", "/\u200b").replace("\\", "\\\u200b"))
        self.full_path.setVisible(not fits)
        self._fit_height()

    def _fit_height(self) -> None:
        """Grow to the height the wrapped notes need at this width (a shown dialog does not by itself:
        the pixel-size note was cut in half under the field, the rest hidden behind the next row)."""
        layout = self.layout()
        if layout is None:
            return
        layout.invalidate()
        layout.activate()
        need = layout.totalHeightForWidth(self.width()) if layout.hasHeightForWidth() else layout.totalSizeHint().height()
        if need > self.height():
            self.resize(self.width(), need)

    def resizeEvent(self, event: Any) -> None:
        super().resizeEvent(event)
        self._show_full_path()

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
        replaced = self._existing(opts) if self._existing is not None else []
        if replaced:
            if not self.confirm_replace(replaced):
                self.status.setText("Nothing was exported: the files already there are kept. "
                                    "Choose another folder, or export again and replace them.")
                return
            opts = replace(opts, overwrite=True)
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

    def confirm_replace(self, paths: list[Path]) -> bool:
        """Ask before an export replaces files already in the folder (an earlier export, maybe edited since)."""
        names = "\n".join(p.name for p in paths[:8]) + (f"\n… and {len(paths) - 8} more" if len(paths) > 8 else "")
        box = QMessageBox(QMessageBox.Icon.Warning, "Replace files?",
                          f"{len(paths)} file(s) this export writes already exist in {paths[0].parent}:\n\n{names}\n\n"
                          "Replace them? Any changes made to them since (notes added to a table) are lost.",
                          parent=self)
        replace_button = box.addButton("Replace", QMessageBox.ButtonRole.DestructiveRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(QMessageBox.StandardButton.Cancel)
        box.exec()
        return box.clickedButton() is replace_button

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
        self.status.setText(f"Wrote {n} file{'s' if n != 1 else ''} to the folder above{extra}.")
        self.open_button.setVisible(n > 0)

    def _open_folder(self) -> None:
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.options().destination)))

    def reject(self) -> None:
        """Close, or while exporting, cancel (the dialog stays open and says so)."""
        if self._handle is not None:
            self._handle.cancel()
            return
        super().reject()


def describe_pixel_sizes(sizes: list[float | None], default: float | None = None) -> str:
    """"Recorded in the files: 0.5 µm (2 images); 1 image records none: measured in pixels"."""
    if not sizes:
        return "No images in this scope."
    counts: dict[float, int] = {}
    for v in sizes:
        if v:
            counts[round(float(v), 6)] = counts.get(round(float(v), 6), 0) + 1
    unknown = sum(1 for v in sizes if not v)
    parts = []
    if counts:
        shown = sorted(counts.items())[:4]
        listed = ", ".join(f"{v:g} µm ({n} image{'s' if n != 1 else ''})" for v, n in shown)
        parts.append(f"Recorded in the files: {listed}{', …' if len(counts) > 4 else ''}")
    if unknown:
        how = (f"measured with the default {default:g} µm from Settings" if default
               else "measured in pixels (pixel size 'unknown' in the Images sheet)")
        parts.append(f"{unknown} image{'s record' if unknown != 1 else ' records'} none: {how}")
    return "; ".join(parts) + "."
