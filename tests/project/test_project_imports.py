"""The project and tasks packages need no Qt and import no heavy library at start-up."""

from __future__ import annotations

import subprocess
import sys


def test_project_imports_without_qt_torch_or_pandas() -> None:
    code = (
        "import sys\n"
        "sys.modules['PySide6'] = None\n"  # any Qt import would now fail
        "import efficell_app.project, efficell_app.project.measuring, efficell_app.tasks\n"
        "import efficell_app.cli.export\n"
        "print(sorted(m for m in ('torch', 'pandas', 'PySide6', 'skimage') if sys.modules.get(m) is not None))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
