"""The main window end to end: drop a folder, segment in the background, see and select cells."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from gui_helpers import drop, measured_cells, wait_run_done
from PySide6.QtCore import Qt, QTimer

pytestmark = pytest.mark.gui


def test_drop_folder_segments_and_shows_overlay(qtbot, window, image_folder: Path) -> None:
    drop(window, image_folder)
    qtbot.waitUntil(lambda: window.session.project is not None, timeout=10_000)
    project = window.session.project
    qtbot.waitUntil(lambda: len(project.list_images()) == 2, timeout=20_000)
    assert [s.name for s in project.list_sets()] == ["Experiment 12"]
    wait_run_done(qtbot, window)
    # every image segmented, recorded in the project, shown in the panel
    recs = project.list_images()
    assert all(r.status == "segmented" for r in recs)
    assert all(project.latest_result(r.id) is not None for r in recs)
    assert all(window.project_panel.status_of(r.id) == "segmented" for r in recs)
    # the viewer shows the first image with its label overlay
    assert window.current_image == recs[0].id
    labels = window.viewer.labels()
    assert labels is not None and labels.shape == (recs[0].height, recs[0].width)
    assert labels.max() > 0
    np.testing.assert_array_equal(labels, project.labels_for(recs[0].id).labels)
    overlay = window.viewer.overlay_item.image
    assert overlay is not None and overlay.shape[:2] == labels.shape
    assert (overlay[..., 3][labels > 0] > 0).all() and (overlay[..., 3][labels == 0] == 0).all()
    # measurements of the image are in the table, one row per cell
    qtbot.waitUntil(lambda: window.measurements.model.rowCount() == measured_cells(labels), timeout=10_000)
    assert window.problems.count() == 0
    # the status bar names the device (CPU here: the fixture asks for it)
    qtbot.waitUntil(lambda: window.device_label.text().startswith("CPU ("), timeout=20_000)


def test_corrupt_image_is_listed_and_others_continue(qtbot, window, image_folder: Path) -> None:
    (image_folder / "broken.tif").write_bytes(b"II*\x00" + b"\x13" * 200)
    (image_folder / "notes.txt").write_text("plate map")
    drop(window, image_folder)
    qtbot.waitUntil(lambda: window.session.project is not None, timeout=10_000)
    wait_run_done(qtbot, window)
    qtbot.waitUntil(lambda: window.problems.count() >= 1, timeout=10_000)
    problems = [window.problems.item(i).text() for i in range(window.problems.count())]
    assert any("broken.tif" in p for p in problems), problems
    recs = window.session.project.list_images()
    assert sorted(r.name for r in recs) == sorted(p.name for p in image_folder.glob("*.tif") if p.name != "broken.tif")
    assert all(r.status == "segmented" for r in recs)
    assert "Problems (" in window.docks["Problems"].windowTitle()


def test_cancel_mid_run(qtbot, window, tmp_path: Path, dsb_pairs) -> None:
    folder = tmp_path / "many"
    folder.mkdir()
    for k in range(6):
        for img, _ in dsb_pairs[:2]:
            (folder / f"{k}_{img.name}").write_bytes(img.read_bytes())
    window.seg_panel.auto_segment.setChecked(False)
    drop(window, folder)
    qtbot.waitUntil(lambda: window.session.project is not None and len(window.session.project.list_images()) == 12,
                    timeout=30_000)
    wait_run_done(qtbot, window)
    assert not window.session.is_running()  # auto-segment was off
    done: list[int] = []
    window.session.labels_ready.connect(lambda i, _l: done.append(i))
    window.segment_scope("project")
    assert window.cancel_button.isVisible()
    qtbot.waitUntil(lambda: len(done) >= 1, timeout=30_000)
    with qtbot.waitSignal(window.session.run_finished, timeout=30_000) as blocker:
        window.cancel_button.click()
    assert "cancelled" in blocker.args[0]
    statuses = [r.status for r in window.session.project.list_images()]
    assert 1 <= statuses.count("segmented") < 12
    assert not window.cancel_button.isVisible()
    assert window.seg_panel.buttons["image"].isEnabled()


def test_table_and_viewer_selection_follow_each_other(qtbot, window, image_folder: Path) -> None:
    drop(window, image_folder)
    qtbot.waitUntil(lambda: window.session.project is not None, timeout=10_000)
    wait_run_done(qtbot, window)
    labels = window.viewer.labels()
    qtbot.waitUntil(lambda: window.measurements.model.rowCount() == measured_cells(labels), timeout=10_000)
    # click on a cell in the viewer -> its row is selected in the table
    ids, counts = np.unique(labels[labels > 0], return_counts=True)
    target = int(ids[np.argmax(counts)])
    rows, cols = np.nonzero(labels == target)
    r, c = int(rows[len(rows) // 2]), int(cols[len(cols) // 2])  # a pixel of that cell
    view = window.viewer.graphics
    pos = view.mapFromScene(window.viewer.pixel_to_scene(r, c))

    qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=pos)
    qtbot.waitUntil(lambda: window.measurements.selected_row() is not None, timeout=5000)
    row = window.measurements.selected_row()
    assert window.measurements.model.id_for_row(row) == target
    assert window.viewer.selected_cell() == target
    # hovering shows the cell id and its measurements
    qtbot.mouseMove(view.viewport(), pos)
    qtbot.waitUntil(lambda: f"cell {target}" in window.viewer.info.text(), timeout=5000)
    assert "area_" in window.viewer.info.text()
    # sort the table, pick another row -> the viewer outlines that cell
    window.measurements.table.sortByColumn(window.measurements.model.columns().index("cell_id"),
                                           Qt.SortOrder.DescendingOrder)
    other = int(ids[np.argsort(-counts)[1]])  # the second largest: measured (not below the minimum size)
    window.measurements.table.selectRow(window.measurements.model.row_for_id(other))
    assert window.viewer.selected_cell() == other
    hl = window.viewer.highlight_item.image
    assert hl is not None and hl[..., 3].any()
    # the plot tab draws a histogram of the chosen column
    window.measurements.tabs.setCurrentIndex(1)
    assert window.measurements.x_col.count() > 5
    assert len(window.measurements.plot.getPlotItem().listDataItems()) == 1


def test_event_loop_stays_responsive_during_segmentation(qtbot, window, tmp_path: Path, dsb_pairs) -> None:
    folder = tmp_path / "resp"
    folder.mkdir()
    for k in range(3):
        for img, _ in dsb_pairs:
            (folder / f"{k}_{img.name}").write_bytes(img.read_bytes())
    window.seg_panel.auto_segment.setChecked(False)
    drop(window, folder)
    qtbot.waitUntil(lambda: window.session.project is not None and len(window.session.project.list_images()) == 12,
                    timeout=30_000)
    wait_run_done(qtbot, window)
    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(20)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    finished: list[str] = []
    window.session.run_finished.connect(finished.append)
    window.segment_scope("project")
    t_start = time.perf_counter()
    timer.start()
    qtbot.waitUntil(lambda: bool(finished), timeout=120_000)
    timer.stop()
    run_seconds = time.perf_counter() - t_start
    gaps = np.diff(ticks)
    assert run_seconds > 1.0 and len(gaps) > 20
    print(f"run {run_seconds:.1f} s, {len(ticks)} ticks, longest gap {gaps.max() * 1000:.0f} ms, "
          f"p99 {np.percentile(gaps, 99) * 1000:.0f} ms")
    assert gaps.max() < 0.200


def test_the_status_bar_follows_the_work_within_an_image(qtbot, window, tmp_path: Path, dsb_pairs) -> None:
    """A large slide takes minutes: the bar moves within the image and the line says how far it is."""
    import tifffile

    from efficell_app.gui.session import WithinImageSignal

    folder = tmp_path / "large"
    folder.mkdir()
    for k in range(2):  # larger than a tile of the model: segmented in several steps
        tifffile.imwrite(folder / f"slide{k}.tif", np.tile(tifffile.imread(dsb_pairs[k][0]), (5, 5)))
    seen: list[tuple] = []
    window.session.run_within.connect(  # connected after the window's own slot: sees what it shows
        lambda i, t, n, f, left: seen.append((i, t, n, f, window.progress.value(), window.progress_text.text(), left,
                                              window.progress.format())))
    drop(window, folder)
    qtbot.waitUntil(lambda: window.session.project is not None, timeout=10_000)
    wait_run_done(qtbot, window, timeout=120_000)
    assert [s[:2] for s in seen] == sorted(s[:2] for s in seen) and {s[0] for s in seen} == {1, 2}
    mid = [s for s in seen if 0 < s[3] < 1]
    assert len(mid) >= 2, seen
    for index, total, name, fraction, value, text, left, bar in mid:
        assert value == int((index - 1 + fraction) * window.STEPS_PER_IMAGE)
        assert bar == f"{index - 1}/{total} ({(index - 1 + fraction) / total:.0%})"  # the bar's words move with it
        assert text == f"Segmenting {name} ({index}/{total}): {fraction:.0%} of the image" + (f", {left}" if left else "")
    assert all(s[6].endswith(" left") for s in mid)  # the time left, from the first image on

    class Sink:  # the throttle: one report per whole percent, and a first one for each image
        def __init__(self) -> None:
            self.got: list[tuple] = []

        def emit(self, *a) -> None:  # noqa: ANN002
            self.got.append(a)

    sink = Sink()
    report = WithinImageSignal(sink, every_s=0.0)
    for f in (0.0, 0.001, 0.004, 0.5, 0.502, 1.0):
        report(1, 2, "a.tif", f)
    report(2, 2, "b.tif", 0.0)
    assert sink.got == [(1, 2, "a.tif", 0.0), (1, 2, "a.tif", 0.5), (1, 2, "a.tif", 1.0), (2, 2, "b.tif", 0.0)]
