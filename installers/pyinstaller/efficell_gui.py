"""Entry point of the windowed EffiCell executable (double-click, Start menu, file association).

The file association opens ``<project>/project.efficell``; the GUI opens project *folders*,
so an index-file argument is turned into its folder here.
"""

from __future__ import annotations

import sys
from pathlib import Path

PROJECT_INDEX_SUFFIX = ".efficell"


def project_args(argv: list[str]) -> list[str]:
    """``.../MyProject/project.efficell`` -> ``.../MyProject``; other arguments unchanged."""
    out = []
    for arg in argv:
        p = Path(arg)
        out.append(str(p.parent) if p.suffix.lower() == PROJECT_INDEX_SUFFIX and p.is_file() else arg)
    return out


if __name__ == "__main__":
    from efficell_app.gui.app import main

    raise SystemExit(main(project_args(sys.argv[1:])))
