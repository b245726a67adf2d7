"""Which Dask cluster a run goes to, and connecting to it (the ``cluster`` extra: dask,
distributed, dask-jobqueue; imported only here, and only when a cluster is used).

A cluster is named by a SPEC, the same on the command line (``--cluster``) and in the window's
settings ("Run on"):

================  ==========================================================================
``local[:N]``     a ``LocalCluster`` of N worker processes on this computer (default: one per
                  core), one image at a time each
``tcp://HOST:P``  an existing scheduler (``dask scheduler`` + ``dask worker`` on the machines
                  that share the images' folder); ``tls://`` too, or a scheduler file ``*.json``
``slurm[:N]``     N batch jobs of workers through dask-jobqueue (also ``pbs``, ``sge``, ``lsf``);
                  cores, memory, queue ... come from the user's Dask configuration
                  (``~/.config/dask/jobqueue.yaml``, section ``jobqueue.slurm``)
================  ==========================================================================

The model is loaded once per worker process by a worker plugin (``cluster_worker``); images
are read and masks written by the workers, so every worker must see the same paths.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.errors import EffiCellError

if TYPE_CHECKING:
    from distributed import Client

log = logging.getLogger(__name__)

INSTALL = "pip install 'efficell[cluster]'"
JOB_QUEUES = {"slurm": "SLURMCluster", "pbs": "PBSCluster", "sge": "SGECluster", "lsf": "LSFCluster"}
SPEC_HELP = ("local[:N] (N worker processes here), tcp://host:port (a running Dask scheduler), "
             "a scheduler file *.json, or slurm|pbs|sge|lsf[:jobs] (dask-jobqueue)")


class ClusterError(EffiCellError):
    """The cluster cannot be used: the extra is not installed, the scheduler is unreachable,
    the job queue is not configured ... (the message says what to do)."""


@dataclass(frozen=True)
class ClusterSpec:
    """Where a run goes. ``kind``: ``"local"``, ``"scheduler"`` (an address or scheduler file)
    or a job queue (``"slurm"``, ``"pbs"``, ``"sge"``, ``"lsf"``); ``workers``: the number of
    local worker processes or of batch jobs (``None``: the default)."""

    kind: str
    workers: int | None = None
    address: str = ""

    def __str__(self) -> str:
        if self.kind == "scheduler":
            return self.address
        return self.kind + (f":{self.workers}" if self.workers else "")


def parse_cluster(text: str) -> ClusterSpec:
    """A :class:`ClusterSpec` from its text; ``ValueError`` saying the accepted forms otherwise."""
    t = (text or "").strip()
    low = t.lower()
    if re.match(r"^(tcp|tls|ucx|inproc|ws|wss)://\S+$", t):
        return ClusterSpec("scheduler", address=t)
    if low.endswith(".json"):
        return ClusterSpec("scheduler", address=str(Path(t).expanduser()))
    kind, _, count = low.partition(":")
    if kind in ("local", *JOB_QUEUES):
        if not count:
            return ClusterSpec(kind)
        if count.isdigit() and int(count) > 0:
            return ClusterSpec(kind, int(count))
        raise ValueError(f"cluster '{text}': the number after '{kind}:' must be a positive whole number")
    raise ValueError(f"cluster '{text}' is not understood; give {SPEC_HELP}")


def cluster_extra_missing() -> str | None:
    """Why clusters cannot be used here (the extra is not installed), or ``None`` when they can."""
    try:
        import distributed  # noqa: F401
    except ImportError as exc:
        return f"running on a Dask cluster needs the cluster extra ({exc.name} is missing): {INSTALL}"
    return None


@dataclass
class Connection:
    """A client connected to the cluster of a spec; ``torch_threads`` is what each worker should use
    (``None``: leave the worker's setting). ``Connection.of(client)`` wraps a client made elsewhere."""

    client: Client
    spec: ClusterSpec
    dashboard: str | None = None
    torch_threads: int | None = None
    started_here: bool = False  # a local cluster of this process: its workers leave Ctrl-C to the client

    @property
    def description(self) -> str:
        return describe(self.client, self.spec)

    @classmethod
    def of(cls, client: Client | Connection) -> Connection:
        if isinstance(client, Connection):
            return client
        address = str(getattr(getattr(client, "scheduler", None), "address", "") or "a Dask scheduler")
        return cls(client, ClusterSpec("scheduler", address=address), dashboard_of(client))


def describe(client: Client, spec: ClusterSpec | None = None) -> str:
    """'local:2 (2 workers)' for the status line and the run record."""
    try:
        n = len(client.scheduler_info().get("workers", {}))
    except Exception:  # noqa: BLE001 - a line of text must not fail the run
        n = 0
    where = str(spec) if spec is not None else str(getattr(client, "scheduler", None) and client.scheduler.address)
    return f"{where} ({n} worker{'s' if n != 1 else ''} now)"


def dashboard_of(client: Client) -> str | None:
    """The dashboard's address, with a hint when bokeh (which draws it) is not installed."""
    try:
        link = client.dashboard_link
    except (KeyError, AttributeError):  # a scheduler started without its dashboard
        return None
    if not link:
        return None
    try:
        import bokeh  # noqa: F401
    except ImportError:
        return f"{link} (the dashboard needs bokeh>=3.1 where the scheduler runs: pip install bokeh)"
    return link


@contextlib.contextmanager
def connect(spec: ClusterSpec | str, *, quiet: bool = True, torch_threads: int | None = None) -> Iterator[Connection]:
    """Start or join the cluster of ``spec`` and yield a connected client; what was started
    here (a local cluster, batch jobs) is shut down on the way out. ``torch_threads``: per
    worker (default: a local cluster's workers share the cores; others keep their setting)."""
    if isinstance(spec, str):
        try:
            spec = parse_cluster(spec)
        except ValueError as exc:
            raise ClusterError(str(exc)) from exc
    missing = cluster_extra_missing()
    if missing:
        raise ClusterError(missing)
    from distributed import Client

    with contextlib.ExitStack() as stack:
        if quiet and logging.getLogger().getEffectiveLevel() > logging.INFO:
            # distributed logs every worker's start and stop at INFO; show its warnings only (-v shows all)
            dlog = logging.getLogger("distributed")
            stack.callback(dlog.setLevel, dlog.level)
            dlog.setLevel(logging.WARNING)
        threads = None
        if spec.kind == "scheduler":
            cluster = None
        elif spec.kind == "local":
            cluster, threads = _local_cluster(spec, quiet)
        else:
            cluster = _job_queue_cluster(spec)
        if cluster is not None:
            stack.enter_context(cluster)
        try:
            if cluster is not None:
                client = Client(cluster)
            elif spec.address.endswith(".json"):
                client = Client(scheduler_file=spec.address, timeout="30s")
            else:
                client = Client(spec.address, timeout="30s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise ClusterError(f"cannot reach the Dask scheduler at {spec.address or spec}: {exc}") from exc
        stack.enter_context(client)
        yield Connection(client, spec, dashboard_of(client), torch_threads or threads,
                         started_here=spec.kind == "local")


def _local_cluster(spec: ClusterSpec, quiet: bool) -> tuple[Any, int]:
    """A ``LocalCluster`` of worker processes, one task each; torch gets the cores they share."""
    from distributed import LocalCluster

    cores = os.cpu_count() or 1
    n = spec.workers or cores
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                           silence_logs=logging.ERROR if quiet else logging.WARNING)
    return cluster, max(1, cores // n)


def _job_queue_cluster(spec: ClusterSpec) -> Any:
    """A dask-jobqueue cluster configured from the user's Dask configuration, scaled to ``spec.workers`` jobs."""
    try:
        import dask_jobqueue
    except ImportError as exc:
        raise ClusterError(f"'{spec.kind}' clusters need dask-jobqueue: {INSTALL}") from exc
    cls = getattr(dask_jobqueue, JOB_QUEUES[spec.kind])
    try:
        cluster = cls()
    except ValueError as exc:  # cores / memory missing from the configuration
        raise ClusterError(f"the {spec.kind} job queue is not configured ({exc}); set at least "
                           f"jobqueue.{spec.kind}.cores and .memory in ~/.config/dask/jobqueue.yaml "
                           "(docs/cluster.md has an example)") from exc
    cluster.scale(jobs=spec.workers or 1)
    return cluster
