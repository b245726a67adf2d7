"""First run: the welcome dialog, and Help → Open sample project.

On a start with no recent projects (and unless the user chose "Don't show again", see
:func:`~efficell_app.gui.settings.welcome_wanted`) the window shows :class:`WelcomeDialog`:
open the sample project, open a project, start a new one. The sample project
(:func:`efficell_app.samples.create_sample_project`) is built in the user's data folder in a
worker, opened in the window and, with auto-segment on, segmented with the selected model.
An existing project is never overwritten: the user is asked whether to open it or to make
a fresh copy in a folder of their choice (created beside anything already there).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from PySide6.QtCore import QTimer
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

from ..settings import set_welcome_wanted, welcome_wanted
from ..workers import JobResult, WorkerHandle, callback_job, launch, start_worker

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


def open_sample_project(window: Any, dest: str | Path | None = None) -> WorkerHandle | None:
    """Open the sample project in ``window``, building it first in a worker when needed.

    ``dest``: where it goes (None: :func:`~efficell_app.samples.default_sample_project_dir`).
    Returns the worker building it (``window.sample_handle`` too), or None when an existing
    project was opened or the user cancelled.
    """
    from ...project import Project
    from ...samples import default_sample_project_dir

    dest = Path(dest) if dest is not None else default_sample_project_dir()
    if Project.is_project(dest):
        choice = ask_existing(window, dest)
        if choice == "open":
            window.open_project(dest)
            return None
        if choice != "copy":
            return None
        folder = pick_folder(window)
        if not folder:
            return None
        dest = Path(folder) / dest.name
    dest = free_folder(dest)
    if getattr(window, "sample_handle", None) is not None:
        window.statusBar().showMessage("The sample project is being made already", 5000)
        return None

    def build(report: Any, cancel: Any) -> Path:
        from ...core.errors import OutputError
        from ...samples import create_sample_project

        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(dest, f"cannot create the folder ({exc.strerror or exc})") from exc
        return create_sample_project(dest, progress=report)

    def on_event(ev: Any) -> None:
        if isinstance(ev, JobResult):
            _opened(window, ev.value)
        else:
            window.statusBar().showMessage(f"Sample project: {ev}", 5000)

    def failed(msg: str) -> None:
        window.statusBar().showMessage(f"The sample project could not be made: {msg}", 15000)
        window._problem(f"sample project: {msg}")

    def done() -> None:
        window.sample_handle = None

    window.statusBar().showMessage(f"Making the sample project in {dest}…")
    handle = start_worker(callback_job(build), parent=window, on_event=on_event)
    handle.failed.connect(failed)
    handle.done.connect(done)
    window.sample_handle = handle
    launch(handle)
    return handle


def _opened(window: Any, root: Path) -> None:
    if not window.open_project(root):
        return
    window.statusBar().showMessage(f"Sample project opened from {root}", 15000)
    if window.seg_panel.auto_segment.isChecked():
        window.segment_scope("project")
