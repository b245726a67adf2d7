"""Window sizes that fit the screen they open on (a 1366x768 laptop as well as a 4K monitor)."""

from __future__ import annotations

from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QWidget

SCREEN_SHARE = 0.92  # of the screen's free area, leaving room for the window frame and the task bar


def fit_to_screen(widget: QWidget, width: int, height: int) -> None:
    """Resize ``widget`` to ``width`` x ``height``, or smaller where its screen's free area is smaller:
    on a 1366x768 screen the main window's status bar (progress, Cancel) and the training dialog's
    Start button had opened below the screen's edge."""
    screen = widget.screen() or QGuiApplication.primaryScreen()
    # the offscreen platform (tests, headless runs) has no physical screen to fit: its 800x800 is nominal
    if screen is not None and QGuiApplication.platformName() != "offscreen":
        free = screen.availableGeometry()
        width = min(width, int(free.width() * SCREEN_SHARE))
        height = min(height, int(free.height() * SCREEN_SHARE))
    widget.resize(width, height)
