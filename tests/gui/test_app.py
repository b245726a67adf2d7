"""Starting the app: the entry point, window state, and no heavy imports before the window shows."""

from __future__ import annotations

import subprocess
import sys

import pytest
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

pytestmark = pytest.mark.gui


def test_main_opens_the_window_and_exits_cleanly(qtbot) -> None:  # noqa: ANN001
    from efficell_app.gui import app as gui_app
    from efficell_app.gui.main_window import MainWindow

    seen: list[MainWindow] = []

    def close_it() -> None:
        wins = [w for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow) and w.isVisible()]
        seen.extend(wins)
        for w in wins:
            w.close()
        QApplication.instance().quit()

    QTimer.singleShot(300, close_it)
    assert gui_app.main([]) == 0
    assert len(seen) == 1 and seen[0].windowTitle() == "EffiCell"


def test_window_state_and_recent_projects_are_remembered(qtbot, tmp_path) -> None:  # noqa: ANN001
    from efficell_app.gui.main_window import MainWindow
    from efficell_app.gui.settings import Preferences, recent_projects

    w = MainWindow(Preferences(device="cpu"), restore_state=False)
    qtbot.addWidget(w)
    w.session.create_project(tmp_path / "P1")
    w.docks["Segmentation"].hide()
    w.close()
    assert recent_projects()[0] == str(tmp_path / "P1")
    w2 = MainWindow(Preferences(device="cpu"), restore_state=True)
    qtbot.addWidget(w2)
    assert w2.docks["Segmentation"].isHidden()
    assert w2.open_project(tmp_path / "P1")
    assert w2.session.project.name == "P1"
    w2.close()


def test_gui_import_does_not_load_torch_or_pandas() -> None:
    code = ("import sys; import efficell_app.gui.main_window, efficell_app.gui.app; "
            "print(','.join(m for m in ('torch', 'pandas', 'timm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
