"""Packaging files: relative paths only, the project file type they associate, the GUI entry's arguments."""

from __future__ import annotations

import configparser
import importlib.util
import re
from pathlib import Path

import pytest

from efficell_app.project.store import DB_NAME

ROOT = Path(__file__).resolve().parents[1]
SUFFIX = Path(DB_NAME).suffix  # ".efficell": the project index file that double-clicks open


def _load_entry():  # noqa: ANN202
    spec = importlib.util.spec_from_file_location("efficell_entry", ROOT / "installers" / "pyinstaller" / "efficell_entry.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_entry_opens_project_from_folder_or_index_file(tmp_path: Path, monkeypatch, capsys) -> None:  # noqa: ANN001
    entry = _load_entry()
    assert entry.PROJECT_INDEX == DB_NAME
    (tmp_path / DB_NAME).write_bytes(b"")
    assert entry.project_folder([str(tmp_path / DB_NAME)]) == str(tmp_path)
    assert entry.project_folder([str(tmp_path)]) == str(tmp_path)
    assert entry.project_folder([str(tmp_path / "other")]) is None
    assert entry.project_folder([str(tmp_path), "--x"]) is None
    assert entry.project_folder(["--version"]) is None
    opened: list[list[str]] = []
    monkeypatch.setattr("efficell_app.gui.app.main", lambda argv: opened.append(argv) or 0)
    assert entry.main([str(tmp_path / DB_NAME)]) == 0 and opened == [[str(tmp_path)]]
    with pytest.raises(SystemExit) as exc:  # everything else is the command line
        entry.main(["--version"])
    assert exc.value.code == 0 and "efficell" in capsys.readouterr().out


def test_spec_uses_relative_paths_only() -> None:
    text = (ROOT / "build.spec").read_text()
    compile(text, "build.spec", "exec")
    assert not re.search(r"[\"'](/|[A-Za-z]:\\\\)(home|root|work|Users|opt|tmp)", text)
    for name in ("installers/pyinstaller/efficell_entry.py", "installers/pyinstaller/rthook_torchvision_ops.py"):
        assert (ROOT / name).is_file()
        assert all(part in text for part in Path(name).parts)


def test_installers_associate_the_project_index_file() -> None:
    iss = (ROOT / "installers" / "windows" / "efficell.iss").read_text()
    assert f'#define ProjectExt "{SUFFIX}"' in iss and "efficell-gui.exe" in iss and "{uninstallexe}" in iss
    assert f'"{SUFFIX[1:]}"' in (ROOT / "build.spec").read_text()  # macOS Info.plist document type
    mime = (ROOT / "installers" / "linux" / "efficell-mime.xml").read_text()
    assert f'pattern="*{SUFFIX}"' in mime
    desktop = configparser.ConfigParser(interpolation=None)
    desktop.optionxform = str
    desktop.read(ROOT / "installers" / "linux" / "efficell.desktop")
    entry = desktop["Desktop Entry"]
    assert entry["Type"] == "Application" and entry["Exec"].endswith("/efficell %f") and entry["Icon"] == "efficell"
    assert "application/x-efficell-project" in entry["MimeType"] and "application/x-efficell-project" in mime
    assert (ROOT / "resources" / "icons" / "efficell.svg").is_file() and (ROOT / "resources" / "icons" / "efficell.png").is_file()
