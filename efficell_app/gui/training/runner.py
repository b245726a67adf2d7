"""The training worker process (no Qt here: it is what the spawned child imports).

The window starts :func:`run_in_process` in a *separate process* (``multiprocessing``
"spawn" context) so that cancelling is clean (the process ends, whatever it was doing) and
every byte of GPU memory goes back to the system when it exits. Progress travels as
messages on a queue:

    ("progress", TrainProgress)    one per core event (losses, validation scores, ETA, phase)
    ("done", TrainProgress)        the last event, with adapter_path / metrics
    ("cancelled", "")              the run stopped on request; nothing was written
    ("error", "one line for the user")
"""

from __future__ import annotations

import logging
import os
import traceback
from dataclasses import dataclass, replace
from typing import Any

from ...core.cancel import CancelToken

log = logging.getLogger(__name__)


@dataclass
class TrainingJob:
    """What the child process runs: a core ``TrainConfig`` plus process settings."""

    config: Any  # efficell_app.core.training.TrainConfig (picklable)
    threads: int | None = None
    small_encoder: bool = False  # tests: the tiny random compact encoder instead of ``config.encoder``


class _EventToken(CancelToken):
    """A CancelToken backed by a multiprocessing Event shared with the parent."""

    def __init__(self, event: Any) -> None:
        self._event = event


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
        from ...core.errors import Cancelled, EffiCellError
        from ...core.training import train_adapter

        cfg = job.config
        if job.small_encoder:
            from ...core.encoders import build_encoder

            torch.manual_seed(cfg.seed)
            cfg = replace(cfg, encoder=build_encoder(str(cfg.encoder), weights=None, small=True))
        last = None
        try:
            for ev in train_adapter(cfg, _EventToken(cancel_event)):
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
