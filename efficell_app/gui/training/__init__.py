"""Training an adapter from the window: the dialog (``tasks.train_project_adapter`` in a worker,
the run itself in its own process) and the side-by-side comparison."""

from __future__ import annotations

from .compare import CompareDialog
from .dialog import TrainingDialog

__all__ = ["CompareDialog", "TrainingDialog"]
