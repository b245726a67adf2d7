"""Ctrl-C in a long command: the first press asks the run to stop at its next check (it then
records what it finished, as a cancel from the window does); a second press stops at once.

Why not let ``KeyboardInterrupt`` fly: raised inside a library's wait (Dask's ``sync``, a torch
kernel) it can leave that library half-way (Dask then logs its own traceback) and the run
writes no table or record for the images it did finish."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import TextIO

from ..core.cancel import CancelToken


@contextlib.contextmanager
def ctrl_c_cancels(cancel: CancelToken, err: TextIO, stopping: str) -> Iterator[CancelToken]:
    """While inside, a first Ctrl-C sets ``cancel`` and prints ``stopping`` (what the run does now);
    a second raises ``KeyboardInterrupt``. Off the main thread (no signals there) it changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield cancel
        return

    def on_ctrl_c(signum: int, frame: object) -> None:
        if cancel.cancelled:
            raise KeyboardInterrupt
        cancel.cancel()
        print(f"\ncancelling: {stopping} (Ctrl-C again to stop at once)", file=err, flush=True)

    previous = signal.signal(signal.SIGINT, on_ctrl_c)
    try:
        yield cancel
    finally:
        signal.signal(signal.SIGINT, previous)
