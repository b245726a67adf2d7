"""Help → Self-test: the report of ``efficell --selftest``, run in the background.

The self-test (:func:`efficell_app.selftest.selftest_report`) loads the built-in model and
segments a bundled sample, which takes seconds; it runs in a worker while the dialog shows
a busy bar and the elapsed time. Then a coloured PASS/FAIL line, the device found and the
same plain-text report the command line prints, which the user can copy or save for
whoever helps them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import (
    QApplication,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ... import tasks
from ..workers import CallWorker, start_call

log = logging.getLogger(__name__)
PASS_STYLE = "QLabel { background: #dcfce7; color: #166534; border: 1px solid #16a34a; border-radius: 4px; padding: 6px; }"
FAIL_STYLE = "QLabel { background: #fee2e2; color: #991b1b; border: 1px solid #dc2626; border-radius: 4px; padding: 6px; }"
BUSY_STYLE = "QLabel { background: #f1f5f9; color: #334155; border: 1px solid #cbd5e1; border-radius: 4px; padding: 6px; }"
Runner = Callable[[], dict[str, Any]]


class SelftestDialog(QDialog):
    """Runs the self-test when shown (and on "Run again"); shows, copies and saves its report.

    ``runner``: returns the report dict (default: :func:`selftest_report` on ``device`` with
    the bundled expectation, or ``expectation`` when given). ``threads``: torch threads of
    the worker (None: torch's default).
    """

    def __init__(self, parent: QWidget | None = None, device: str = "auto", expectation: str | Path | None = None,
                 runner: Runner | None = None, threads: int | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("EffiCell self-test")
        self.resize(860, 380)
        self.device = device
        self._expectation = expectation
        self._runner = runner
        self.threads = threads
        self._handle: CallWorker | None = None
        self._t0 = 0.0
        self.report: dict[str, Any] | None = None  # the last finished report
        self.error: str | None = None  # the last worker failure, in words

        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        font = self.status.font()
        font.setBold(True)
        font.setPointSizeF(font.pointSizeF() * 1.15)
        self.status.setFont(font)
        self.device_line = QLabel("")
        self.device_line.setWordWrap(True)
        self.device_line.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.busy = QProgressBar()
        self.busy.setRange(0, 0)  # indeterminate: the self-test reports no steps while it runs
        self.busy.setTextVisible(False)
        self.busy.setMaximumHeight(10)
        self.text = QPlainTextEdit()
        self.text.setReadOnly(True)
        self.text.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        self.text.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.text.setPlaceholderText("The report appears here when the self-test has finished.")
        self.message = QLabel("")
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self.copy_button = QPushButton("Copy to clipboard")
        self.copy_button.setToolTip("Copy the report, e.g. to paste it into an e-mail to whoever helps you")
        self.copy_button.clicked.connect(self.copy_report)
        self.save_button = QPushButton("Save report…")
        self.save_button.clicked.connect(self._save_clicked)
        self.rerun_button = QPushButton("Run again")
        self.rerun_button.clicked.connect(self.start)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        row = QHBoxLayout()
        row.addWidget(self.copy_button)
        row.addWidget(self.save_button)
        row.addWidget(self.rerun_button)
        row.addStretch(1)
        row.addWidget(buttons)
        layout = QVBoxLayout(self)
        layout.addWidget(self.status)
        layout.addWidget(self.device_line)
        layout.addWidget(self.busy)
        layout.addWidget(self.text, 1)
        layout.addWidget(self.message)
        layout.addLayout(row)
        self._clock = QTimer(self)
        self._clock.setInterval(500)
        self._clock.timeout.connect(self._tick)
        self._set_busy(False)

    # ------------------------------------------------------------------ running
    def start(self) -> None:
        """Run the self-test in the background (does nothing while one is running)."""
        if self._handle is not None:
            return
        self.report, self.error = None, None
        self.text.clear()
        self.message.setText("")
        self.device_line.setText("")
        self._t0 = time.monotonic()
        self._set_busy(True)
        self._tick()
        self._handle = start_call(self._run, threads=self.threads, on_returned=self._finished_report,
                                  on_error=self._failed, on_finished=self._done)

    def _run(self, _report: Any, _cancel: Any) -> dict[str, Any]:
        if self._runner is not None:
            return self._runner()
        from ...selftest import selftest_report

        return selftest_report(expectation=self._expectation, device=self.device)

    def is_running(self) -> bool:
        return self._handle is not None

    def _tick(self) -> None:
        self.status.setText(f"Running the self-test… {time.monotonic() - self._t0:.0f} s "
                            "(loads the built-in model and segments a sample image; up to a minute on a CPU)")

    def _finished_report(self, rep: Any) -> None:
        from ...selftest import format_report

        self.report = rep
        ok = bool(rep.get("ok"))
        self.status.setStyleSheet(PASS_STYLE if ok else FAIL_STYLE)
        self.status.setText(str(rep.get("summary") or ("PASS" if ok else "FAIL")))
        lines = rep.get("device_lines") or []
        self.device_line.setText("\n".join(_capitalised(s) for s in lines) if lines else "Device: unknown (torch did not load)")
        self.text.setPlainText(format_report(rep))

    def _failed(self, exc: BaseException) -> None:
        msg = self.error = tasks.describe_error(exc)
        self.status.setStyleSheet(FAIL_STYLE)
        self.status.setText(f"FAIL: the self-test could not run: {msg}")

    def _done(self) -> None:
        self._clock.stop()
        self._handle = None
        self._set_busy(False)

    def _set_busy(self, busy: bool) -> None:
        self.busy.setVisible(busy)
        if busy:
            self.status.setStyleSheet(BUSY_STYLE)
            self._clock.start()
        self.rerun_button.setEnabled(not busy)
        has_text = not busy and (self.report is not None or self.error is not None)
        self.copy_button.setEnabled(has_text)
        self.save_button.setEnabled(has_text)

    # ------------------------------------------------------------------ output
    def report_text(self) -> str:
        """What Copy and Save give: the report as the command line prints it (or the failure)."""
        if self.report is not None:
            return self.text.toPlainText()
        return self.status.text() if self.error is not None else ""

    def copy_report(self) -> None:
        QApplication.clipboard().setText(self.report_text())
        self.message.setText("Report copied to the clipboard.")

    def save_report(self, path: str | Path) -> bool:
        """Write the report to ``path`` (atomically); a failure is shown in the dialog."""
        from ...core.errors import EffiCellError
        from ...core.fileio import atomic_write_text

        try:
            atomic_write_text(Path(path), self.report_text() + "\n")
        except EffiCellError as exc:
            self.message.setText(f"<span style='color:#b91c1c'>Not saved: {exc}</span>")
            return False
        self.message.setText(f"Saved to {path}")
        return True

    def _save_clicked(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save the self-test report", str(Path.home() / "efficell-selftest.txt"),
                                              "Text files (*.txt);;All files (*)")
        if path:
            self.save_report(path)


def _capitalised(line: str) -> str:
    return line[:1].upper() + line[1:]
