"""Run the core's generators in a background thread and report to the window with signals.

A *job* is a callable ``job(cancel: CancelToken) -> Iterator[event]``. The worker runs it
in a ``QThread``, emits each yielded event (queued to the GUI thread), stops at the next
``yield`` once cancelled, and always ends with exactly one of ``finished``, ``cancelled``
or ``failed``. Widgets never call a model from a slot (ARCHITECTURE rule 2).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QObject, QThread, Signal, Slot

from ..core.cancel import CancelToken
from ..core.errors import Cancelled, EffiCellError

log = logging.getLogger(__name__)

Job = Callable[[CancelToken], Iterator[Any]]
_RUNNING: set[WorkerHandle] = set()  # handles whose thread has not finished yet


class GeneratorWorker(QObject):
    """Runs one job; lives in its own thread (see :func:`start_worker`)."""

    yielded = Signal(object)
    finished = Signal()
    cancelled = Signal()
    failed = Signal(str)
    done = Signal()  # after any of the three above

    def __init__(self, job: Job, threads: int | None = None) -> None:
        super().__init__()
        self._job = job
        self._threads = threads
        self.token = CancelToken()

    def cancel(self) -> None:
        """Ask the job to stop at its next check (thread-safe)."""
        self.token.cancel()

    @Slot()
    def run(self) -> None:
        _lower_thread_priority()
        if self._threads:
            _set_torch_threads(self._threads)
        try:
            for event in self._job(self.token):
                self.yielded.emit(event)
                if self.token.cancelled:
                    break
            if self.token.cancelled:
                self.cancelled.emit()
            else:
                self.finished.emit()
        except Cancelled:
            self.cancelled.emit()
        except EffiCellError as exc:
            self.failed.emit(str(exc))
        except MemoryError:
            self.failed.emit("out of memory: try a smaller image, fewer images at once, or the CPU device")
        except Exception as exc:  # noqa: BLE001 - every worker error reaches the user in words
            log.error("background job failed:\n%s", traceback.format_exc())
            self.failed.emit(f"unexpected error: {type(exc).__name__}: {exc}")
        finally:
            # End the thread's event loop as soon as run() returns, so wait() never blocks long.
            thread = QThread.currentThread()
            if thread is not None:
                thread.quit()
            self.done.emit()


def _lower_thread_priority(nice: int = 10) -> None:
    """Background work yields the CPU to the window's thread (Linux: nice of this thread only).

    On Windows ``QThread.LowPriority`` (see :func:`launch`) does the same.
    """
    import os
    import sys

    if sys.platform.startswith("linux") and hasattr(os, "setpriority"):
        import threading

        try:
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
        except OSError as exc:
            log.debug("cannot lower the worker's priority: %s", exc)


def _set_torch_threads(n: int) -> None:
    # A plain import, never sys.modules: while another thread is importing torch, sys.modules holds a
    # half-initialised module; ``import`` waits for that import to finish.
    import torch

    try:
        torch.set_num_threads(int(n))
    except RuntimeError as exc:  # already running parallel work
        log.debug("cannot change torch threads: %s", exc)


class WorkerHandle(QObject):
    """The GUI-thread side of a worker: owns it and its thread, and re-emits its signals.

    Connect to the handle's signals, not the worker's: they are delivered in the GUI thread
    (the handle lives there), so any slot, lambdas included, may touch widgets.
    """

    yielded = Signal(object)
    finished = Signal()
    cancelled = Signal()
    failed = Signal(str)
    done = Signal()

    def __init__(self, worker: GeneratorWorker, thread: QThread, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.worker = worker
        self.thread = thread
        self.started_at = time.monotonic()
        self.outcome: str | None = None  # "finished" | "cancelled" | "failed"
        worker.yielded.connect(self._on_yielded)
        worker.finished.connect(self._on_finished)
        worker.cancelled.connect(self._on_cancelled)
        worker.failed.connect(self._on_failed)
        worker.done.connect(self._on_done)

    @Slot(object)
    def _on_yielded(self, ev: object) -> None:
        self.yielded.emit(ev)

    @Slot()
    def _on_finished(self) -> None:
        self.outcome = "finished"
        self.finished.emit()

    @Slot()
    def _on_cancelled(self) -> None:
        self.outcome = "cancelled"
        self.cancelled.emit()

    @Slot(str)
    def _on_failed(self, msg: str) -> None:
        self.outcome = "failed"
        self.failed.emit(msg)

    @Slot()
    def _on_done(self) -> None:
        self.thread.quit()
        self.thread.wait(5000)
        _RUNNING.discard(self)
        self.done.emit()

    def cancel(self) -> None:
        self.worker.cancel()

    def is_running(self) -> bool:
        return self.thread.isRunning()

    def wait(self, ms: int = 30_000) -> bool:
        return self.thread.wait(ms)


def start_worker(job: Job, parent: QObject | None = None, threads: int | None = None,
                 on_event: Callable[[Any], None] | None = None) -> WorkerHandle:
    """Start ``job`` in a new thread; connect signals *before* events can arrive via ``on_event``."""
    thread = QThread()
    worker = GeneratorWorker(job, threads=threads)
    worker.moveToThread(thread)
    handle = WorkerHandle(worker, thread, parent)
    if on_event is not None:
        handle.yielded.connect(on_event)
    thread.started.connect(worker.run)
    worker.done.connect(thread.quit)
    thread.finished.connect(worker.deleteLater)
    return handle


def launch(handle: WorkerHandle) -> None:
    """Start a handle returned by :func:`start_worker` once all its signals are connected."""
    handle.started_at = time.monotonic()
    _RUNNING.add(handle)  # a running thread must outlive whoever dropped the handle
    handle.thread.start(QThread.Priority.LowPriority)


def stop_all(timeout_ms: int = 30_000) -> None:
    """Cancel every running worker and wait for its thread to end.

    Qt aborts the process when a ``QThread`` object is destroyed while its thread still runs, so
    the window calls this before it goes away (e.g. when closed during a background import).
    """
    handles = list(_RUNNING)
    for h in handles:
        h.cancel()
    deadline = time.monotonic() + timeout_ms / 1000
    for h in handles:
        h.thread.quit()
        h.thread.wait(max(0, int((deadline - time.monotonic()) * 1000)))


@dataclass(frozen=True)
class JobResult:
    """Last event of a :func:`callback_job`: the function's return value."""

    value: Any


def callback_job(fn: Callable[[Callable[[Any], None], CancelToken], Any]) -> Job:
    """Adapt ``fn(report, cancel)`` (a core function taking a progress callback) into a job.

    ``fn`` runs in a helper thread; whatever it passes to ``report`` is yielded in order,
    then a :class:`JobResult` with its return value. Its exceptions propagate.
    """

    def job(cancel: CancelToken) -> Iterator[Any]:
        q: queue.Queue[Any] = queue.Queue()
        end = object()
        out: dict[str, Any] = {}

        def target() -> None:
            try:
                out["value"] = fn(q.put, cancel)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the worker below
                out["error"] = exc
            finally:
                q.put(end)

        t = threading.Thread(target=target, name="efficell-job", daemon=True)
        t.start()
        while (item := q.get()) is not end:
            yield item
        t.join()
        if "error" in out:
            raise out["error"]
        yield JobResult(out.get("value"))

    return job


class EtaTracker:
    """Remaining-time estimate from units done so far (simple rate since the start)."""

    def __init__(self, total: int) -> None:
        self.total = max(int(total), 0)
        self.done = 0
        self.t0 = time.monotonic()

    def update(self, done: int) -> None:
        self.done = done

    def eta_seconds(self) -> float | None:
        if self.done <= 0 or self.total <= self.done:
            return None
        rate = (time.monotonic() - self.t0) / self.done
        return rate * (self.total - self.done)

    def text(self) -> str:
        eta = self.eta_seconds()
        if eta is None:
            return ""
        if eta < 60:
            return f"about {max(1, round(eta))} s left"
        return f"about {eta / 60:.0f} min left"
