"""The window's one worker mechanism: superqt's thread workers running the tasks layer.

:func:`start_task` runs a use case of :mod:`efficell_app.tasks` (a generator function taking
``cancel=``) in a :class:`TaskWorker`, superqt's ``GeneratorWorker`` in Qt's thread pool. Its
signals (superqt's) reach the window's thread, so any slot, lambdas included, may touch widgets:

    yielded(event)      each event the generator yields
    returned(value)     it ended normally (its return value)
    errored(exception)  it raised: the exception object; ``tasks.describe_error`` words it
    aborted()           it stopped because it was cancelled (``worker.cancel()``: the token)
    finished()          after any of the three above

:func:`start_call` does the same for a core function that reports through a callback,
``fn(report, cancel)`` (weights download, the sample project): a superqt ``FunctionWorker``
whose reports arrive as ``progressed(value)``. Training runs in its own process, driven by the
generator ``tasks.train_project_adapter`` in a :class:`TaskWorker` like everything else.
Widgets never call a model from a slot (ARCHITECTURE rule 2).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QThreadPool, Signal
from superqt.utils import FunctionWorker, GeneratorWorker, WorkerBase

from ..core.cancel import CancelToken
from ..core.errors import Cancelled, EffiCellError

log = logging.getLogger(__name__)
MIN_POOL_THREADS = 16  # a run, thumbnails, measuring, autosave and a dialog's work must not queue behind each other
Slot = Callable[..., Any]


class _TaskState:
    """What both worker kinds add to superqt's: the cancel token, the outcome, waiting for the end."""

    token: CancelToken
    outcome: str | None  # "finished" | "cancelled" | "failed" (set in the worker thread as it ends)
    threads: int | None

    def _init_state(self, threads: int | None) -> CancelToken:
        self.token = CancelToken()
        self.outcome = None
        self.threads = threads
        self._launched = False
        self._ended = threading.Event()
        return self.token

    def cancel(self) -> None:
        """Ask the work to stop at its next check of the token (thread-safe)."""
        self.token.cancel()

    def quit(self) -> None:  # superqt's abort request (``WorkerBase.await_workers``) is a cancel
        self.cancel()

    @property
    def active(self) -> bool:
        """Started and not yet ended."""
        return self._launched and not self._ended.is_set()

    def wait(self, ms: int = 30_000) -> bool:
        """Block until the work has ended (its signals may still be on their way); False on timeout."""
        return not self._launched or self._ended.wait(ms / 1000)

    def start(self) -> None:
        """Start in Qt's thread pool now (superqt defers the start by a timer when an event loop
        runs; a caller that waits for the work, such as a save before switching image, must not)."""
        if self in WorkerBase._worker_set:
            raise RuntimeError("This worker is already started!")
        self._launched = True
        WorkerBase._worker_set.add(self)  # superqt's set: ``await_workers`` cancels and waits for it
        self._finished.connect(WorkerBase._set_discard)
        QThreadPool.globalInstance().start(self)

    def run(self) -> None:
        """Qt's pool calls this in a worker thread: superqt's ``WorkerBase.run`` minus its redirection
        of ``warnings.showwarning``, a process-wide setting that concurrent workers would leave
        pointing at one of them (warnings go to the log as everywhere else)."""
        self.started.emit()
        self._running = True
        try:
            result = self.work()
            if not self.abort_requested:
                self.returned.emit(result)
        except Exception as exc:  # noqa: BLE001 - the exception object goes to ``errored``
            self.errored.emit(exc)
        finally:
            self._running = False
            self._ended.set()
            self.finished.emit()
            self._finished.emit(self)

    def _prepare_thread(self) -> None:
        _lower_thread_priority()
        if self.threads:
            _set_torch_threads(self.threads)

    def _ended_with(self, how: str) -> None:
        self.outcome = how


class TaskWorker(_TaskState, GeneratorWorker):
    """superqt's ``GeneratorWorker`` for one use case of the tasks layer (see the module docstring).

    ``task(*args, cancel=token, **kwargs)`` must be a generator function. Cancelling sets the
    token: the task raises ``Cancelled`` at its next check (or the worker stops after the
    event it was yielding), its generator is closed in the worker thread, and ``aborted`` follows.
    """

    def __init__(self, task: Callable[..., Any], *args: Any, threads: int | None = None, **kwargs: Any) -> None:
        token = self._init_state(threads)
        super().__init__(task, *args, cancel=token, **kwargs)

    def work(self) -> Any:
        self._prepare_thread()
        gen = self._gen
        try:
            while True:
                try:
                    event = next(gen)
                except StopIteration as stop:
                    self._ended_with("finished")
                    return stop.value
                self.yielded.emit(event)
                if self.token.cancelled:
                    gen.close()
                    raise Cancelled("cancelled by the user")
        except Cancelled:
            return self._aborted()
        except Exception as exc:
            self._failed(exc)
            raise

    def _aborted(self) -> None:
        self._ended_with("cancelled")
        self._abort_requested = True  # superqt then emits no ``returned``
        self.aborted.emit()

    def _failed(self, exc: BaseException) -> None:
        self._ended_with("failed")
        if not isinstance(exc, EffiCellError):
            log.error("background task failed", exc_info=exc)


class _Progress(QObject):
    """Carries a callback's reports from the worker thread to the window's (it lives in the latter)."""

    progressed = Signal(object)


class CallWorker(_TaskState, FunctionWorker):
    """superqt's ``FunctionWorker`` for a core function ``fn(report, cancel)`` that reports through a callback."""

    def __init__(self, fn: Callable[[Callable[[Any], None], CancelToken], Any], threads: int | None = None) -> None:
        token = self._init_state(threads)
        self._progress = _Progress()
        super().__init__(fn, self._progress.progressed.emit, token)

    @property
    def progressed(self) -> Any:
        return self._progress.progressed

    def work(self) -> Any:
        self._prepare_thread()
        try:
            value = super().work()
        except Cancelled:
            self._ended_with("cancelled")
            self._abort_requested = True  # no ``returned``; ``finished`` follows and ``outcome`` says why
            return None
        except Exception as exc:
            self._ended_with("failed")
            if not isinstance(exc, EffiCellError):
                log.error("background call failed", exc_info=exc)
            raise
        self._ended_with("finished")
        return value


def _connect(worker: WorkerBase, on_event: Slot | None, on_returned: Slot | None, on_error: Slot | None,
             on_aborted: Slot | None, on_finished: Slot | None) -> None:
    for signal, slot in (("yielded", on_event), ("returned", on_returned), ("errored", on_error),
                         ("aborted", on_aborted), ("finished", on_finished)):
        if slot is not None:
            getattr(worker, signal).connect(slot)


def _pool_ready() -> None:
    pool = QThreadPool.globalInstance()
    if pool.maxThreadCount() < MIN_POOL_THREADS:
        pool.setMaxThreadCount(MIN_POOL_THREADS)


def start_task(task: Callable[..., Any], *args: Any, on_event: Slot | None = None, on_returned: Slot | None = None,
               on_error: Slot | None = None, on_aborted: Slot | None = None, on_finished: Slot | None = None,
               threads: int | None = None, **kwargs: Any) -> TaskWorker:
    """Run ``task(*args, cancel=token, **kwargs)`` in a worker; the slots are connected before it starts.

    ``threads``: torch threads for the work (None: torch's default).
    """
    worker = TaskWorker(task, *args, threads=threads, **kwargs)
    _connect(worker, on_event, on_returned, on_error, on_aborted, on_finished)
    _pool_ready()
    worker.start()
    return worker


def start_call(fn: Callable[[Callable[[Any], None], CancelToken], Any], *, on_progress: Slot | None = None,
               on_returned: Slot | None = None, on_error: Slot | None = None, on_finished: Slot | None = None,
               threads: int | None = None) -> CallWorker:
    """Run ``fn(report, cancel)`` in a worker; each ``report(value)`` arrives as ``progressed(value)``."""
    worker = CallWorker(fn, threads=threads)
    if on_progress is not None:
        worker.progressed.connect(on_progress)
    _connect(worker, None, on_returned, on_error, None, on_finished)
    _pool_ready()
    worker.start()
    return worker


def stop_all(timeout_ms: int = 30_000) -> None:
    """Cancel every running worker and wait for them (the window closing, the application quitting)."""
    try:
        WorkerBase.await_workers(timeout_ms)
    except RuntimeError as exc:  # a task that never checks its token; Qt's pool still ends it at exit
        log.warning("background work did not stop in time: %s", exc)


def _lower_thread_priority(nice: int = 10) -> None:
    """Background work yields the CPU to the window's thread (Linux: nice of this pool thread only)."""
    import os
    import sys

    if sys.platform.startswith("linux") and hasattr(os, "setpriority"):
        try:
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, max(nice, os.getpriority(os.PRIO_PROCESS, tid)))
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
