"""Packaging files: relative paths only, the project file type they associate, the GUI entry's arguments."""

from __future__ import annotations

import configparser
import importlib.util
import re
from pathlib import Path

from efficell_app.project.store import DB_NAME

ROOT = Path(__file__).resolve().parents[1]
SUFFIX = Path(DB_NAME).suffix  # ".efficell": the project index file that double-clicks open


def _load_entry():  # noqa: ANN202
    spec = importlib.util.spec_from_file_location("efficell_gui_entry", ROOT / "installers" / "pyinstaller" / "efficell_gui.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gui_entry_opens_project_folder_from_index_file(tmp_path: Path) -> None:
    entry = _load_entry()
    assert entry.PROJECT_INDEX_SUFFIX == SUFFIX
    (tmp_path / DB_NAME).write_bytes(b"")
    assert entry.project_args([str(tmp_path / DB_NAME), str(tmp_path), "--x"]) == [str(tmp_path), str(tmp_path), "--x"]
    assert entry.project_args([str(tmp_path / "missing.efficell")]) == [str(tmp_path / "missing.efficell")]


def test_spec_uses_relative_paths_only() -> None:
    text = (ROOT / "build.spec").read_text()
    compile(text, "build.spec", "exec")
    assert not re.search(r"[\"'](/|[A-Za-z]:\\\\)(home|root|work|Users|opt|tmp)", text)
    for name in ("efficell_app/__main__.py", "installers/pyinstaller/efficell_gui.py", "installers/pyinstaller/rthook_torchvision_ops.py"):
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
    assert entry["Type"] == "Application" and entry["Exec"].endswith("efficell-gui %f") and entry["Icon"] == "efficell"
    assert "application/x-efficell-project" in entry["MimeType"] and "application/x-efficell-project" in mime
    assert (ROOT / "resources" / "icons" / "efficell.svg").is_file() and (ROOT / "resources" / "icons" / "efficell.png").is_file()
