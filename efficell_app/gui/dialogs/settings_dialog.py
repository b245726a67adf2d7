"""Application settings: compute device, where segmentation runs, threads, default pixel size,
smallest object measured, weights cache folder."""

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
    QLabel,
    QLineEdit,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..settings import Preferences
from . import path_row

RUN_ON_KINDS = (("This computer", ""), ("Local Dask cluster", "local"), ("Dask scheduler", "scheduler"),
                ("Job queue (dask-jobqueue)", "queue"))
RUN_ON_PLACEHOLDERS = {"local": "worker processes (empty: one per core)", "scheduler": "tcp://host:8786",
                       "queue": "slurm, pbs, sge or lsf, then :jobs (slurm:4)"}


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
        self._run_on_row(prefs.run_on)

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
        cache_row = path_row(self.cache_dir, self._browse)

        self.auto_segment = QCheckBox("Segment images as soon as they are added")
        self.auto_segment.setChecked(prefs.auto_segment)

        form = QFormLayout()
        form.addRow("Device", self.device)
        form.addRow("Run on", self.run_on_box)
        form.addRow("Threads", self.threads)
        form.addRow("Default pixel size", self.pixel_size)
        form.addRow("Smallest object measured", self.min_object)
        form.addRow("Model cache folder", cache_row)
        form.addRow("", self.auto_segment)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self._ok = buttons.button(QDialogButtonBox.StandardButton.Ok)
        self._check_run_on()
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(buttons)

    def _browse(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Model cache folder", self.cache_dir.text())
        if d:
            self.cache_dir.setText(d)

    # ------------------------------------------------------------------ Run on: this computer or a Dask cluster
    def _run_on_row(self, spec: str) -> None:
        from ...tasks import cluster_extra_missing, parse_cluster

        self.run_on = QComboBox()
        for text, kind in RUN_ON_KINDS:
            self.run_on.addItem(text, kind)
        self.run_on_detail = QLineEdit()
        self.run_on_hint = QLabel()
        self.run_on_hint.setWordWrap(True)
        missing = cluster_extra_missing()
        if missing:  # the cluster extra is not installed: only this computer
            for i in range(1, self.run_on.count()):
                self.run_on.model().item(i).setEnabled(False)
            self.run_on.setToolTip(missing)
        kind, detail = "", ""
        try:
            parsed = parse_cluster(spec) if spec else None
        except ValueError:
            parsed = None
        if parsed is not None:
            kind = {"local": "local", "scheduler": "scheduler"}.get(parsed.kind, "queue")
            detail = parsed.address if kind == "scheduler" else (
                str(parsed.workers or "") if kind == "local" else str(parsed))
        self.run_on.setCurrentIndex(max(0, self.run_on.findData(kind)))
        self.run_on_detail.setText(detail)
        self.run_on.currentIndexChanged.connect(self._check_run_on)
        self.run_on_detail.textChanged.connect(self._check_run_on)
        row = QVBoxLayout()
        line = QHBoxLayout()
        line.addWidget(self.run_on)
        line.addWidget(self.run_on_detail, 1)
        row.addLayout(line)
        row.addWidget(self.run_on_hint)
        self.run_on_box = QWidget()
        self.run_on_box.setLayout(row)
        row.setContentsMargins(0, 0, 0, 0)

    def run_on_spec(self) -> str | None:
        """The cluster spec chosen ("" for this computer), or ``None`` when what is typed is not one."""
        from ...tasks import parse_cluster

        kind, detail = self.run_on.currentData(), self.run_on_detail.text().strip()
        if not kind:
            return ""
        text = {"local": f"local:{detail}" if detail else "local", "queue": detail or "slurm"}.get(kind, detail)
        try:
            spec = parse_cluster(text)
        except ValueError:
            return None
        if (kind == "scheduler") != (spec.kind == "scheduler") or (kind == "local") != (spec.kind == "local"):
            return None
        return str(spec)

    def _check_run_on(self) -> None:
        from ...tasks.cluster import SPEC_HELP

        kind = self.run_on.currentData()
        self.run_on_detail.setEnabled(bool(kind))
        self.run_on_detail.setPlaceholderText(RUN_ON_PLACEHOLDERS.get(kind, ""))
        spec = self.run_on_spec()
        if spec is None:
            self.run_on_hint.setText(f"Not understood: give {SPEC_HELP}.")
        elif spec:
            self.run_on_hint.setText(f"Segmentation runs on {spec}; every worker must see the images' folder "
                                     "(docs/cluster.md).")
        else:
            self.run_on_hint.setText("Segmentation runs in this window's process.")
        self._ok.setEnabled(spec is not None)

    def preferences(self) -> Preferences:
        return Preferences(
            device=str(self.device.currentData()),
            run_on=self.run_on_spec() or "",
            threads=int(self.threads.value()),
            pixel_size_um=float(self.pixel_size.value()),
            cache_dir=self.cache_dir.text().strip(),
            auto_segment=self.auto_segment.isChecked(),
            min_object_px=int(self.min_object.value()),
        )
