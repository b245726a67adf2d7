"""What every use case needs around its work: importing heavy libraries off the window's
thread, the compute device in words, and any error in words a user understands."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from ..core.cancel import CancelToken
from ..core.errors import EffiCellError

log = logging.getLogger(__name__)
_IMPORT_LOCK = threading.RLock()


@contextlib.contextmanager
def loading_heavy_libraries(preload: bool = True) -> Iterator[None]:
    """Import/load big libraries without full garbage collections, then freeze what they made.

    Loading torch and a model creates hundreds of thousands of objects; each full collection
    meanwhile holds the GIL for 0.2-0.5 s and the window stops. With collection off during
    the load and the results frozen afterwards (``gc.freeze``: never scanned again), later
    collections only look at the few objects a run creates per image.
    ``preload`` also imports the libraries used per image (pandas, scikit-image ...).
    Holds a lock: two threads importing numpy/scipy submodules at once can see half-initialised
    modules, so background imports happen one thread at a time.
    """
    with _IMPORT_LOCK:
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            yield
            if preload:
                import pandas  # noqa: F401
                import scipy.ndimage  # noqa: F401
                import skimage.measure
                import skimage.segmentation  # noqa: F401
                import tifffile  # noqa: F401

                from ..core import export, measure  # noqa: F401
        finally:
            gc.freeze()
            if was_enabled:
                gc.enable()


def describe_error(exc: BaseException) -> str:
    """One line for the user about why work stopped (the exception object itself travels with the event)."""
    if isinstance(exc, EffiCellError):
        return str(exc)
    if isinstance(exc, MemoryError):
        return "out of memory: try a smaller image, fewer images at once, or the CPU device"
    return f"unexpected error: {type(exc).__name__}: {exc}"


def failure_reason(exc: BaseException) -> str:
    """The reason alone (no file name) for a per-image failure that already names its file."""
    if isinstance(exc, EffiCellError) and getattr(exc, "reason", None):
        return str(exc.reason)  # type: ignore[attr-defined]
    if isinstance(exc, MemoryError):
        return "out of memory"
    return str(exc) or type(exc).__name__


def device_description(device: str = "auto") -> str:
    """'GPU: NVIDIA H200 (139 GB)' or 'CPU (16 threads)' for the status bar (imports torch)."""
    with loading_heavy_libraries(preload=False):
        import torch

    want = device or "auto"
    if want != "cpu" and torch.cuda.is_available():
        idx = int(want.split(":")[1]) if want.startswith("cuda:") else 0
        if idx < torch.cuda.device_count():
            p = torch.cuda.get_device_properties(idx)
            return f"GPU: {p.name} ({p.total_memory / 2**30:.0f} GiB)"
    if want in ("auto", "mps") and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "GPU: Apple (MPS)"
    return f"CPU ({torch.get_num_threads()} threads, {os.cpu_count()} cores)"


def gpu_names() -> list[str]:
    """The CUDA devices torch sees (for the settings dialog's device list)."""
    import torch

    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


@dataclass(frozen=True)
class DeviceFound:
    description: str  # for the status bar
    gpus: tuple[str, ...]  # CUDA device names (the settings dialog's choices)


def find_device(device: str = "auto", threads: int | None = None, *,
                cancel: CancelToken | None = None) -> Iterator[DeviceFound]:
    """Where work will run, in words (importing torch takes a second: done off the window's thread).

    ``threads``: the torch threads the window's work uses (its preference): the CPU's words
    name those, not torch's default.
    """
    text = device_description(device)
    yield DeviceFound(cpu_description(threads) if threads and text.startswith("CPU") else text, tuple(gpu_names()))


def cpu_description(threads: int | None = None) -> str:
    """'CPU (3 threads, 4 cores)': ``threads`` (None: all cores but one, the window's default)."""
    import os

    n = threads or max(1, (os.cpu_count() or 2) - 1)
    return f"CPU ({n} thread{'s' if n != 1 else ''}, {os.cpu_count()} cores)"


def quick_device_description(device: str = "auto", threads: int | None = None) -> str:
    """The device in words at once, without importing torch (a second or more): the CPU when it
    is chosen or no GPU driver is installed (Linux), else that a GPU is being looked for.
    :func:`find_device` (in a worker) has the last word."""
    import os
    import shutil
    import sys

    if (device or "auto") == "cpu":
        return cpu_description(threads)
    nvidia = os.path.exists("/proc/driver/nvidia/version") or shutil.which("nvidia-smi") is not None
    if sys.platform.startswith("linux") and not nvidia:
        return cpu_description(threads)
    return "Looking for a GPU…"
