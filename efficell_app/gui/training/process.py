"""Run a training job in a child process and relay its messages as Qt signals."""

from __future__ import annotations

import logging
import multiprocessing as mp
import queue as _queue
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal

from .runner import TrainingJob, run_in_process

log = logging.getLogger(__name__)
POLL_MS = 100
CANCEL_GRACE_MS = 8000  # after this the process is terminated if it has not stopped by itself


class TrainingProcess(QObject):
    """One training run in a ``spawn``-ed process. Ends with exactly one of
    ``finished(TrainProgress)``, ``cancelled()`` or ``failed(str)``; the process is gone by then."""

    progress = Signal(object)  # TrainProgress
    finished = Signal(object)  # the "done" TrainProgress
    cancelled = Signal()
    failed = Signal(str)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.process: Any = None
        self._queue: Any = None
        self._cancel: Any = None
        self._ended = False
        self._cancel_requested = False
        self._timer = QTimer(self)
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self._poll)

    def start(self, job: TrainingJob) -> None:
        if self.is_running():
            raise RuntimeError("a training run is already going")
        ctx = mp.get_context("spawn")
        self._queue = ctx.Queue()
        self._cancel = ctx.Event()
        self._ended = False
        self._cancel_requested = False
        self.process = ctx.Process(target=run_in_process, args=(job, self._queue, self._cancel),
                                   name="efficell-training", daemon=True)
        self.process.start()
        self._timer.start()

    def is_running(self) -> bool:
        return self.process is not None and not self._ended

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def cancel(self) -> None:
        """Ask the run to stop at its next step; terminate the process if it does not."""
        if not self.is_running():
            return
        self._cancel_requested = True
        self._cancel.set()
        QTimer.singleShot(CANCEL_GRACE_MS, self._force_stop)

    def _force_stop(self) -> None:
        if self.process is not None and self.process.is_alive() and self._cancel_requested:
            log.info("training process did not stop in time; terminating it")
            self.process.terminate()

    def _poll(self) -> None:
        while True:
            try:
                kind, payload = self._queue.get_nowait()
            except _queue.Empty:
                break
            except (EOFError, OSError):
                break
            if kind == "progress":
                self.progress.emit(payload)
            else:
                self._end(kind, payload)
                return
        if self.process is not None and not self.process.is_alive():
            try:  # a last message may still be in the pipe
                kind, payload = self._queue.get(timeout=0.5)
                if kind == "progress":
                    self.progress.emit(payload)
                    kind, payload = "error", "training stopped before the end"
            except (_queue.Empty, EOFError, OSError):
                code = self.process.exitcode
                kind, payload = ("cancelled", "") if self._cancel_requested else (
                    "error", f"the training process stopped unexpectedly (exit code {code})")
            self._end(kind, payload)

    def _end(self, kind: str, payload: Any) -> None:
        self._timer.stop()
        self._ended = True
        self.wait_gone()
        if kind == "done":
            self.finished.emit(payload)
        elif kind == "cancelled":
            self.cancelled.emit()
        else:
            self.failed.emit(str(payload))

    def wait_gone(self, timeout: float = 15.0) -> None:
        """Make sure the child process has exited (terminate it after ``timeout`` seconds)."""
        p = self.process
        if p is None:
            return
        p.join(timeout)
        if p.is_alive():
            p.terminate()
            p.join(5.0)
        if p.is_alive():
            p.kill()
            p.join(5.0)
        if self._queue is not None:
            self._queue.close()
            self._queue.join_thread()

    def stop_and_wait(self) -> None:
        """Cancel and wait until the process is gone (dialog closing)."""
        if self.is_running():
            self._cancel_requested = True
            self._cancel.set()
            self.process.join(CANCEL_GRACE_MS / 1000)
            self._end("cancelled", "")
