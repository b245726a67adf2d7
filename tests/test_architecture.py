"""The layer contract (docs/architecture.md), enforced: pyproject's import-linter contracts hold for
EffiCell, and the same contracts catch each kind of violation in a small package made to break them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("importlinter")
try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def _lint(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[bool, str]:
    from importlinter import configuration
    from importlinter.application.use_cases import lint_imports

    configuration.configure()
    ok = lint_imports(config_filename=str(config), cache_dir=None, no_logo=True)
    return ok, capsys.readouterr().out


def test_efficell_keeps_its_layers_and_has_no_import_cycles(capsys: pytest.CaptureFixture[str]) -> None:
    """gui/cli -> tasks -> project -> core; core, project and tasks never import Qt, gui or cli;
    no two modules of a package import each other, directly or in a circle (TYPE_CHECKING imports aside)."""
    ok, report = _lint(ROOT / "pyproject.toml", capsys)
    assert ok, report
    assert "3 kept, 0 broken" in report


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return "[" + ", ".join(_toml(v) for v in value) + "]"  # type: ignore[union-attr]


def test_the_contracts_catch_qt_upward_imports_and_cycles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """EffiCell's own contracts, applied to a package that breaks each of them once."""
    pkg = tmp_path / "demo_app"
    files = {
        "__init__.py": "", "gui/__init__.py": "", "cli/__init__.py": "", "tasks/__init__.py": "",
        "project/__init__.py": "", "core/__init__.py": "",
        "core/a.py": "from . import b\n",  # a circle inside core
        "core/b.py": "from . import a\n",
        "core/qt.py": "import PySide6\n",  # Qt in the core
        "project/up.py": "def f():\n    from ..gui import x\n",  # an upward (and late) import
        "gui/x.py": "",
    }
    for name, text in files.items():
        (pkg / name).parent.mkdir(parents=True, exist_ok=True)
        (pkg / name).write_text(text)
    ours = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    lines = ['[tool.importlinter]', 'root_package = "demo_app"', 'include_external_packages = true',
             'exclude_type_checking_imports = true']
    for contract in ours["contracts"]:
        lines.append("[[tool.importlinter.contracts]]")
        for key, value in contract.items():
            if isinstance(value, list):
                value = [v.replace("efficell_app", "demo_app") for v in value]
            lines.append(f"{key} = {_toml(value)}")
    config = tmp_path / "pyproject.toml"
    config.write_text("\n".join(lines) + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    ok, report = _lint(config, capsys)
    assert not ok
    assert "0 kept, 3 broken" in report, report
    assert "demo_app.core.qt -> PySide6" in report
    assert "demo_app.project.up -> demo_app.gui" in report
    assert ".a -> .b" in report or ".b -> .a" in report
    sys.modules.pop("demo_app", None)
