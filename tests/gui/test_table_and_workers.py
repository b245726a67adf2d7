"""The DataFrame table model and the generator worker (progress, cancel, errors)."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from PySide6.QtCore import Qt

from efficell_app.core.errors import ImageReadError
from efficell_app.gui.table_model import DataFrameModel, format_value
from efficell_app.gui.workers import (
    EtaTracker,
    JobResult,
    callback_job,
    launch,
    start_worker,
)

pytestmark = pytest.mark.gui


def test_model_sorts_and_maps_ids() -> None:
    df = pd.DataFrame({"cell_id": [3, 1, 2], "area_px": [10.0, np.nan, 5.5], "image": ["a", "b", "c"]})
    m = DataFrameModel("cell_id")
    m.set_frame(df)
    assert (m.rowCount(), m.columnCount()) == (3, 3)
    assert m.headerData(1, Qt.Orientation.Horizontal) == "area_px"
    assert m.data(m.index(0, 1)) == "10" and m.data(m.index(1, 1)) == ""
    m.sort(1, Qt.SortOrder.AscendingOrder)
    assert [m.id_for_row(r) for r in range(3)] == [2, 3, 1]  # NaN last
    assert m.row_for_id(1) == 2
    m.sort(0, Qt.SortOrder.DescendingOrder)
    assert [m.id_for_row(r) for r in range(3)] == [3, 2, 1]
    m.set_frame(None)
    assert m.rowCount() == 0 and m.row_for_id(1) is None


def test_format_value() -> None:
    assert format_value(np.int64(5)) == "5"
    assert format_value(0.123456) == "0.1235"
    assert format_value(1.5e7) == "1.500e+07"
    assert format_value(True) == "yes"


def test_large_table_is_cheap() -> None:
    n = 50_000
    df = pd.DataFrame({"cell_id": np.arange(1, n + 1), **{f"c{i}": np.random.default_rng(i).random(n) for i in range(30)}})
    m = DataFrameModel("cell_id")
    t0 = time.perf_counter()
    m.set_frame(df)
    m.sort(5, Qt.SortOrder.DescendingOrder)
    assert time.perf_counter() - t0 < 3.0
    assert m.row_for_id(n) is not None


def _counting_job(n: int, delay: float = 0.0, fail_at: int | None = None):
    def job(cancel):
        for i in range(n):
            cancel.raise_if_cancelled()
            if i == fail_at:
                raise ImageReadError("/data/x.tif", "file is damaged")
            time.sleep(delay)
            yield i

    return job


def test_worker_emits_events_then_finished(qtbot) -> None:
    got: list[int] = []
    h = start_worker(_counting_job(5), on_event=got.append)
    with qtbot.waitSignal(h.finished, timeout=5000):
        launch(h)
    qtbot.waitUntil(lambda: not h.is_running(), timeout=5000)
    assert got == [0, 1, 2, 3, 4] and h.outcome == "finished"


def test_worker_cancel_stops_early(qtbot) -> None:
    got: list[int] = []
    h = start_worker(_counting_job(1000, delay=0.005), on_event=got.append)
    launch(h)
    qtbot.waitUntil(lambda: len(got) >= 3, timeout=5000)
    with qtbot.waitSignal(h.cancelled, timeout=5000):
        h.cancel()
    assert 3 <= len(got) < 1000 and h.outcome == "cancelled"
    assert h.wait(5000)


def test_worker_failure_is_reported_in_words(qtbot) -> None:
    h = start_worker(_counting_job(5, fail_at=2))
    with qtbot.waitSignal(h.failed, timeout=5000) as blocker:
        launch(h)
    assert blocker.args == ["/data/x.tif: file is damaged"]


def test_callback_job_relays_progress(qtbot) -> None:
    def work(report, cancel):
        for i in range(4):
            report((i, 4))
        return "done"

    got: list = []
    h = start_worker(callback_job(work), on_event=got.append)
    with qtbot.waitSignal(h.finished, timeout=5000):
        launch(h)
    assert got[:4] == [(0, 4), (1, 4), (2, 4), (3, 4)] and got[-1] == JobResult("done")


def test_eta() -> None:
    eta = EtaTracker(10)
    assert eta.text() == ""
    eta.t0 -= 4.0
    eta.update(2)
    assert eta.eta_seconds() == pytest.approx(16.0, rel=0.05)
    assert "s left" in eta.text()
