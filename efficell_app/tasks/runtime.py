"""What every use case needs around its work: importing heavy libraries off the window's
thread, the compute device in words, and any error in words a user understands."""

from __future__ import annotations

import contextlib
import gc
import logging
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
    from ..core.device import DeviceUnavailable

    if isinstance(exc, EffiCellError):
        return str(exc)
    if isinstance(exc, DeviceUnavailable):
        return f"the device chosen in Settings ({exc.device}) cannot be used: {exc}"
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


def device_description(device: str = "auto", threads: int | None = None) -> str:
    """The status bar's words for ``device`` (:func:`~efficell_app.core.device.device_text`; imports torch).

    ``threads``: the torch threads the window's work uses (its preference), named instead of torch's default."""
    with loading_heavy_libraries(preload=False):
        import torch  # noqa: F401 - imported under the import lock

    from ..core.device import device_text

    return device_text(device, threads)


def gpu_names() -> list[str]:
    """The CUDA devices torch sees (for the settings dialog's device list)."""
    from ..core.device import gpu_names as names

    return names()


@dataclass(frozen=True)
class DeviceFound:
    description: str  # for the status bar
    gpus: tuple[str, ...]  # CUDA device names (the settings dialog's choices)


def find_device(device: str = "auto", threads: int | None = None, *,
                cancel: CancelToken | None = None) -> Iterator[DeviceFound]:
    """Where work will run, in words (importing torch takes a second: done off the window's thread).
    The window shows :func:`~efficell_app.core.device.quick_device_text` meanwhile."""
    yield DeviceFound(device_description(device, threads), tuple(gpu_names()))
