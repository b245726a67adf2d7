"""How much time a run has left, for the window's status bar and the command line's lines (no Qt)."""

from __future__ import annotations

import time


class EtaTracker:
    """Remaining-time estimate from units done so far (simple rate since the start). ``done`` may
    count parts of a unit (an image 40% segmented is 0.4), so one long image has a time left too."""

    def __init__(self, total: int) -> None:
        self.total = max(int(total), 0)
        self.done: float = 0.0
        self.t0 = time.monotonic()

    def update(self, done: float) -> None:
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
