"""File → New project: a name and a place. The folder is created when it does not exist yet
(a folder chooser can only pick folders that already exist, so it cannot be the whole dialog)."""

from __future__ import annotations

import html
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QLabel,
    QLineEdit,
    QVBoxLayout,
    QWidget,
)

from ...project import Project
from . import path_row


class NewProjectDialog(QDialog):
    """Asks for the project's name and the folder to put it in; :meth:`folder` is the project folder.

    The name may also be a whole path (typed or pasted): it is used as it is.
    """

    def __init__(self, default_folder: Path, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("New project")
        self.name = QLineEdit(default_folder.name)
        self.name.setToolTip("The project's folder is named after it")
        self.location = QLineEdit(str(default_folder.parent))
        self.location.setToolTip("Where the project's folder goes (created if it does not exist)")
        loc_row = path_row(self.location, self._browse)
        self.preview = QLabel("")
        self.preview.setWordWrap(True)
        self.preview.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        form = QFormLayout()
        form.addRow("Name", self.name)
        form.addRow("In folder", loc_row)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Create")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.preview)
        layout.addWidget(self.buttons)
        self.name.textChanged.connect(self._update)
        self.location.textChanged.connect(self._update)
        self.setMinimumWidth(min(760, max(480, self.fontMetrics().horizontalAdvance(str(default_folder)) + 200)))
        self._update()

    def folder(self) -> Path:
        """The project folder: ``location / name`` (``name`` alone when it is a whole path)."""
        name = Path(self.name.text().strip()).expanduser()
        return name if name.is_absolute() else Path(self.location.text().strip()).expanduser() / name

    def problem(self) -> str:
        """Why the project cannot be made here ("" when it can)."""
        if not self.name.text().strip():
            return "Type a name for the project."
        if not Path(self.folder()).is_absolute() and not self.location.text().strip():
            return "Choose the folder to put the project in."
        folder = self.folder()
        if folder.exists() and not folder.is_dir():
            return f"{folder} is a file; choose another name."
        if Project.is_project(folder):
            return f"{folder} is already an EffiCell project: open it with File → Open project."
        return ""

    def _update(self) -> None:
        problem = self.problem()
        ok = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        ok.setEnabled(not problem)
        if problem:
            self.preview.setText(f"<span style='color:#b91c1c'>{html.escape(problem)}</span>")
            return
        folder = self.folder()
        what = "Creates the folder" if not folder.exists() else "Makes a project in the existing folder"
        self.preview.setText(f"{what}<br><b>{html.escape(str(folder))}</b>")

    def _browse(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Folder to put the project in", self.location.text())
        if d:
            self.location.setText(d)

    def accept(self) -> None:
        if self.problem():
            self._update()
            return
        super().accept()
