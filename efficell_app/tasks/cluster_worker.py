"""What runs on a Dask worker: the plugin that loads the model once per worker process, the
per-image tasks, and the run's cancel flag. Imports distributed (the ``cluster`` extra).

A task never raises for a bad image: it returns the failure (a failed
``core.batch.FileEvent``, or :class:`UnitFailed` for a project image), as a local run reports it, so one bad file cannot cost the other images or
make the scheduler retry it. It raises only :class:`~efficell_app.core.errors.Cancelled`
(the client cancelled the run) and what kills the process (out of memory), which the
scheduler answers by running the image again on another worker.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distributed import WorkerPlugin

from ..core.batch import BatchOptions, FileEvent, Item, run_key, segment_item
from ..core.cancel import CancelToken
from ..core.errors import Cancelled, EffiCellError
from ..core.measure import ImageMeasurement
from .cluster import ClusterError
from .segment import ImageJob, SegmentedImage, SegmentSettings, cached_segmenter, segment_image

log = logging.getLogger(__name__)

PLUGIN_NAME = "efficell-segmenter"

# ----------------------------------------------------------------------------- the model, once per worker


class SegmenterPlugin(WorkerPlugin):
    """Loads the run's model when a worker starts (or joins later, or replaces a dead one), so
    that every task of the worker finds it in ``segment.cached_segmenter``."""

    def __init__(self, model: str | None, device: str, encoder_weights: str | None,
                 torch_threads: int | None = None, ignore_interrupt: bool = False) -> None:
        self.model = model
        self.device = device
        self.encoder_weights = encoder_weights
        self.torch_threads = torch_threads
        self.ignore_interrupt = ignore_interrupt

    def setup(self, worker: Any) -> None:
        import torch

        if self.ignore_interrupt and threading.current_thread() is threading.main_thread():
            # a local cluster's workers share the terminal: Ctrl-C is the client's to handle (it stops them cleanly)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        if self.torch_threads:
            torch.set_num_threads(self.torch_threads)
        _undo_malloc_trim()
        _quiet_cancelled_tasks()
        _segmenter(self.model, self.device, self.encoder_weights, getattr(worker, "address", "a worker"))


class _CancelledIsNoFailure(logging.Filter):
    """Drops distributed's "Compute Failed" error (with a traceback) for a task the run's cancel
    flag stopped: the user asked for it. It is logged only when the task ends before the
    scheduler has forgotten it, so a busy machine printed it and an idle one did not."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        return not (str(record.msg).startswith("Compute Failed") and any(f"{Cancelled.__name__}(" in str(a) for a in args))


def _quiet_cancelled_tasks() -> None:
    wlog = logging.getLogger("distributed.worker")
    if not any(isinstance(f, _CancelledIsNoFailure) for f in wlog.filters):
        wlog.addFilter(_CancelledIsNoFailure())


def _undo_malloc_trim() -> None:
    """Give glibc back its own heap thresholds in a worker started by a Dask nanny.

    The nanny sets ``MALLOC_TRIM_THRESHOLD_`` (to hand freed memory back to the OS), which also
    turns off glibc's adaptive mmap threshold: every tensor above 128 KiB is then mapped and
    unmapped afresh, and segmentation ran 1.7x slower (benchmarks/cluster.py, docs/cluster.md).
    These are the values glibc adapts to by itself (its largest mmap threshold, trim at twice that).
    """
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 * 2**20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 64 * 2**20)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):  # not glibc (musl): nothing to undo
        log.debug("mallopt not available")


def _segmenter(model: str | None, device: str, encoder_weights: str | None, where: str = "a worker") -> Any:
    """This process's segmenter; a model that cannot be loaded is a :class:`ClusterError` naming
    the worker (the project's own errors take two arguments and cannot travel back pickled)."""
    try:
        return cached_segmenter(model, device, encoder_weights)
    except EffiCellError as exc:
        raise ClusterError(f"the model cannot be loaded on {where}: {exc}") from None


def worker_identity(settings: SegmentSettings) -> tuple[dict[str, Any], dict[str, Any]]:
    """The identity of the model a worker loaded for ``settings`` and the device it runs on
    (``core.device.describe_device``'s record, as a local run records it)."""
    seg = _segmenter(settings.model, settings.device, settings.encoder_weights)
    info = getattr(seg, "device_info", None)
    return dict(seg.identity), dict(info) if info else {"device": str(getattr(seg, "device", settings.device))}


# ----------------------------------------------------------------------------- cancelling a run

_RUN_TOKENS: dict[str, CancelToken] = {}
_TOKENS_LOCK = threading.Lock()
_IN_FLIGHT: dict[str, set[str]] = {}  # run id -> the images a task of this process is working on now


def _token(run_id: str) -> CancelToken:
    with _TOKENS_LOCK:
        return _RUN_TOKENS.setdefault(run_id, CancelToken())


def cancel_run(run_id: str) -> None:
    """Set the run's flag in this worker process (``Client.run`` calls it on every worker): the
    image in flight stops at its next check and writes nothing; queued ones stop at once."""
    _token(run_id).cancel()


def in_flight(run_id: str) -> list[str]:
    """The images of the run this worker process is still working on (``Client.run`` asks)."""
    with _TOKENS_LOCK:
        return sorted(_IN_FLIGHT.get(run_id, ()))


class _Working:
    """Marks an image as in flight for :func:`in_flight` while a task works on it."""

    def __init__(self, run_id: str, name: str) -> None:
        self.run_id, self.name = run_id, name

    def __enter__(self) -> CancelToken:
        token = _token(self.run_id)
        token.raise_if_cancelled()
        with _TOKENS_LOCK:
            _IN_FLIGHT.setdefault(self.run_id, set()).add(self.name)
        return token

    def __exit__(self, *exc: object) -> None:
        with _TOKENS_LOCK:
            _IN_FLIGHT.get(self.run_id, set()).discard(self.name)


# ----------------------------------------------------------------------------- one image into a file


def segment_file(item: Item, target: Path, settings: SegmentSettings, options: BatchOptions, settings_key: str,
                 *, run_id: str) -> tuple[FileEvent, ImageMeasurement | None]:
    """One image of a files batch on this worker: ``core.batch.segment_item``, the very code of a
    local batch (the resume check, the mask and its record, the measurement), under the run's
    cancel flag, with this worker's model (``settings``: model, device, weights), after checking
    that the model makes the run's ``settings_key`` (``core.batch.run_key``)."""
    t0 = time.time()
    path, _scene, scene_name = item
    try:
        with _Working(run_id, str(target)) as token:
            seg = _segmenter(settings.model, settings.device, settings.encoder_weights)
            if run_key(seg.identity, options) != settings_key:
                raise ClusterError("this worker has another model or encoder than the run's (their hashes differ): "
                                   "install the same EffiCell and model files wherever workers run")
            return segment_item(item, target, seg, options, settings_key, token)
    except Cancelled:
        raise
    except EffiCellError as exc:  # as core.batch reports a file: the reason alone, the path goes beside it
        reason = getattr(exc, "reason", str(exc))
    except Exception as exc:  # noqa: BLE001 - one broken image must not end the batch
        log.exception("segmenting %s failed", path)
        reason = f"{type(exc).__name__}: {exc}"
    return FileEvent(0, 0, path, False, reason, seconds=time.time() - t0, scene=scene_name), None


# ----------------------------------------------------------------------------- one image of a project


@dataclass(frozen=True)
class UnitFailed:
    """A project image that could not be segmented: the reason alone (the client names the file)."""

    reason: str


def segment_unit(job: ImageJob, settings: SegmentSettings, run_id: str) -> SegmentedImage | UnitFailed:
    """``segment.segment_image`` under the run's cancel flag (a project's result is recorded by the client)."""
    try:
        with _Working(run_id, str(job.path)) as token:
            seg = _segmenter(settings.model, settings.device, settings.encoder_weights)
            return segment_image(job, settings, seg, cancel=token)
    except Cancelled:
        raise
    except EffiCellError as exc:  # as a local run words it (segment._segment_all)
        return UnitFailed(str(getattr(exc, "reason", "") or exc))
    except MemoryError:
        return UnitFailed("not enough memory to segment this image")
    except Exception as exc:  # noqa: BLE001 - one broken image must not end the batch
        log.exception("segmenting %s failed", job.path)
        return UnitFailed(f"{type(exc).__name__}: {exc}")
