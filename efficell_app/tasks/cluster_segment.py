"""Segmentation on a Dask cluster: the same runs as on this computer, one task per image.

* :func:`segment_files_on_cluster` is ``efficell segment IMAGES --out DIR --cluster SPEC``:
  workers run ``core.batch.segment_item`` on each image (each scene of a multi-scene file),
  reading it from the path all of them share and writing its mask there atomically
  (``core.batch.resume_decision`` decides what an earlier run, local or not, left complete);
  the client assembles the measurement table and the run record in input order with
  ``core.batch``'s own functions, and yields the same :class:`~efficell_app.core.batch.FileEvent`
  per image.
* :func:`segment_images_on_cluster` is the window's "segment + measure" use case (and
  ``efficell segment --project DIR --cluster SPEC``): workers segment and measure, the client
  records each result in the project and yields the events of ``segment.segment_images``.

Events come in the order images finish (``index`` counts them). The model is loaded once per
worker process (``cluster_worker.SegmenterPlugin``). A worker that dies mid-image is replaced
(by its nanny or the job queue) and the scheduler gives the image to another worker; a task
that returned is never run twice for the client, and a mask is only ever written whole, so
no image is missing, none is written twice, and no half file is left. Cancelling (the token,
Ctrl-C, closing the generator) cancels every future, stops the images in flight at their next
check and removes what they were writing.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.batch import (
    RUN_FILE,
    TABLE_FILE,
    BatchOptions,
    FileEvent,
    expand_scenes,
    file_record,
    output_folder,
    output_names,
    run_key,
    run_settings,
    write_run_files,
)
from ..core.cancel import CancelToken
from ..core.errors import Cancelled, OutputError
from ..core.fileio import remove_stale_parts
from ..core.measure import ImageMeasurement
from .cluster import ClusterError, ClusterSpec, Connection, connect
from .events import ImageFailed, Status
from .segment import (
    ImageJob,
    ImageSegmented,
    ImageStarted,
    RunStarted,
    SegmentSettings,
    images_to_segment,
    record_result,
    segmented_event,
)

if TYPE_CHECKING:
    from distributed import Client, Future

    from ..project import Project

log = logging.getLogger(__name__)

POLL_S = 0.05  # how often a waiting client looks at the cancel token
STOP_WAIT_S = 20.0  # how long a cancelled run waits for the images in flight to stop


# ----------------------------------------------------------------------------- a files batch


def segment_files_on_cluster(paths: list[Path], out_dir: Path, cluster: Connection | Client,
                             options: BatchOptions | None = None, *, model: str | None = None, device: str = "auto",
                             encoder_weights: str | None = "auto",
                             cancel: CancelToken | None = None,
                             ) -> Generator[FileEvent, None, tuple[Path | None, Path] | None]:
    """Segment every path (every scene of a multi-scene file) on ``cluster`` (``cluster.connect``'s
    connection, or a client) into ``out_dir``; one event per image as it finishes.

    The images, mask names, masks, resume rule, table and run record are those of
    ``core.batch.segment_files`` (its pieces run here and on the workers); the run record adds
    the cluster it ran on. At the end writes ``measurements.xlsx`` (unless ``options.measure``
    is False) and ``efficell_run.json``, in input order, also after a cancel through ``cancel``
    (for the images done), numbered where those hold another run, and returns their paths (``None``
    when cancelled before the first image was done); closing the generator stops the run and
    writes neither.
    """
    from .cluster_worker import segment_file

    opts = options or BatchOptions()
    out_dir = output_folder(Path(out_dir))
    started = time.time()
    items = expand_scenes(list(paths))
    names = output_names(items)
    run_files = [*names.values(), TABLE_FILE, RUN_FILE]
    remove_stale_parts(out_dir, run_files, older_than=started)  # what a killed run was writing
    settings = SegmentSettings(model, opts.diameter, opts.channels, device, encoder_weights, measure=None)
    conn = Connection.of(cluster)
    client = conn.client
    identity, device_info = prepare_workers(conn, settings, cancel)
    key = run_key(identity, opts)
    run_id = uuid.uuid4().hex[:12]
    targets = [out_dir / names[item] for item in items]
    futures = _map(client, segment_file, run_id, items, targets, settings=settings, options=opts,
                   settings_key=key, run_id=run_id)
    total = len(items)
    records: dict[int, dict[str, Any]] = {}
    measurements: dict[int, ImageMeasurement] = {}
    finished = False
    try:
        for k, (i, value) in enumerate(_as_done(futures, cancel), start=1):
            if isinstance(value, BaseException):  # the task itself failed (its worker died each time it was tried)
                ev, measured = FileEvent(0, 0, items[i][0], False, task_failure(value), scene=items[i][2]), None
            else:
                ev, measured = value
            ev.index, ev.total = k, total
            if measured is not None:
                measurements[i] = measured
            records[i] = file_record(ev, items[i])
            yield ev
        finished = True
    except Cancelled:
        pass  # as core.batch: stop, then record what was done
    finally:
        if not finished:
            stop_run(client, futures, run_id)
        # no task of the run is at work now: what a dead worker was writing goes
        remove_stale_parts(out_dir, run_files, older_than=time.time())
    if not records:  # cancelled before the first image was done: nothing to record (as core.batch)
        return None
    return write_run_files(out_dir, run_settings(identity, device_info, opts, key, cluster=str(conn.spec)),
                    [records[i] for i in sorted(records)],
                    [measurements[i] for i in sorted(measurements)] if opts.measure else [], opts.overwrite)


def _map(client: Client, fn: Any, run: str, *iterables: Sequence[Any], **kwargs: Any) -> list[Future | None]:
    """``client.map`` with keys that name the run and the image's position (the dashboard groups by the prefix)."""
    n = len(iterables[0])
    keys = [f"efficell-segment-{run}-{i}" for i in range(n)]
    return list(client.map(fn, *iterables, key=keys, pure=False, **kwargs))


# ----------------------------------------------------------------------------- a project's images


def segment_images_on_cluster(project: Project, image_ids: Sequence[int] | None, settings: SegmentSettings, *,
                              cluster: str | ClusterSpec | Client, set_name: str | None = None,
                              only_new: bool = False, with_colours: bool = False,
                              cancel: CancelToken | None = None
                              ) -> Iterator[Status | RunStarted | ImageStarted | ImageSegmented | ImageFailed]:
    """``segment.segment_images`` on a Dask cluster: the same arguments (plus ``cluster``, a spec
    or a connected client) and the same events; each result is recorded here, in the project."""
    from .cluster_worker import segment_unit

    yield Status(f"Connecting to the cluster {Connection.of(cluster).spec if _is_client(cluster) else cluster}…")
    with _connection(cluster) as conn:
        client = conn.client
        if conn.dashboard:
            yield Status(f"Dask dashboard: {conn.dashboard}")
        yield Status("Loading the model on the cluster's workers…")
        identity, device_info = prepare_workers(conn, settings, cancel)
        todo = images_to_segment(project, set_name, image_ids, only_new)
        total = len(todo)
        yield RunStarted(total, settings.model_name, f"{device_info.get('device', settings.device)} on {conn.description}")
        if not todo:
            return
        known = [(i, rec) for i, rec in todo if rec is not None]
        k = 0
        for image_id, rec in todo:
            if rec is None:
                k += 1
                yield ImageFailed(k, total, image_id, f"image {image_id}", "not in the project (removed?)")
        if not known:
            return
        run_id = project.start_run({"diameter": settings.diameter,
                                    "channels": list(settings.channels) if settings.channels else None,
                                    "set": set_name, "only_new": only_new, "cluster": conn.description,
                                    "device_info": device_info},
                                   identity, set_name)
        task_run = uuid.uuid4().hex[:12]
        futures = _map(client, segment_unit, task_run, [ImageJob.of(rec) for _, rec in known],
                       settings=settings, run_id=task_run)
        finished = False
        try:
            for i, value in _as_done(futures, cancel):
                k += 1
                rec = known[i][1]
                yield ImageStarted(k, total, rec.id, rec.name)
                reason = _unit_failure(value, identity)
                if reason is None:
                    try:
                        record_result(project, rec, value.result, identity, run_id, float(value.result.seconds))
                    except OutputError as exc:
                        reason = str(getattr(exc, "reason", exc))
                if reason is not None:
                    log.info("segmentation failed: %s: %s", rec.path, reason)
                    yield ImageFailed(k, total, rec.id, str(rec.path), reason)
                    continue
                yield segmented_event(project, k, total, rec, value.result, value.measurement,
                                      float(value.result.seconds), with_colours, measure=settings.measure)
            finished = True
        except (Cancelled, GeneratorExit, KeyboardInterrupt):
            project.discard_run_if_empty(run_id)
            raise
        finally:
            if not finished:
                stop_run(client, futures, task_run)


def _unit_failure(value: Any, identity: dict[str, Any]) -> str | None:
    """Why a project image failed on the cluster, or ``None`` when it was segmented by the run's model."""
    from .cluster_worker import UnitFailed

    if isinstance(value, BaseException):
        return task_failure(value)
    if isinstance(value, UnitFailed):
        return value.reason
    made_by = value.result.settings
    if any(made_by.get(k) != identity.get(k) for k in ("encoder_sha256", "adapter_sha256")):
        return ("segmented by a worker with another model than the run's (their hashes differ): install the same "
                "EffiCell and model files wherever workers run")
    return None


# ----------------------------------------------------------------------------- the client's side of a run


def _is_client(obj: Any) -> bool:
    return hasattr(obj, "submit") and hasattr(obj, "scheduler_info")


@contextlib.contextmanager
def _connection(cluster: str | ClusterSpec | Client) -> Iterator[Connection]:
    """A connection for ``cluster``: a client given is used as it is (and left open)."""
    if _is_client(cluster):
        yield Connection.of(cluster)  # type: ignore[arg-type]
        return
    with connect(cluster) as conn:  # type: ignore[arg-type]
        yield conn


def prepare_workers(conn: Connection, settings: SegmentSettings,
                    cancel: CancelToken | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Have every worker (present and future) load the model once, and return its identity and
    device (``core.device.describe_device``'s record) as a first worker sees them (waits for
    one: a job queue may take a while); each mask records its own worker's device."""
    from .cluster_worker import PLUGIN_NAME, SegmenterPlugin, worker_identity

    client = conn.client
    plugin = SegmenterPlugin(settings.model, settings.device, settings.encoder_weights, conn.torch_threads,
                             ignore_interrupt=conn.started_here)
    try:
        client.register_plugin(plugin, name=PLUGIN_NAME)
    except ClusterError:
        raise
    except Exception as exc:  # noqa: BLE001 - what a worker raised while loading, in words
        raise ClusterError(f"the workers cannot load the model: {task_failure(exc)}") from exc
    fut = client.submit(worker_identity, settings, pure=False)
    try:
        for _i, value in _as_done([fut], cancel):
            if isinstance(value, BaseException):
                if isinstance(value, ClusterError):
                    raise value
                raise ClusterError(f"the workers cannot load the model: {task_failure(value)}")
            return value
    finally:
        fut.release()
    raise ClusterError("the cluster did not answer")  # not reached: one future, one answer


def _as_done(futures: list[Future | None], cancel: CancelToken | None) -> Iterator[tuple[int, Any]]:
    """(position, result or the exception it raised) of each future as it finishes; releases each
    one once read (the scheduler may then forget it). Raises :class:`Cancelled` once ``cancel`` is set."""
    from distributed import as_completed

    where = {f.key: i for i, f in enumerate(futures) if f is not None}
    done = as_completed([f for f in futures if f is not None])
    while not done.is_empty():
        if cancel is not None:
            cancel.raise_if_cancelled()
        batch = done.next_batch(block=False)
        if not batch:
            time.sleep(POLL_S)
            continue
        for fut in batch:
            if cancel is not None:  # images finished together come in one batch: none is reported after a cancel
                cancel.raise_if_cancelled()
            i = where[fut.key]
            try:
                value = fut.result()
            except Exception as exc:  # noqa: BLE001 - reported per image by the caller
                value = exc
            futures[i] = None
            fut.release()
            yield i, value


def task_failure(exc: BaseException) -> str:
    """Why a task failed, in words: the worker died, EffiCell is missing there, or the error itself."""
    from distributed import KilledWorker

    if isinstance(exc, KilledWorker):
        return ("the worker segmenting it died each time it was tried (out of memory? a crash in a library?); "
                "the worker's log says more")
    if isinstance(exc, ModuleNotFoundError) and "efficell" in str(exc):
        return f"EffiCell is not installed where the workers run ({exc})"
    if isinstance(exc, ClusterError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def stop_run(client: Client, futures: list[Future | None], run_id: str, wait_s: float = STOP_WAIT_S) -> None:
    """Cancel what is left of a run: set its flag on every worker (the images in flight stop at
    their next check and write nothing), cancel its futures, and wait until no worker works on it."""
    from .cluster_worker import cancel_run, in_flight

    live = [f for f in futures if f is not None]
    try:
        client.run(cancel_run, run_id, on_error="ignore")
        if live:
            client.cancel(live, force=True)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            busy = client.run(in_flight, run_id, on_error="ignore")
            if not any(busy.values()):
                return
            time.sleep(0.1)
        log.warning("cancelled run %s: workers still busy after %.0f s", run_id, wait_s)
    except (OSError, TimeoutError, RuntimeError) as exc:  # the cluster is gone already: nothing runs there
        log.info("stopping run %s: %s", run_id, exc)
