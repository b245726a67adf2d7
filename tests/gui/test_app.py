"""Starting the app: the entry point, window state, and no heavy imports before the window shows."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.gui


def test_main_opens_the_window_and_exits_cleanly(tmp_path) -> None:
    """``efficell-gui`` in a fresh process (quitting ends a QApplication for good, so not in this one)."""
    code = (
        "import sys\n"
        "from PySide6.QtCore import QTimer\n"
        "from PySide6.QtWidgets import QApplication\n"
        "from efficell_app.gui import app as gui_app\n"
        "from efficell_app.gui.main_window import MainWindow\n"
        "qapp = QApplication(['efficell'])  # main() uses it; timers need it first\n"
        "seen = []\n"
        "def close_it():\n"
        "    wins = [w for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow) and w.isVisible()]\n"
        "    seen.extend(w.windowTitle() for w in wins)\n"
        "    for w in wins:\n"
        "        w.close()\n"
        "QTimer.singleShot(500, close_it)\n"
        "rc = gui_app.main([])\n"
        "print('titles', seen)\n"
        "sys.exit(rc)\n"
    )
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", EFFICELL_HOME=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "titles ['EffiCell']" in out.stdout


def test_window_state_and_recent_projects_are_remembered(qtbot, tmp_path) -> None:
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
