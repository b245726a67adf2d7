"""The annotation tools panel (a dock): tools, brush size, undo/redo, start/import, mark done."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from .canvas import TOOLS

TOOL_INFO = {
    "navigate": ("Navigate", "V", "Pan, zoom and select cells (no editing)"),
    "brush": ("Brush", "B", "Paint a cell: start on a cell to extend it, on background for a new cell"),
    "eraser": ("Eraser", "E", "Erase pixels to background"),
    "fill": ("Fill", "F", "Fill the region under the click with the current cell (fills holes)"),
    "polygon": ("Polygon", "P", "Click the corners of a new cell; double-click or Enter closes it, Backspace cancels"),
    "freehand": ("Outline", "O", "Draw the outline of a new cell in one stroke"),
    "delete": ("Delete", "X", "Click a cell to delete it"),
    "merge": ("Merge", "M", "Click two cells to merge them"),
    "split": ("Split", "S", "Draw a line across a cell to cut it in two"),
}
assert set(TOOL_INFO) == set(TOOLS)


class AnnotationPanel(QWidget):
    """Widgets only; the controller connects them."""

    tool_chosen = Signal(str)
    start_requested = Signal(str)  # "prediction" | "empty" | "import" | "saved"

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.tool_group = QButtonGroup(self)
        self.tool_group.setExclusive(True)
        self.tool_buttons: dict[str, QToolButton] = {}
        grid = QGridLayout()
        for i, tool in enumerate(TOOLS):
            text, key, tip = TOOL_INFO[tool]
            b = QToolButton(text=text)
            b.setCheckable(True)
            b.setToolTip(f"{tip} ({key})")
            b.setMinimumWidth(70)
            b.clicked.connect(lambda _=False, t=tool: self.tool_chosen.emit(t))
            self.tool_group.addButton(b)
            self.tool_buttons[tool] = b
            grid.addWidget(b, i // 3, i % 3)
        self.tool_buttons["navigate"].setChecked(True)

        self.size = QSpinBox()
        self.size.setRange(1, 200)
        self.size.setValue(4)
        self.size.setSuffix(" px")
        self.size.setToolTip("Brush radius: [ and ] or Ctrl+mouse wheel")
        self.overwrite = QCheckBox("Paint over other cells")
        self.overwrite.setToolTip("Off: the brush and new outlines only cover background and the cell itself")
        size_row = QHBoxLayout()
        size_row.addWidget(QLabel("Brush radius"))
        size_row.addWidget(self.size)
        tools_box = QGroupBox("Tools")
        tv = QVBoxLayout(tools_box)
        tv.addLayout(grid)
        tv.addLayout(size_row)
        tv.addWidget(self.overwrite)

        self.undo_button = QPushButton("Undo")
        self.undo_button.setToolTip("Undo the last change (Ctrl+Z)")
        self.redo_button = QPushButton("Redo")
        self.redo_button.setToolTip("Redo (Ctrl+Shift+Z)")
        ur = QHBoxLayout()
        ur.addWidget(self.undo_button)
        ur.addWidget(self.redo_button)
        tv.addLayout(ur)

        self.start_buttons: dict[str, QPushButton] = {}
        start_box = QGroupBox("Start")
        sv = QVBoxLayout(start_box)
        for key, text, tip in (
            ("prediction", "Start from the prediction", "Correct the model's segmentation of this image"),
            ("empty", "Start empty", "Draw every cell yourself"),
            ("import", "Import masks…", "Label image (*_masks.tif/png), Cellpose _seg.npy or ImageJ ROI zip"),
        ):
            b = QPushButton(text)
            b.setToolTip(tip)
            b.clicked.connect(lambda _=False, k=key: self.start_requested.emit(k))
            self.start_buttons[key] = b
            sv.addWidget(b)

        self.mark_button = QPushButton("Mark annotated (use for training)")
        self.mark_button.setToolTip("This image's annotation is finished: it goes into the training set")
        self.done_button = QPushButton("Stop annotating")
        self.done_button.setToolTip("Save and go back to viewing")
        self.train_button = QPushButton("Train an adapter…")
        self.next_button = QPushButton("Annotate next: suggest images…")
        self.next_button.setToolTip("Rank the images not yet annotated by how unsure the model is")
        self.uncertainty_box = QCheckBox("Show cell uncertainty")
        self.uncertainty_box.setToolTip("Colour each cell of the prediction by how unsure the model is (red = unsure)")

        self.cell_label = QLabel("Cell: –")
        self.status = QLabel("Not annotating")
        self.status.setWordWrap(True)

        layout = QVBoxLayout(self)
        layout.addWidget(start_box)
        layout.addWidget(tools_box)
        layout.addWidget(self.cell_label)
        layout.addWidget(self.mark_button)
        layout.addWidget(self.done_button)
        layout.addWidget(self.uncertainty_box)
        layout.addWidget(self.next_button)
        layout.addWidget(self.train_button)
        layout.addWidget(self.status)
        layout.addStretch(1)
        self.set_editing(False)

    def set_tool(self, tool: str) -> None:
        self.tool_buttons[tool].setChecked(True)

    def set_editing(self, on: bool) -> None:
        for w in (self.undo_button, self.redo_button, self.mark_button, self.done_button):
            w.setEnabled(on)

    def set_history(self, can_undo: bool, can_redo: bool) -> None:
        self.undo_button.setEnabled(can_undo)
        self.redo_button.setEnabled(can_redo)
