"""The Problems list: files that could not be added, segmented or saved, and why.

Kept in the open project (``Project.add_problems``), so the list survives a restart; lines
arriving together are saved together on the next turn of the event loop. Right-click clears it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QListWidget, QWidget

from ...core.errors import EffiCellError

log = logging.getLogger(__name__)


class ProblemsPanel(QListWidget):
    """``count_changed(n)`` after lines are added or cleared (the dock's title shows it)."""

    count_changed = Signal(int)

    def __init__(self, project: Callable[[], Any], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._project = project
        self._unsaved: list[str] = []
        self.setAlternatingRowColors(True)
        self.setWordWrap(True)
        self.setToolTip("Files that could not be added or segmented, and why (kept in the project; "
                        "right-click to clear the list)")
        self.setContextMenuPolicy(Qt.ContextMenuPolicy.ActionsContextMenu)
        clear = QAction("Clear the list", self)
        clear.triggered.connect(self.clear_all)
        self.addAction(clear)

    def lines(self) -> list[str]:
        return [self.item(i).text() for i in range(self.count())]

    def add(self, text: str) -> None:
        """Show a problem and keep it in the open project; one already listed is not listed again
        (adding a folder again reports its bad files again)."""
        if self.findItems(text, Qt.MatchFlag.MatchExactly):
            return
        self.addItem(text)
        self.scrollToBottom()
        self.count_changed.emit(self.count())
        if self._project() is not None:
            if not self._unsaved:
                QTimer.singleShot(0, self._save)
            self._unsaved.append(text)

    def show_project(self, project: Any) -> None:
        """The problems recorded in ``project`` (None: an empty list)."""
        self._unsaved = []
        self.clear()
        if project is not None:
            self.addItems(project.list_problems())
            self.scrollToBottom()
        self.count_changed.emit(self.count())

    def clear_all(self) -> None:
        """Empty the list and the project's record of it."""
        self.clear()
        self._unsaved = []
        project = self._project()
        if project is not None:
            try:
                project.clear_problems()
            except EffiCellError as exc:
                log.warning("problems not cleared in the project: %s", exc)
        self.count_changed.emit(0)

    def _save(self) -> None:
        lines, self._unsaved = self._unsaved, []
        project = self._project()
        if project is not None and lines and not project.closed:
            try:
                project.add_problems(lines)
            except EffiCellError as exc:  # a read-only project: the list still shows them
                log.warning("problems not saved in the project: %s", exc)
