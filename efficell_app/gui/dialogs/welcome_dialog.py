"""First run: the welcome dialog, and Help → Open sample project.

On a start with no recent projects (and unless the user chose "Don't show again", see
:func:`~efficell_app.gui.settings.welcome_wanted`) the window shows :class:`WelcomeDialog`:
open the sample project, open a project, start a new one. The window's
:class:`SampleProjectMaker` builds the sample project
(:func:`efficell_app.samples.create_sample_project`) in the user's data folder in a worker and
says when it is ready; the window opens it and, with auto-segment on, segments it.
An existing project is never overwritten: the user is asked whether to open it or to make
a fresh copy in a folder of their choice (created beside anything already there).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtWidgets import (
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ... import tasks
from ..settings import set_welcome_wanted, welcome_wanted
from ..workers import CallWorker, start_call

log = logging.getLogger(__name__)

WELCOME_TEXT = (
    "EffiCell finds cells in microscopy images, measures them, and learns your images from a few "
    "corrected examples.<br><br>"
    "<b>New here?</b> Open the sample project: three small images (fluorescent nuclei and phase-contrast "
    "cells) with their human annotations, segmented by the built-in model in a minute or less.<br><br>"
    "Or open a project you already have, or start a new one and drop a folder of images on the window.")


class WelcomeDialog(QDialog):
    """The first-start choices; each button closes the dialog, then acts on ``window``."""

    def __init__(self, window: Any) -> None:
        super().__init__(window)
        self.setWindowTitle("Welcome to EffiCell")
        self._window = window
        title = QLabel("<h2>Welcome to EffiCell</h2>")
        text = QLabel(WELCOME_TEXT)
        text.setWordWrap(True)
        text.setMinimumWidth(420)
        hint = QLabel("<span style='color:gray'>To check that this installation works and which GPU it found: "
                      "Help → Self-test…</span>")
        hint.setWordWrap(True)
        self.sample_button = QPushButton("Open sample project")
        self.sample_button.setDefault(True)
        self.open_button = QPushButton("Open project…")
        self.new_button = QPushButton("New project…")
        self.dont_show_button = QPushButton("Don't show again")
        self.dont_show_button.setFlat(True)
        self.dont_show_button.setToolTip("Start with an empty window next time (Help → Open sample project stays)")
        self.sample_button.clicked.connect(lambda: self._then(window.open_sample_project))
        self.open_button.clicked.connect(lambda: self._then(window.open_project_dialog))
        self.new_button.clicked.connect(lambda: self._then(window.new_project))
        self.dont_show_button.clicked.connect(self.dont_show_again)
        actions = QHBoxLayout()
        for b in (self.sample_button, self.open_button, self.new_button):
            actions.addWidget(b)
        bottom = QHBoxLayout()
        bottom.addStretch(1)
        bottom.addWidget(self.dont_show_button)
        layout = QVBoxLayout(self)
        layout.addWidget(title)
        layout.addWidget(text)
        layout.addSpacing(6)
        layout.addLayout(actions)
        layout.addWidget(hint)
        layout.addLayout(bottom)

    def _then(self, action: Any) -> None:
        """Close first, so the file dialog an action may open is not stacked on this one."""
        self.accept()
        QTimer.singleShot(0, action)

    def dont_show_again(self) -> None:
        set_welcome_wanted(False)
        self.reject()


def show_welcome(window: Any) -> WelcomeDialog | None:
    """Show the welcome dialog (not modal) if this is a first start; returns it, or None."""
    if window.session.project is not None or not welcome_wanted():
        return None
    dlg = WelcomeDialog(window)
    dlg.show()
    dlg.raise_()
    return dlg


# ---------------------------------------------------------------------- sample project
def ask_existing(parent: QWidget, folder: Path) -> str:
    """A sample project is already at ``folder``: ``"open"`` it, make a ``"copy"`` elsewhere, or ``"cancel"``."""
    box = QMessageBox(QMessageBox.Icon.Question, "Sample project",
                      f"A sample project already exists in\n{folder}\n\nOpen it, or make a fresh copy in another "
                      "folder? (The existing project is not changed.)", parent=parent)
    open_button = box.addButton("Open it", QMessageBox.ButtonRole.AcceptRole)
    copy_button = box.addButton("Fresh copy elsewhere…", QMessageBox.ButtonRole.ActionRole)
    box.addButton(QMessageBox.StandardButton.Cancel)
    box.setDefaultButton(open_button)
    box.exec()
    clicked = box.clickedButton()
    return "open" if clicked is open_button else "copy" if clicked is copy_button else "cancel"


def pick_folder(parent: QWidget) -> str:
    """The folder to make the fresh copy in ("" when the user cancels)."""
    return QFileDialog.getExistingDirectory(parent, "Folder for the sample project (a new folder is made inside)")


def free_folder(path: Path) -> Path:
    """``path`` if it does not exist or is an empty folder, else ``path (2)``, ``path (3)``, ..."""
    path = Path(path)

    def free(p: Path) -> bool:
        return not p.exists() or (p.is_dir() and not any(p.iterdir()))

    if free(path):
        return path
    for i in range(2, 1000):
        cand = path.with_name(f"{path.name} ({i})")
        if free(cand):
            return cand
    raise RuntimeError(f"no free folder name beside {path}")


class SampleProjectMaker(QObject):
    """Opens the sample project, building it first in a worker when needed.

    Signals: ``ready(folder)`` when the project is there to open (the window opens it),
    ``message(text)`` for the status bar, ``problem(text)`` when it could not be made.
    ``worker`` is the build in progress (None when idle).
    """

    ready = Signal(object)  # Path
    message = Signal(str)
    problem = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._parent = parent
        self.worker: CallWorker | None = None

    def open(self, dest: str | Path | None = None) -> CallWorker | None:
        """``dest``: where it goes (None: :func:`~efficell_app.samples.default_sample_project_dir`).
        Returns the worker building it, or None when an existing project is to be opened
        (``ready`` was emitted) or the user cancelled."""
        from ...project import Project
        from ...samples import default_sample_project_dir

        dest = Path(dest) if dest is not None else default_sample_project_dir()
        if Project.is_project(dest):
            choice = ask_existing(self._parent, dest)
            if choice == "open":
                self.ready.emit(dest)
                return None
            if choice != "copy":
                return None
            folder = pick_folder(self._parent)
            if not folder:
                return None
            dest = Path(folder) / dest.name
        dest = free_folder(dest)
        if self.worker is not None:
            self.message.emit("The sample project is being made already")
            return None

        def build(report: Any, cancel: Any) -> Path:
            from ...core.errors import OutputError
            from ...samples import create_sample_project

            try:
                dest.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise OutputError(dest, f"cannot create the folder ({exc.strerror or exc})") from exc
            return create_sample_project(dest, progress=report)

        def failed(exc: BaseException) -> None:
            msg = tasks.describe_error(exc)
            self.message.emit(f"The sample project could not be made: {msg}")
            self.problem.emit(f"sample project: {msg}")

        self.message.emit(f"Making the sample project in {dest}…")
        self.worker = start_call(build, on_progress=lambda ev: self.message.emit(f"Sample project: {ev}"),
                                 on_returned=self.ready.emit, on_error=failed, on_finished=self._done)
        return self.worker

    def _done(self) -> None:
        self.worker = None
