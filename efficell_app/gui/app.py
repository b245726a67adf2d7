"""Start the desktop app: ``efficell`` with no arguments, or ``efficell-gui``."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from .settings import APP, ORG, Preferences, apply_environment

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    """Create the application and the main window; a folder argument opens that project."""
    argv = sys.argv[1:] if argv is None else list(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(name)s: %(message)s")
    from .display_check import display_problem

    problem = display_problem()
    if problem is not None:  # Qt would abort the process (exit 134) with a line about plugins
        print(problem, file=sys.stderr)
        return 1
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([sys.argv[0] if sys.argv else "efficell", *argv])
    app.setOrganizationName(ORG)
    app.setApplicationName(APP)
    from .. import __version__

    app.setApplicationVersion(__version__)
    from .main_window import MainWindow

    prefs = Preferences.load()
    apply_environment(prefs)
    window = MainWindow(prefs)
    window.closed.connect(app.quit)  # quit with the main window, whatever else is still open
    window.show()
    folder = next((arg for arg in argv if Path(arg).is_dir()), None)
    if folder is not None:
        window.open_project(folder)
    else:
        window.reopen_last_project()
    from .workers import stop_all

    app.aboutToQuit.connect(stop_all)  # no worker may outlive the application object
    rc = int(app.exec())
    stop_all()
    return rc


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
