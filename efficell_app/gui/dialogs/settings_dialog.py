"""Application settings: compute device, threads, default pixel size, smallest object measured,
weights cache folder."""

from __future__ import annotations

import os

from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..settings import Preferences


class SettingsDialog(QDialog):
    """Edits a :class:`Preferences`; ``preferences()`` returns the edited copy."""

    def __init__(self, prefs: Preferences, gpus: list[str] | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("EffiCell settings")
        self.device = QComboBox()
        self.device.addItem("Automatic (GPU if available)", "auto")
        self.device.addItem("CPU", "cpu")
        for i, name in enumerate(gpus or []):
            self.device.addItem(f"GPU {i}: {name}", f"cuda:{i}")
        idx = self.device.findData(prefs.device)
        if idx < 0:
            self.device.addItem(prefs.device, prefs.device)
            idx = self.device.count() - 1
        self.device.setCurrentIndex(idx)

        self.threads = QSpinBox()
        self.threads.setRange(0, max(1, os.cpu_count() or 1))
        auto = Preferences(threads=0).effective_threads()  # the number the status bar shows
        self.threads.setSpecialValueText(f"automatic: {auto} (all {os.cpu_count()} cores but one)")
        self.threads.setValue(prefs.threads)
        self.threads.setToolTip("CPU threads for segmentation; one core is left free so the window stays responsive")

        self.pixel_size = QDoubleSpinBox()
        self.pixel_size.setRange(0.0, 1000.0)
        self.pixel_size.setDecimals(4)
        self.pixel_size.setSuffix(" µm")
        self.pixel_size.setSpecialValueText("unknown (measure in pixels)")
        self.pixel_size.setValue(prefs.pixel_size_um)
        self.pixel_size.setToolTip("Used when an image file does not record its pixel size")

        self.min_object = QSpinBox()
        self.min_object.setRange(0, 100_000)
        self.min_object.setSuffix(" px")
        self.min_object.setSpecialValueText("measure every object")
        self.min_object.setValue(prefs.min_object_px)
        self.min_object.setToolTip("Objects with fewer pixels are left out of the measurements: the shape of a "
                                   "few-pixel speck means nothing. Every export states this value.")

        self.cache_dir = QLineEdit(prefs.cache_dir)
        self.cache_dir.setPlaceholderText("default (user data folder)")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        cache_row = QHBoxLayout()
        cache_row.addWidget(self.cache_dir, 1)
        cache_row.addWidget(browse)

        self.auto_segment = QCheckBox("Segment images as soon as they are added")
        self.auto_segment.setChecked(prefs.auto_segment)

        form = QFormLayout()
        form.addRow("Device", self.device)
        form.addRow("Threads", self.threads)
        form.addRow("Default pixel size", self.pixel_size)
        form.addRow("Smallest object measured", self.min_object)
        form.addRow("Model cache folder", cache_row)
        form.addRow("", self.auto_segment)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(buttons)

    def _browse(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Model cache folder", self.cache_dir.text())
        if d:
            self.cache_dir.setText(d)

    def preferences(self) -> Preferences:
        return Preferences(
            device=str(self.device.currentData()),
            threads=int(self.threads.value()),
            pixel_size_um=float(self.pixel_size.value()),
            cache_dir=self.cache_dir.text().strip(),
            auto_segment=self.auto_segment.isChecked(),
            min_object_px=int(self.min_object.value()),
        )
