"""The "train" use case: few-shot training of an adapter, in its own process, as a generator of events.

:func:`train` runs ``core.training.train_adapter`` and yields its progress events. With
``separate_process=True`` (the window) the run happens in a *separate process*
(``multiprocessing`` "spawn" context) so that cancelling is clean (the process ends, whatever
it was doing) and every byte of GPU memory goes back to the system when it exits; the
generator relays the child's messages, so the caller sees the same events either way:

    ("progress", TrainProgress)    one per core event (losses, validation scores, ETA, phase)
    ("done", TrainProgress)        the last event, with adapter_path / metrics
    ("cancelled", "")              the run stopped on request; nothing was written
    ("error", "one line for the user")

:func:`train_project_adapter` is the project's use case: the annotated images chosen in a
:class:`TrainingRequest` in, the new adapter in the project's library out.
No Qt here: the spawned child imports this module.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue as _queue
import shutil
import tempfile
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.cancel import CancelToken
from ..core.errors import Cancelled, EffiCellError

if TYPE_CHECKING:
    from ..core.training import TrainConfig, TrainProgress
    from ..project import AdapterInfo, Project

log = logging.getLogger(__name__)
POLL_S = 0.1  # how often the parent looks at the cancel token while the child is silent
CANCEL_GRACE_S = 8.0  # after this the process is terminated if it has not stopped by itself


class TrainingFailed(EffiCellError):
    """The training run stopped with an error (the message is the child's, in words)."""


@dataclass
class TrainingJob:
    """What the child process runs: a core ``TrainConfig`` plus process settings."""

    config: Any  # efficell_app.core.training.TrainConfig (picklable)
    threads: int | None = None
    small_encoder: bool = False  # tests: the tiny random compact encoder instead of ``config.encoder``


@dataclass(frozen=True)
class TrainingStarted:
    """The run has begun; ``pid`` is its process (None when it runs in this process)."""

    pid: int | None


class _EventToken(CancelToken):
    """A CancelToken backed by a multiprocessing Event shared with the parent."""

    def __init__(self, event: Any) -> None:
        self._event = event


def _config(job: TrainingJob) -> TrainConfig:
    cfg = job.config
    if job.small_encoder:
        import torch

        from ..core.encoders import build_encoder

        torch.manual_seed(cfg.seed)
        cfg = replace(cfg, encoder=build_encoder(str(cfg.encoder), weights=None, small=True))
    return cfg


def run_in_process(job: TrainingJob, queue: Any, cancel_event: Any) -> None:
    """Child-process entry point: run ``train_adapter`` and report every event on ``queue``."""
    try:
        os.nice(5)
    except (AttributeError, OSError):
        pass
    try:
        import torch

        if job.threads:
            torch.set_num_threads(int(job.threads))
        from ..core.training import train_adapter

        last = None
        try:
            for ev in train_adapter(_config(job), _EventToken(cancel_event)):
                last = ev
                queue.put(("done" if ev.phase == "done" else "progress", ev))
        except Cancelled:
            queue.put(("cancelled", ""))
            return
        except EffiCellError as exc:
            queue.put(("error", str(exc)))
            return
        except (ValueError, MemoryError) as exc:
            queue.put(("error", str(exc) or type(exc).__name__))
            return
        if last is None or last.phase != "done":
            queue.put(("error", "training ended without saving an adapter"))
    except Exception as exc:  # noqa: BLE001 - the parent must always hear why the child stopped
        log.error("training process failed:\n%s", traceback.format_exc())
        queue.put(("error", f"unexpected error: {type(exc).__name__}: {exc}"))


def train(job: TrainingJob, *, separate_process: bool = True,
          cancel: CancelToken | None = None) -> Iterator[TrainingStarted | TrainProgress]:
    """Train an adapter; yields :class:`TrainingStarted`, then ``TrainProgress`` events, the last
    one of phase "done" (with ``adapter_path`` and ``metrics``). Raises :class:`Cancelled` when
    ``cancel`` is set (no adapter is written) and :class:`TrainingFailed` with the reason."""
    if not separate_process:
        yield TrainingStarted(None)
        if job.threads:
            import torch

            torch.set_num_threads(int(job.threads))
        from ..core.training import train_adapter

        yield from train_adapter(_config(job), cancel)
        return
    yield from _train_in_child(job, cancel or CancelToken())


def run_job_file(path: str, queue: Any, cancel_event: Any) -> None:
    """Child-process entry point: the job from the file :func:`_train_in_child` wrote (then removed), run."""
    import pickle

    try:
        with open(path, "rb") as f:
            job = pickle.load(f)  # noqa: S301 - written by this app's parent process a moment ago, mode 0600
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
    run_in_process(job, queue, cancel_event)


def _train_in_child(job: TrainingJob, cancel: CancelToken) -> Iterator[TrainingStarted | TrainProgress]:
    import multiprocessing as mp
    import pickle

    ctx = mp.get_context("spawn")
    messages = ctx.Queue()
    stop = ctx.Event()
    # The job (images and masks: megabytes) goes through a file, not the start-up pipe: a child that dies
    # while starting (a failed import, the OOM killer) would leave Process.start() blocked for ever on a
    # write nobody reads (the parent holds the pipe's read end until its write is done).
    fd, job_file = tempfile.mkstemp(prefix="efficell-training-job-", suffix=".pickle")
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump(job, f, protocol=pickle.HIGHEST_PROTOCOL)
        process = ctx.Process(target=run_job_file, args=(job_file, messages, stop), name="efficell-training",
                              daemon=True)
        process.start()
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(job_file)
        raise
    asked_at: float | None = None
    try:
        yield TrainingStarted(process.pid)
        while True:
            if cancel.cancelled and asked_at is None:
                stop.set()
                asked_at = time.monotonic()
            if asked_at is not None and time.monotonic() - asked_at > CANCEL_GRACE_S and process.is_alive():
                log.info("training process did not stop in time; terminating it")
                process.terminate()
            try:
                kind, payload = messages.get(timeout=POLL_S)
            except _queue.Empty:
                if process.is_alive():
                    continue
                try:  # a last message may still be in the pipe
                    kind, payload = messages.get(timeout=0.5)
                except (_queue.Empty, EOFError, OSError):
                    if asked_at is not None:
                        raise Cancelled("cancelled by the user") from None
                    raise TrainingFailed(f"the training process stopped unexpectedly (exit code {process.exitcode})") from None
            if kind == "progress":
                yield payload
                continue
            if kind == "done":
                yield payload
                return
            if kind == "cancelled":
                raise Cancelled("cancelled by the user")
            raise TrainingFailed(str(payload))
    finally:
        _wait_gone(process)
        with contextlib.suppress(OSError):  # a child that died before it read its job
            os.unlink(job_file)
        messages.close()
        messages.join_thread()


def _wait_gone(process: Any, timeout: float = 15.0) -> None:
    """Make sure the child process has exited (terminate it after ``timeout`` seconds)."""
    process.join(timeout)
    if process.is_alive():
        process.terminate()
        process.join(5.0)
    if process.is_alive():
        process.kill()
        process.join(5.0)


# ----------------------------------------------------------------------------- a project's adapter


@dataclass(frozen=True)
class TrainingRequest:
    """What the user chose in the training dialog."""

    image_ids: tuple[int, ...]  # annotated images to train on
    name: str
    validation_image: int | None = None  # None: hold out a band of each training image
    encoder: str = "efficell_compact"
    init_adapter: str | None = "auto"  # "auto": built-in generalist when it fits; None: fresh; else a file
    minutes: float = 10.0
    device: str = "auto"
    encoder_weights: str | None = "auto"
    threads: int | None = None
    small_encoder: bool = False  # tests only
    keep: str = "auto"  # "auto": trained weights only on evidence they beat the start; "trained": in any case
    overrides: dict[str, Any] = field(default_factory=dict)  # further TrainConfig fields (tests)


@dataclass(frozen=True)
class AdapterAdded:
    """The run finished and its adapter is in the project's library."""

    adapter: AdapterInfo
    final: TrainProgress  # the "done" event: steps, metrics, seconds


def check_request(project: Project, request: TrainingRequest) -> list[int]:
    """The training images of ``request`` (ValueError with the reason when it cannot run)."""
    train_ids = [i for i in request.image_ids if i != request.validation_image]
    if not train_ids:
        raise ValueError("choose at least one training image (other than the validation image)")
    if any(a.name == request.name for a in project.list_adapters()):
        raise ValueError(f"an adapter named '{request.name}' already exists in the project; choose another name")
    return train_ids


def training_config(project: Project, request: TrainingRequest, out_dir: Path) -> TrainConfig:
    """The core's ``TrainConfig`` for a request: the images and their annotations read from the project."""
    from ..core.training import TrainConfig

    train_ids = check_request(project, request)

    def pairs(ids: Sequence[int]) -> list[tuple[Any, Any]]:
        return [(project.read_image(i), project.load_annotation(i)) for i in ids]

    val = None if request.validation_image is None else pairs([request.validation_image])
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in request.name)[:60] or "adapter"
    kw: dict[str, Any] = {"train": pairs(train_ids), "val": val, "out": out_dir / f"{safe}.safetensors",
                          "encoder": request.encoder or "efficell_compact", "encoder_weights": request.encoder_weights,
                          "init_adapter": request.init_adapter, "minutes": float(request.minutes),
                          "device": request.device, "name": request.name, "keep": request.keep}
    kw.update(request.overrides)
    return TrainConfig(**kw)


def train_project_adapter(project: Project, request: TrainingRequest, *,
                          cancel: CancelToken | None = None) -> Iterator[TrainingStarted | TrainProgress | AdapterAdded]:
    """Train on the project's annotated images in a separate process and add the adapter to the
    project's library; the last event is :class:`AdapterAdded`. Nothing is added when cancelled."""
    train_ids = check_request(project, request)
    tmp = Path(tempfile.mkdtemp(prefix="efficell-train-"))
    try:
        job = TrainingJob(training_config(project, request, tmp), threads=request.threads,
                          small_encoder=request.small_encoder)
        final = None
        for ev in train(job, separate_process=True, cancel=cancel):
            yield ev
            if not isinstance(ev, TrainingStarted) and ev.phase == "done":
                final = ev
        if final is None:
            raise TrainingFailed("training ended without saving an adapter")
        names = [project.get_image(i).name for i in train_ids]
        try:
            info = project.add_adapter(final.adapter_path, name=request.name or None, training_images=names,
                                       metrics=final.metrics)
        except (EffiCellError, OSError) as exc:
            raise TrainingFailed(f"the adapter was trained but could not be added to the project: {exc}") from exc
        yield AdapterAdded(info, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
