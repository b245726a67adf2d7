"""A training child that dies while it starts is reported, never waited on for ever."""

from __future__ import annotations

import os
import threading

import numpy as np

from efficell_app.core.cancel import CancelToken
from efficell_app.tasks.train import TrainingFailed, _train_in_child


class _DiesWhenLoaded:
    """Unpickled in the child, it ends the process at once: a child dying as it starts (a failed
    import, the OOM killer while torch loads)."""

    def __reduce__(self):  # noqa: ANN204
        return (os._exit, (3,))


def test_a_child_dying_at_start_up_fails_the_run(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    job = (_DiesWhenLoaded(), np.zeros(4 << 20, np.uint8))  # first the death, then megabytes (images, masks)
    outcome: list[BaseException | str] = []

    def run() -> None:
        try:
            list(_train_in_child(job, CancelToken()))  # type: ignore[arg-type]
            outcome.append("returned")
        except BaseException as exc:  # noqa: BLE001
            outcome.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(120)
    assert not t.is_alive(), "the run hung on a child that died while starting"
    assert isinstance(outcome[0], TrainingFailed) and "exit code 3" in str(outcome[0])
    assert list(tmp_path.iterdir()) == []  # the job's file went with the run
