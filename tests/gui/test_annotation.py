"""Annotation tools driven by simulated mouse and key events on a real image; saving and reopening."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QEvent, QPointF, Qt
from PySide6.QtGui import QMouseEvent
from PySide6.QtWidgets import QApplication

from efficell_app.core.images import read_mask

NO_MOD = Qt.KeyboardModifier.NoModifier
LEFT = Qt.MouseButton.LeftButton


# ----------------------------------------------------------------------------- mouse helpers
def _send(win, kind: QEvent.Type, row: float, col: float, button, buttons) -> None:
    view = win.viewer.graphics
    pos = QPointF(view.mapFromScene(win.viewer.pixel_to_scene(row, col)))
    ev = QMouseEvent(kind, pos, QPointF(view.viewport().mapToGlobal(pos.toPoint())), button, buttons, NO_MOD)
    QApplication.sendEvent(view.viewport(), ev)


def click(win, row: float, col: float, double: bool = False) -> None:
    _send(win, QEvent.Type.MouseButtonPress, row, col, LEFT, LEFT)
    _send(win, QEvent.Type.MouseButtonRelease, row, col, LEFT, Qt.MouseButton.NoButton)
    if double:
        _send(win, QEvent.Type.MouseButtonDblClick, row, col, LEFT, LEFT)
        _send(win, QEvent.Type.MouseButtonRelease, row, col, LEFT, Qt.MouseButton.NoButton)


def drag(win, points: list[tuple[float, float]]) -> None:
    (r0, c0), rest = points[0], points[1:]
    _send(win, QEvent.Type.MouseButtonPress, r0, c0, LEFT, LEFT)
    path = []
    for (ra, ca), (rb, cb) in itertools.pairwise(points):
        n = max(2, int(np.hypot(rb - ra, cb - ca)))
        path += [(ra + (rb - ra) * t, ca + (cb - ca) * t) for t in np.linspace(0, 1, n)[1:]]
    for r, c in path:
        _send(win, QEvent.Type.MouseMove, r, c, Qt.MouseButton.NoButton, LEFT)
    r, c = rest[-1]
    _send(win, QEvent.Type.MouseButtonRelease, r, c, LEFT, Qt.MouseButton.NoButton)


def key(win, k: Qt.Key, mods=NO_MOD) -> None:
    from PySide6.QtTest import QTest

    QTest.keyClick(win, k, mods)


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture()
def project_folder(tmp_path: Path, image_folder: Path, dsb_pairs) -> tuple[Path, np.ndarray]:
    """A project with two real images; the first has a 'prediction' (its true mask)."""
    from efficell_app.project import Project

    folder = tmp_path / "proj"
    with Project.create(folder) as p:
        report = p.add_folder(image_folder, "Experiment 12")
        first = p.get_image(report.added[0])
        mask = read_mask(next(m for i, m in dsb_pairs if i.name == first.name))
        p.record_result(first.id, mask, {"test": True}, {"adapter": "truth"})
    return folder, mask


@pytest.fixture(autouse=True)
def _every_mouse_move():
    """pyqtgraph drops mouse moves closer than 1/100 s; simulated strokes send them faster."""
    import pyqtgraph as pg

    old = pg.getConfigOption("mouseRateLimit")
    pg.setConfigOptions(mouseRateLimit=0)
    yield
    pg.setConfigOptions(mouseRateLimit=old)


@pytest.fixture()
def annotating(window, qtbot, project_folder):
    ctl = window.annotation.controller
    folder, mask = project_folder
    assert window.open_project(folder)
    qtbot.waitUntil(lambda: window.current_image is not None and window.viewer.has_image(), timeout=10_000)
    window.viewer.fit()
    QApplication.processEvents()
    return ctl, mask, folder


def _background_row(mask: np.ndarray, length: int = 30) -> tuple[int, int]:
    for r in range(8, mask.shape[0] - 8):
        for c in range(8, mask.shape[1] - length - 8):
            if not mask[r - 6 : r + 7, c - 6 : c + length + 6].any():
                return r, c
    raise AssertionError("no empty strip in the test mask")


def _two_cells(labels: np.ndarray) -> tuple[int, int, tuple[int, int], tuple[int, int]]:
    ids, counts = np.unique(labels[labels > 0], return_counts=True)
    a, b = (int(i) for i in ids[np.argsort(-counts)][:2])
    ca = tuple(int(v) for v in np.argwhere(labels == a).mean(axis=0).round())
    cb = tuple(int(v) for v in np.argwhere(labels == b).mean(axis=0).round())
    assert labels[ca] == a and labels[cb] == b
    return a, b, ca, cb


# ----------------------------------------------------------------------------- tests
def test_paint_erase_merge_split_undo_redo_save_reopen(annotating, window, qtbot) -> None:
    ctl, mask, folder = annotating
    image_id = window.current_image
    assert ctl.start("prediction")
    ed = ctl.editor
    assert np.array_equal(ed.labels, mask)
    assert ctl.canvas.tile_count() == 1 and not window.viewer.overlay_item.isVisible()

    # brush: a stroke on background makes a new cell along the stroke
    ctl.panel.tool_buttons["brush"].click()
    assert ctl.canvas.tool == "brush"
    ctl.panel.size.setValue(3)
    key(window, Qt.Key.Key_BracketRight)
    assert ctl.panel.size.value() == 4
    key(window, Qt.Key.Key_BracketLeft)
    assert ctl.panel.size.value() == 3
    r, c = _background_row(mask)
    new_id = int(mask.max()) + 1
    drag(window, [(r, c), (r, c + 25)])
    assert (ed.labels[r, c + 2 : c + 23] == new_id).all()
    assert (ed.labels[r - 2, c + 5 : c + 20] == new_id).all() and ed.labels[r - 6, c + 10] == 0
    assert ed.undo_names() == ["paint"]

    # eraser across a real cell
    a, b, ca, cb = _two_cells(mask)
    key(window, Qt.Key.Key_E)
    assert ctl.canvas.tool == "eraser"
    drag(window, [(ca[0], ca[1] - 3), (ca[0], ca[1] + 3)])
    assert ed.labels[ca] == 0 and ed.labels[ca[0] - 6, ca[1]] in (0, a)

    # merge: click cell b then cell a -> a is gone into b
    key(window, Qt.Key.Key_M)
    pa = tuple(int(v) for v in np.argwhere(ed.labels == a)[len(np.argwhere(ed.labels == a)) // 3])
    n_a, n_b = (ed.labels == a).sum(), (ed.labels == b).sum()
    click(window, *cb)
    click(window, *pa)
    assert (ed.labels == a).sum() == 0 and (ed.labels == b).sum() >= n_a + n_b

    # split: a line across the new stroke cell cuts it in two
    key(window, Qt.Key.Key_S)
    drag(window, [(r - 8, c + 12), (r + 8, c + 12)])
    pieces = [i for i in np.unique(ed.labels[r - 5 : r + 6, c - 5 : c + 30]) if i]
    assert len(pieces) == 2 and new_id in pieces
    assert ed.undo_names() == ["paint", "erase", "merge", "split"]

    # undo everything with Ctrl+Z, redo with Ctrl+Shift+Z
    after = ed.labels.copy()
    for _ in range(4):
        key(window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert np.array_equal(ed.labels, mask)
    for _ in range(4):
        key(window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    assert np.array_equal(ed.labels, after)

    # saved by itself within a second of the last change
    with qtbot.waitSignal(ctl.saved, timeout=5000):
        pass
    project = window.session.project
    assert np.array_equal(project.load_annotation(image_id), after)
    assert project.get_image(image_id).status == "annotated"
    # the viewer's hover reads the edited labels
    assert window.viewer.cell_at(r, c + 5) in pieces

    # reopen the project: the annotation comes back
    window.session.close_project()
    assert window.open_project(folder)
    qtbot.waitUntil(lambda: window.current_image == image_id and window.viewer.has_image(), timeout=10_000)
    assert ctl.start("saved")
    assert np.array_equal(ctl.editor.labels, after)


def test_polygon_delete_import_mark_and_image_switch(annotating, window, qtbot, tmp_path) -> None:
    ctl, mask, _folder = annotating
    first = window.current_image
    assert ctl.start("empty")
    ed = ctl.editor
    assert ed.labels.max() == 0
    # polygon by clicks, closed with a double-click
    key(window, Qt.Key.Key_P)
    corners = [(20, 20), (20, 50), (50, 50)]
    for p in corners:
        click(window, *p)
    click(window, 50, 20, double=True)
    assert ed.labels[35, 35] == 1 and ed.labels[22, 22] == 1 and ed.labels[60, 60] == 0
    window.viewer.overlay_box.setCurrentText("Outline")  # new cells: only the annotation layer redraws
    assert ctl.canvas.mode == "outline"
    window.viewer.overlay_box.setCurrentText("Fill")
    # delete it by a click
    key(window, Qt.Key.Key_X)
    click(window, 35, 35)
    assert ed.labels.max() == 0
    # import a Cellpose _seg.npy (read safely) -> undoable replacement
    seg = tmp_path / "x_seg.npy"
    np.save(seg, {"masks": mask.astype(np.uint16), "filename": "x.tif"})
    assert ctl.start("import", path=seg)
    assert np.array_equal(ed.labels > 0, mask > 0)
    ctl.mark_annotated()
    project = window.session.project
    assert project.get_image(first).status == "reviewed"
    assert np.array_equal(project.load_annotation(first) > 0, mask > 0)
    # switching image saves and continues annotating the next one (from its prediction: none -> empty)
    other = next(i for i in window.project_panel.image_ids() if i != first)
    key(window, Qt.Key.Key_B)
    drag(window, [(5, 5), (5, 30)])
    window.show_image(other)
    qtbot.waitUntil(lambda: ctl.image_id == other, timeout=5000)
    assert project.load_annotation(first)[5, 15] > 0
    assert ctl.editor.labels.max() == 0
    assert project.load_annotation(other) is None  # nothing saved until something is edited
    ctl.stop()
    assert ctl.editor is None and window.viewer.overlay_item.isVisible()


@pytest.mark.slow
def test_large_image_stroke_updates_one_tile(window, qtbot, tmp_path) -> None:
    """A stroke on a 4k x 4k image with thousands of cells redraws only the tiles it touches."""
    import time

    import tifffile

    from efficell_app.project import Project

    h = w = 4096
    img = (np.random.default_rng(0).random((h, w)) * 200).astype(np.uint8)
    labels = np.zeros((h, w), np.int32)
    k = 1
    for y in range(4, h - 20, 24):
        for x in range(4, w - 20, 24):
            labels[y : y + 18, x : x + 18] = k
            k += 1
    path = tmp_path / "big" / "big.tif"
    path.parent.mkdir()
    tifffile.imwrite(path, img)
    with Project.create(tmp_path / "bigproj") as p:
        iid = p.add_folder(path.parent, "big").added[0]
        p.record_result(iid, labels, {}, {})
    ctl = window.annotation.controller
    window.session.request_cells = lambda ids: None  # measuring 28,000 cells is not what this test is about
    assert window.open_project(tmp_path / "bigproj")
    qtbot.waitUntil(lambda: window.viewer.has_image(), timeout=20_000)
    t_open = time.perf_counter()
    assert ctl.start("prediction")
    t_open = time.perf_counter() - t_open
    assert ctl.canvas.tile_count() == 64
    renders = []
    for item in ctl.canvas._tiles.values():
        orig = item.setImage
        item.setImage = lambda *a, _o=orig, **kw: (renders.append(1), _o(*a, **kw))[1]
    ctl.set_tool("brush")
    ed = ctl.editor
    t0 = time.perf_counter()
    for i in range(10):
        ctl._stroke_started(2000.0, 2000.0 + i)
        for j in range(1, 15):
            ctl._stroke_moved(2000.0 + j, 2000.0 + i + j)
        ctl._stroke_finished([])
    per_stroke = (time.perf_counter() - t0) / 10
    assert len(renders) <= 15 * 10 * 1  # one tile per segment
    assert per_stroke < 1.0, per_stroke
    print(f"4k x 4k, {k - 1} cells: start annotating {t_open:.2f} s, one 15-segment stroke {per_stroke * 1000:.0f} ms")
    assert ed.undo_names() == ["paint"] * 10
    ctl.stop()
