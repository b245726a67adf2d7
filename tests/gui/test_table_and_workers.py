"""The DataFrame table model and the workers (superqt's: progress, cancel, errors as exception objects)."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from PySide6.QtCore import Qt

from efficell_app.core.errors import ImageReadError
from efficell_app.gui.table_model import DataFrameModel, format_value
from efficell_app.gui.workers import start_call, start_task
from efficell_app.core.progress import EtaTracker
from efficell_app.tasks import describe_error

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


def _counting(n: int, delay: float = 0.0, fail_at: int | None = None, *, cancel):
    for i in range(n):
        cancel.raise_if_cancelled()
        if i == fail_at:
            raise ImageReadError("/data/x.tif", "file is damaged")
        time.sleep(delay)
        yield i
    return "all counted"


def test_worker_emits_events_then_returns(qtbot) -> None:
    got: list[int] = []
    returned: list[str] = []
    w = start_task(_counting, 5, on_event=got.append, on_returned=returned.append)
    qtbot.waitUntil(lambda: returned == ["all counted"], timeout=5000)
    assert got == [0, 1, 2, 3, 4] and w.outcome == "finished" and w.wait(1000) and not w.active


def test_worker_cancel_stops_early(qtbot) -> None:
    got: list[int] = []
    w = start_task(_counting, 1000, 0.005, on_event=got.append)
    qtbot.waitUntil(lambda: len(got) >= 3, timeout=5000)
    with qtbot.waitSignal(w.aborted, timeout=5000):
        w.cancel()
    assert 3 <= len(got) < 1000 and w.outcome == "cancelled"
    assert w.wait(5000)


def test_worker_failure_carries_the_exception(qtbot) -> None:
    errors: list[BaseException] = []
    w = start_task(_counting, 5, 0.0, 2, on_error=errors.append)
    qtbot.waitUntil(lambda: bool(errors), timeout=5000)
    assert isinstance(errors[0], ImageReadError) and w.outcome == "failed"
    assert describe_error(errors[0]) == "/data/x.tif: file is damaged"


def test_a_runtime_error_is_reported_not_swallowed(qtbot) -> None:
    """superqt's own loop treats a RuntimeError as a deleted worker and drops it; ours reports it."""
    def broken(*, cancel):
        yield 1
        raise RuntimeError("CUDA error: out of memory")

    errors: list[BaseException] = []
    start_task(broken, on_error=errors.append)
    qtbot.waitUntil(lambda: bool(errors), timeout=5000)
    assert describe_error(errors[0]) == "unexpected error: RuntimeError: CUDA error: out of memory"


def test_call_worker_relays_progress(qtbot) -> None:
    def work(report, cancel):
        for i in range(4):
            report((i, 4))
        return "done"

    got: list = []
    w = start_call(work, on_progress=got.append, on_returned=got.append)
    qtbot.waitUntil(lambda: len(got) == 5, timeout=5000)
    assert got == [(0, 4), (1, 4), (2, 4), (3, 4), "done"] and w.outcome == "finished"


def test_eta() -> None:
    eta = EtaTracker(10)
    assert eta.text() == ""
    eta.t0 -= 4.0
    eta.update(2)
    assert eta.eta_seconds() == pytest.approx(16.0, rel=0.05)
    assert "s left" in eta.text()
