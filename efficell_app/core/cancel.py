"""A thread- and process-safe cancel flag shared between a worker and whoever started it."""

from __future__ import annotations

import threading

from .errors import Cancelled


class CancelToken:
    """Set once by the caller; checked by long-running core generators between units of work."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled("cancelled by the user")
