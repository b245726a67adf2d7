"""Help → Self-test: the real self-test through the dialog, and its failures in words."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PySide6.QtWidgets import QApplication

from efficell_app.gui.dialogs.selftest_dialog import (
    FAIL_STYLE,
    PASS_STYLE,
    SelftestDialog,
)
from efficell_app.selftest import format_report

pytestmark = pytest.mark.gui


def _help_action(window, text: str):
    bar = window.menuBar()
    help_menu = next(a.menu() for a in bar.actions() if a.text().replace("&", "") == "Help")
    return next(a for a in help_menu.actions() if a.text().replace("&", "") == text)


@pytest.mark.slow
def test_selftest_from_the_help_menu_passes(qtbot, window, tmp_path: Path) -> None:
    _help_action(window, "Self-test…").trigger()
    dlg = window.selftest_dialog
    qtbot.addWidget(dlg)
    assert dlg.isVisible() and dlg.is_running() and dlg.busy.isVisible()
    assert not dlg.copy_button.isEnabled() and not dlg.rerun_button.isEnabled()
    # the window stays responsive: the GUI thread updates the elapsed time while the worker runs
    first = dlg.status.text()
    qtbot.waitUntil(lambda: dlg.status.text() != first or not dlg.is_running(), timeout=5_000)
    qtbot.waitUntil(lambda: not dlg.is_running(), timeout=240_000)
    rep = dlg.report
    assert dlg.error is None and rep is not None and rep["ok"], dlg.status.text()
    assert dlg.status.text().startswith("PASS") and dlg.status.styleSheet() == PASS_STYLE
    assert not dlg.busy.isVisible() and dlg.copy_button.isEnabled() and dlg.save_button.isEnabled()
    text = dlg.text.toPlainText()
    assert text == format_report(rep)  # the same report `efficell --selftest` prints for this run
    assert text.splitlines()[0].endswith("self-test") and text.splitlines()[-1].startswith("PASS")
    assert "[ok] agreement" in text and "torch " in text
    assert dlg.device_line.text().startswith("Device: CPU")  # the window's preference is the CPU
    assert "build: torch" in dlg.device_line.text().lower()

    dlg.copy_report()
    assert QApplication.clipboard().text() == text
    out = tmp_path / "report.txt"
    assert dlg.save_report(out)
    assert out.read_text(encoding="utf-8") == text + "\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.txt"]  # no temporary file left


def _wait(qtbot, dlg: SelftestDialog) -> None:
    qtbot.waitUntil(lambda: not dlg.is_running(), timeout=60_000)


def test_missing_expectation_is_a_fail_with_the_reason(qtbot, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "selftest_expected.json"
    dlg = SelftestDialog(device="cpu", expectation=missing)
    qtbot.addWidget(dlg)
    dlg.show()
    dlg.start()
    _wait(qtbot, dlg)
    assert dlg.report is not None and not dlg.report["ok"]
    status = dlg.status.text()
    assert status.startswith("FAIL (sample)") and str(missing) in status and "missing" in status
    assert dlg.status.styleSheet() == FAIL_STYLE
    text = dlg.text.toPlainText()
    assert text == format_report(dlg.report) and "[FAIL] sample" in text and "Traceback" not in text
    assert dlg.device_line.text().startswith("Device: CPU")


def test_damaged_expectation_is_a_fail_with_the_reason(qtbot, tmp_path: Path) -> None:
    bad = tmp_path / "selftest_expected.json"
    bad.write_text(json.dumps({"format": "efficell-selftest-expectation", "format_version": 1}), encoding="utf-8")
    dlg = SelftestDialog(device="cpu", expectation=bad)
    qtbot.addWidget(dlg)
    dlg.start()
    _wait(qtbot, dlg)
    assert dlg.status.text().startswith("FAIL") and "damaged" in dlg.status.text()


def test_worker_exception_shows_the_message_not_a_traceback(qtbot, tmp_path: Path) -> None:
    def broken() -> dict:
        raise RuntimeError("libtorch_cpu.so: cannot open shared object file")

    dlg = SelftestDialog(runner=broken)
    qtbot.addWidget(dlg)
    dlg.start()
    _wait(qtbot, dlg)
    assert dlg.report is None and dlg.error is not None
    status = dlg.status.text()
    assert status.startswith("FAIL") and "libtorch_cpu.so" in status and "Traceback" not in status
    assert dlg.status.styleSheet() == FAIL_STYLE and dlg.rerun_button.isEnabled()
    assert dlg.report_text() == status  # what Copy and Save give
    # saving where it cannot be written says so and leaves nothing
    assert not dlg.save_report(tmp_path / "no such folder" / "report.txt")
    assert "Not saved" in dlg.message.text() and "does not exist" in dlg.message.text()
    assert not (tmp_path / "no such folder").exists()


def test_run_again_replaces_the_report(qtbot) -> None:
    calls = []

    def runner() -> dict:
        calls.append(1)
        ok = len(calls) > 1
        return {"ok": ok, "summary": "PASS: EffiCell works on this computer" if ok else "FAIL (model): no model",
                "checks": [{"name": "model", "ok": ok, "detail": "x"}], "device_lines": ["device: CPU (test)"],
                "app_version": "0", "python": "3", "platform": "p", "seconds": 0.1}

    dlg = SelftestDialog(runner=runner)
    qtbot.addWidget(dlg)
    dlg.start()
    _wait(qtbot, dlg)
    assert dlg.status.text().startswith("FAIL (model)")
    dlg.rerun_button.click()
    _wait(qtbot, dlg)
    assert dlg.status.text().startswith("PASS") and dlg.status.styleSheet() == PASS_STYLE
    assert dlg.text.toPlainText() == format_report(dlg.report) and "[ok] model: x" in dlg.text.toPlainText()
