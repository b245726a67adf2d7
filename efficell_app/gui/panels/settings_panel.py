"""Segmentation settings: model, cell diameter, channels, and the segment buttons."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

AUTO = "auto"


class SegmentationPanel(QWidget):
    """Emits ``segment_requested(scope)`` with scope "image" | "selection" | "set" | "project"."""

    segment_requested = Signal(str)
    settings_changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._extra_models: list[tuple[str, str]] = []
        self.model_box = QComboBox()
        self.model_box.addItem("Built-in (EffiCell compact)", None)
        self.model_box.setToolTip("The built-in model, or an adapter trained in this project")
        # The model list has a row of its own (the panel's whole width: adapter names are long);
        # it does not make the panel wider than that, and its popup shows every name whole.
        self.model_box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.model_box.setMinimumContentsLength(16)
        self.model_box.currentIndexChanged.connect(
            lambda _i: self.model_box.setToolTip(f"Segment with: {self.model_box.currentText()}"))

        self.auto_diameter = QCheckBox("estimate")
        self.auto_diameter.setToolTip("Estimate the typical cell diameter of each image (uncheck to type one in)")
        self.auto_diameter.setChecked(True)
        self.diameter = QDoubleSpinBox()
        self.diameter.setRange(3.0, 1000.0)
        self.diameter.setValue(30.0)
        self.diameter.setSuffix(" px")
        self.diameter.setEnabled(False)
        self.diameter.setToolTip("Typical cell diameter in pixels")
        self.auto_diameter.toggled.connect(lambda on: self.diameter.setEnabled(not on))

        self.cyto = QComboBox()
        self.nucleus = QComboBox()
        self.set_channel_names(())

        self.auto_segment = QCheckBox("Segment new images as they are added")
        self.auto_segment.setChecked(True)
        self.only_new = QCheckBox("Skip images already segmented")

        for combo in (self.cyto, self.nucleus):
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(8)
        form = QFormLayout()
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)  # a narrow panel puts labels above
        form.addRow(QLabel("Model"))
        form.addRow(self.model_box)
        drow = QHBoxLayout()
        drow.addWidget(self.diameter, 1)
        drow.addWidget(self.auto_diameter)
        form.addRow("Cell diameter", drow)
        form.addRow("Cell channel", self.cyto)
        form.addRow("Nucleus channel", self.nucleus)
        box = QGroupBox("Segmentation")
        box.setLayout(form)

        self.buttons: dict[str, QPushButton] = {}
        grid = QVBoxLayout()
        for scope, text, tip in (
            ("image", "Segment this image", "Segment the image in the viewer (Ctrl+R)"),
            ("selection", "Segment selected", "Segment the images selected in the project panel"),
            ("set", "Segment set", "Segment every image of the current set"),
            ("project", "Segment all", "Segment every image in the project"),
        ):
            b = QPushButton(text)
            b.setToolTip(tip)
            b.clicked.connect(lambda _=False, s=scope: self.segment_requested.emit(s))
            self.buttons[scope] = b
            grid.addWidget(b)
        self.buttons["image"].setDefault(True)

        layout = QVBoxLayout(self)
        layout.addWidget(box)
        layout.addLayout(grid)
        layout.addWidget(self.auto_segment)
        layout.addWidget(self.only_new)
        layout.addStretch(1)
        for w in (self.model_box, self.cyto, self.nucleus):
            w.currentIndexChanged.connect(self.settings_changed)
        self.diameter.valueChanged.connect(self.settings_changed)
        self.auto_diameter.toggled.connect(self.settings_changed)

    def set_channel_names(self, names: tuple[str, ...]) -> None:
        """Offer the current image's channels (``auto`` = what the model picks by default)."""
        for box, none_text in ((self.cyto, "auto"), (self.nucleus, "none")):
            current = box.currentData()
            box.blockSignals(True)
            box.clear()
            box.addItem(none_text, None)
            for i, n in enumerate(names):
                box.addItem(f"{i}: {n}", i)
            idx = box.findData(current)
            box.setCurrentIndex(max(idx, 0))
            box.blockSignals(False)
        self.nucleus.setEnabled(len(names) > 1)

    def add_model_file(self, path: str, label: str) -> None:
        """Offer an adapter file from outside the project (kept when the project changes); select it."""
        self._extra_models.append((label, str(path)))
        self.model_box.addItem(label, str(path))
        self.model_box.setCurrentIndex(self.model_box.count() - 1)

    def set_adapters(self, adapters: list[Any]) -> None:
        """List the project's adapters (``AdapterInfo`` with ``name`` and ``path``)."""
        current = self.model_box.currentData()
        self.model_box.blockSignals(True)
        self.model_box.clear()
        self.model_box.addItem("Built-in (EffiCell compact)", None)
        if adapters:  # the project's adapters under a line, by name (the panel is narrow)
            self.model_box.insertSeparator(self.model_box.count())
        for a in adapters:
            self.model_box.addItem(a.name, str(a.path))
            self.model_box.setItemData(self.model_box.count() - 1, f"Adapter '{a.name}' of this project",
                                       Qt.ItemDataRole.ToolTipRole)
        for label, path in self._extra_models:
            self.model_box.addItem(label, path)
        self.model_box.setCurrentIndex(max(self.model_box.findData(current), 0))
        self.model_box.blockSignals(False)

    def select_model(self, path: str | None) -> bool:
        """Choose the model to segment with (an adapter file listed here, or None: built-in)."""
        idx = self.model_box.findData(None if path is None else str(path))
        if idx >= 0:
            self.model_box.setCurrentIndex(idx)
        return idx >= 0

    def set_busy(self, busy: bool) -> None:
        for b in self.buttons.values():
            b.setEnabled(not busy)

    def model(self) -> str | None:
        return self.model_box.currentData()

    def diameter_value(self) -> float | None:
        return None if self.auto_diameter.isChecked() else float(self.diameter.value())

    def channels(self) -> tuple[int, ...] | None:
        cyto, nuc = self.cyto.currentData(), self.nucleus.currentData()
        if cyto is None and nuc is None:
            return None
        if nuc is None:
            return (int(cyto),)
        return (int(cyto if cyto is not None else 0), int(nuc))

    def options(self) -> dict[str, Any]:
        """Everything a run needs from this panel."""
        return {"model": self.model(), "diameter": self.diameter_value(), "channels": self.channels(),
                "only_new": self.only_new.isChecked()}
