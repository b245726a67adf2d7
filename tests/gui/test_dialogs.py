"""Export, models and settings dialogs driven programmatically on real widgets."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from gui_helpers import drop, measured_cells, wait_run_done
from PySide6.QtCore import Qt

pytestmark = pytest.mark.gui


def test_export_xlsx_through_the_dialog(qtbot, window, image_folder: Path, tmp_path: Path) -> None:
    import openpyxl

    drop(window, image_folder)
    qtbot.waitUntil(lambda: window.session.project is not None, timeout=10_000)
    wait_run_done(qtbot, window)
    dlg = window.open_export_dialog()
    qtbot.addWidget(dlg)
    dest = tmp_path / "out"
    dlg.scope.setCurrentIndex(dlg.scope.findData("set"))
    dlg.set_formats(("xlsx", "tiff"))
    dlg.destination.setText(str(dest))
    dlg.pixel_size.setValue(0.5)
    qtbot.mouseClick(dlg.export_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not dlg.is_running(), timeout=30_000)
    assert dlg.errors == []
    assert dlg.open_button.isVisible()
    xlsx = [p for p in dlg.written if p.suffix == ".xlsx"]
    assert len(xlsx) == 1 and xlsx[0].parent == dest
    assert len([p for p in dlg.written if p.suffix == ".tif"]) == 2
    wb = openpyxl.load_workbook(xlsx[0], read_only=True)
    assert {"Cells", "Images"} <= set(wb.sheetnames)
    header = [c.value for c in next(wb["Cells"].iter_rows(max_row=1))]
    assert "area_um2" in header and "cell_id" in header
    n_rows = sum(1 for _ in wb["Cells"].iter_rows(min_row=2))
    project = window.session.project
    expected = sum(measured_cells(project.labels_for(r.id).labels) for r in project.list_images())
    assert n_rows == expected
    assert not list(dest.glob("*.part"))

    # exporting again into the same folder asks first: declined, the earlier files stay as they are
    xlsx[0].write_bytes(b"the table, with the lab's notes added")
    asked: list[list[Path]] = []
    dlg.confirm_replace = lambda paths: asked.append(paths) or False
    qtbot.mouseClick(dlg.export_button, Qt.MouseButton.LeftButton)
    assert not dlg.is_running() and len(asked) == 1 and len(asked[0]) == 3
    assert "Nothing was exported" in dlg.status.text()
    assert xlsx[0].read_bytes() == b"the table, with the lab's notes added"
    dlg.confirm_replace = lambda paths: True  # accepted: replaced
    qtbot.mouseClick(dlg.export_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not dlg.is_running(), timeout=30_000)
    assert dlg.errors == [] and openpyxl.load_workbook(xlsx[0], read_only=True).sheetnames


def test_export_without_labels_reports_and_writes_nothing(qtbot, window, image_folder: Path, tmp_path: Path) -> None:
    window.seg_panel.auto_segment.setChecked(False)
    drop(window, image_folder)
    qtbot.waitUntil(lambda: window.session.project is not None and len(window.session.project.list_images()) == 2,
                    timeout=10_000)
    wait_run_done(qtbot, window)
    dlg = window.open_export_dialog()
    qtbot.addWidget(dlg)
    dlg.destination.setText(str(tmp_path / "none"))
    dlg.start()
    qtbot.waitUntil(lambda: not dlg.is_running(), timeout=30_000)
    assert any("not segmented yet" in e for e in dlg.errors)
    assert dlg.written == []
    assert not dlg.open_button.isVisible()


@pytest.fixture()
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_a, **_k):
        raise OSError("network is unreachable (test)")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_models_dialog_with_no_network(qtbot, window, no_network, tmp_path: Path) -> None:
    dlg = window.open_models_dialog()
    qtbot.addWidget(dlg)
    names = [dlg.table.item(r, 0).text() for r in range(dlg.table.rowCount())]
    assert "efficell_compact" in names and len(names) >= 2
    assert dlg.status_of("efficell_compact").startswith("ready")
    other = next(s for s in dlg._specs if not s.builtin)
    dlg.select(other.name)
    assert dlg.status_of(other.name) == "not downloaded"
    assert dlg.download_button.isEnabled()
    dlg.download_selected()
    assert dlg.is_busy() and dlg.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: not dlg.is_busy(), timeout=20_000)
    text = dlg.message.text()
    assert other.weights.url.split("/")[2] in text or "network" in text.lower() or "download" in text.lower()
    assert "efficell models import" not in text  # the window's own way: its Import file… button
    assert dlg.status_of(other.name) == "not downloaded"
    # importing a file that is not a checkpoint is refused with a reason
    bad = tmp_path / "not_weights.pth"
    bad.write_bytes(b"definitely not a checkpoint")
    dlg.import_file(bad)
    qtbot.waitUntil(lambda: not dlg.is_busy(), timeout=20_000)
    assert "not_weights.pth" in dlg.message.text()
    assert dlg.status_of(other.name) == "not downloaded"


def test_settings_dialog_round_trip(qtbot, window) -> None:
    from efficell_app.gui.settings import Preferences

    dlg = window.open_settings_dialog()
    qtbot.addWidget(dlg)
    dlg.device.setCurrentIndex(dlg.device.findData("cpu"))
    dlg.threads.setValue(1)
    dlg.pixel_size.setValue(0.325)
    dlg.auto_segment.setChecked(False)
    dlg.accept()
    assert window.prefs.pixel_size_um == pytest.approx(0.325)
    assert not window.seg_panel.auto_segment.isChecked()
    loaded = Preferences.load()
    assert loaded.pixel_size_um == pytest.approx(0.325) and loaded.threads == 1 and loaded.device == "cpu"
