"""Helpers shared by the GUI tests: simulated drops, waiting for background work."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication


def drop(window, *paths: Path) -> None:
    """Simulate dragging paths from a file manager and dropping them on the window."""
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    enter = QDragEnterEvent(window.rect().center(), Qt.DropAction.CopyAction, mime,
                            Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(window, enter)
    assert enter.isAccepted()
    ev = QDropEvent(QPointF(window.rect().center()), Qt.DropAction.CopyAction, mime,
                    Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(window, ev)
    assert ev.isAccepted()


def wait_run_done(qtbot, window, timeout: int = 60_000) -> None:
    qtbot.waitUntil(lambda: not window.session.is_running() and not window.session.pending_segment
                    and not window.session.helpers_running(), timeout=timeout)


def measured_cells(labels) -> int:  # noqa: ANN001 - a label image
    """How many objects of ``labels`` the measurements hold: those of at least ``MIN_OBJECT_PX`` pixels."""
    import numpy as np

    from efficell_app.core.measure import MIN_OBJECT_PX

    counts = np.bincount(np.asarray(labels).ravel())[1:]
    return int(np.count_nonzero(counts >= MIN_OBJECT_PX))
