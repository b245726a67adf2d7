"""Training an adapter from the window: dialog, worker process, side-by-side comparison.

Kept import-light: the spawned training process imports :mod:`.runner` through this
package, and that child must not load Qt. The Qt classes are loaded on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CompareDialog", "TrainingDialog", "TrainingProcess"]


def __getattr__(name: str) -> Any:
    if name in ("TrainingDialog", "TrainingProcess"):
        from . import dialog

        return getattr(dialog, name)
    if name == "CompareDialog":
        from .compare import CompareDialog

        return CompareDialog
    raise AttributeError(name)
