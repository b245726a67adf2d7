"""Entry point of the bundled EffiCell executables.

    efficell                         the GUI
    efficell PROJECT_FOLDER          the GUI with that project open
    efficell .../project.efficell    the same (double-click / file association / "Open with")
    efficell COMMAND ... | --selftest | --version   the command line (efficell_app.cli)

On Windows the same script is also built as the windowed ``efficell-gui.exe`` (no console
window) for the Start menu and the file association.
"""

from __future__ import annotations

import sys
from pathlib import Path

PROJECT_INDEX = "project.efficell"  # efficell_app.project.store.DB_NAME


def project_folder(argv: list[str]) -> str | None:
    """The project folder when the only argument is a project folder or its index file, else None."""
    if len(argv) != 1:
        return None
    p = Path(argv[0])
    if p.name.lower() == PROJECT_INDEX and p.is_file():
        return str(p.parent)
    if p.is_dir() and (p / PROJECT_INDEX).is_file():
        return str(p)
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    folder = project_folder(argv)
    if folder is not None:
        from efficell_app.gui.app import main as gui_main

        return gui_main([folder])
    from efficell_app.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
