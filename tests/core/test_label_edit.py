"""LabelEditor: every tool on a real mask, undo/redo to the start, crops only, importers."""

from __future__ import annotations

import pickle
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from efficell_app.core.errors import InputError
from efficell_app.core.images import read_mask
from efficell_app.core.label_edit import LabelEditor, densify
from efficell_app.core.mask_import import (
    import_masks,
    read_cellpose_seg,
    read_imagej_rois,
)


@pytest.fixture()
def mask(dsb_pairs) -> np.ndarray:
    _img, m = dsb_pairs[1]
    return read_mask(m)


def test_brush_paints_background_not_neighbours_and_undo(mask: np.ndarray) -> None:
    ed = LabelEditor(mask)
    orig = mask.copy()
    a = int(ed.label_at(*np.argwhere(mask > 0)[0]))
    changed = ed.brush(a, [(5, 5), (5, 40)], radius=3)
    assert changed
    stroke = densify([(5, 5), (5, 40)], 1.0)
    for y, x in stroke.astype(int):
        assert ed.labels[y, x] == a or orig[y, x] not in (0, a)
    assert np.array_equal(ed.labels[orig > 0][orig[orig > 0] != a], orig[orig > 0][orig[orig > 0] != a])
    assert ed.changes == 1 and ed.can_undo
    ed.undo()
    assert np.array_equal(ed.labels, orig) and ed.can_redo
    ed.redo()
    assert ed.labels[5, 20] == a


def test_overwrite_brush_and_erase(mask: np.ndarray) -> None:
    ed = LabelEditor(mask)
    y, x = np.argwhere(mask > 0)[len(np.argwhere(mask > 0)) // 2]
    other = ed.new_id()
    ed.brush(other, [(y, x)], radius=2, overwrite=True)
    assert ed.labels[y, x] == other
    ed.erase([(y, x)], radius=2)
    assert ed.labels[y, x] == 0
    assert ed.erase([(-50, -50)], radius=2) is False  # off the image: nothing happens


def test_fill_hole_and_relabel_cell(mask: np.ndarray) -> None:
    ed = LabelEditor(mask)
    cell = int(np.bincount(mask.ravel())[1:].argmax()) + 1
    ys, xs = np.nonzero(mask == cell)
    cy, cx = int(ys.mean()), int(xs.mean())
    # punch a hole and fill it back
    ed.labels[cy - 1 : cy + 2, cx - 1 : cx + 2]  # view stays current
    ed.erase([(cy, cx)], radius=1)
    assert ed.labels[cy, cx] == 0
    assert ed.fill(cy, cx, cell)
    assert (ed.labels[cy - 1 : cy + 2, cx - 1 : cx + 2] == cell).all()
    # fill on a cell relabels it
    new = ed.new_id()
    assert ed.fill(cy, cx, new)
    assert (ed.labels == cell).sum() == 0 and (ed.labels == new).sum() == (mask == cell).sum()


def test_polygon_freehand_delete_merge_split_full_undo(mask: np.ndarray) -> None:
    ed = LabelEditor(mask)
    orig = mask.copy()
    free = np.argwhere(mask == 0)
    # a polygon in an empty corner
    empty = np.zeros_like(mask, bool)
    corner = None
    for y0 in range(0, mask.shape[0] - 20, 10):
        for x0 in range(0, mask.shape[1] - 20, 10):
            if (mask[y0 : y0 + 20, x0 : x0 + 20] == 0).all():
                corner = (y0, x0)
                break
        if corner:
            break
    assert corner is not None and free.size
    y0, x0 = corner
    nid = ed.add_polygon([(y0 + 2, x0 + 2), (y0 + 2, x0 + 17), (y0 + 17, x0 + 17), (y0 + 17, x0 + 2)])
    assert nid == mask.max() + 1
    assert (ed.labels[y0 + 3 : y0 + 17, x0 + 3 : x0 + 17] == nid).all()
    empty[y0 + 2 : y0 + 18, x0 + 2 : x0 + 18] = True
    assert (ed.labels[~empty] == orig[~empty]).all()
    circle = [(y0 + 10 + 5 * np.sin(t), x0 + 10 + 5 * np.cos(t)) for t in np.linspace(0, 2 * np.pi, 30)]
    assert ed.add_freehand(circle) == 0  # fully covered by the polygon cell: nothing new
    assert ed.delete_cell(nid) and (ed.labels == nid).sum() == 0
    fid = ed.add_freehand(circle)
    assert fid == nid + 1 and 60 < (ed.labels == fid).sum() < 120
    # merge two real cells
    ids = [i for i in np.unique(mask) if i]
    a, b = int(ids[0]), int(ids[1])
    na, nb = (mask == a).sum(), (mask == b).sum()
    assert ed.merge(a, b) == a
    assert (ed.labels == b).sum() == 0 and (ed.labels == a).sum() >= na + nb
    # split the biggest cell with a line through its middle
    big = int(np.bincount(mask.ravel())[1:].argmax()) + 1
    ys, xs = np.nonzero(mask == big)
    cy = int(ys.mean())
    n_big = (ed.labels == big).sum()
    pieces = ed.split(big, [(cy, xs.min() - 2), (cy, xs.max() + 2)])
    assert len(pieces) >= 2 and pieces[0] == big
    assert sum((ed.labels == p).sum() for p in pieces) == n_big  # no pixel lost
    assert ed.split(big, [(cy, xs.min() - 2), (cy, xs.min() + 1)]) == []  # does not cross: no change
    n = len(ed.undo_names())
    assert ed.undo_names() == ["new cell", "delete", "new cell", "merge", "split"]
    for _ in range(n):
        ed.undo()
    assert np.array_equal(ed.labels, orig) and not ed.can_undo
    for _ in range(n):
        ed.redo()
    assert (ed.labels == b).sum() == 0 and len(np.unique(ed.labels)) == len(np.unique(orig)) + len(pieces) - 1


def test_new_edit_clears_redo_and_ids_not_reused(mask: np.ndarray) -> None:
    ed = LabelEditor(mask)
    nid = ed.add_polygon([(1, 1), (1, 6), (6, 6), (6, 1)], overwrite=True)
    ed.undo()
    assert ed.can_redo
    nid2 = ed.add_polygon([(1, 1), (1, 6), (6, 6), (6, 1)], overwrite=True)
    assert not ed.can_redo and nid2 == nid + 1  # an id once given is not reused while the image is open


def test_listeners_get_tight_boxes(mask: np.ndarray) -> None:
    ed = LabelEditor(mask)
    boxes = []
    ed.listeners.append(boxes.append)
    ed.brush(ed.new_id(), [(30, 30)], radius=2, overwrite=True)
    assert boxes == [(28, 33, 28, 33)]


def test_large_image_stroke_is_local_and_fast() -> None:
    """4k x 4k with ~10,000 cells: strokes, fills and merges touch crops only.

    Locality is checked exactly (every undo step covers a small box); the time limits are
    loose because the test machine is shared (typically ~10 ms per brush + merge here).
    """
    rng = np.random.default_rng(0)
    h = w = 4096
    labels = np.zeros((h, w), np.int32)
    k = 1
    for y in range(10, h - 30, 40):
        for x in range(10, w - 30, 40):
            labels[y : y + 28 + rng.integers(0, 3), x : x + 28] = k
            k += 1
    t0 = time.perf_counter()
    ed = LabelEditor(labels, copy=False)
    t_open = time.perf_counter() - t0
    times = []
    for i in range(20):
        y, x = 100 + i * 180, 200 + i * 150
        t = time.perf_counter()
        ed.brush(int(labels[y + 5, x + 5]) or ed.new_id(), [(y, x), (y + 30, x + 40), (y + 60, x + 20)], radius=6)
        ed.merge(int(labels[y + 15, x + 15]) or 1, int(labels[y + 15, x + 55]) or 2)
        times.append(time.perf_counter() - t)
    t = time.perf_counter()
    ed.split(int(labels[2015, 2015]), [(2000, 2000), (2040, 2040)])
    ed.fill(2035, 2035, ed.new_id())
    for _ in range(len(ed.undo_names())):
        ed.undo()
    t_rest = time.perf_counter() - t
    assert ed.history_bytes < 5_000_000
    assert not ed.can_undo and all(
        (e.box[1] - e.box[0]) * (e.box[3] - e.box[2]) < 200 * 200 for e in ed._redo)
    assert np.median(times) < 0.5 and max(times) < 2.0, times
    assert t_rest < 5.0 and t_open < 10.0


# ----------------------------------------------------------------------------- importers


def test_import_label_tiff_and_png(dsb_pairs, tmp_path: Path) -> None:
    from PIL import Image

    m = read_mask(dsb_pairs[0][1])
    got = import_masks(dsb_pairs[0][1], m.shape)
    assert got.dtype == np.int32 and got.max() == len(np.unique(m)) - 1
    png = tmp_path / "x_masks.png"
    Image.fromarray(m.astype(np.uint16)).save(png)
    assert np.array_equal(import_masks(png, m.shape) > 0, m > 0)
    with pytest.raises(Exception, match="but its image is"):
        import_masks(png, (10, 10))


def test_cellpose_seg_read_safely(mask: np.ndarray, tmp_path: Path) -> None:
    p = tmp_path / "a_seg.npy"
    np.save(p, {"masks": mask.astype(np.uint16), "outlines": mask > 0, "filename": "a.tif", "diameter": 17.0,
                "chan_choose": [0, 0], "ismanual": np.zeros(3, bool), "est_diam": np.float64(3.0)})
    got = read_cellpose_seg(p, mask.shape)
    assert np.array_equal(got > 0, mask > 0) and got.max() == len(np.unique(mask)) - 1

    class Evil:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    bad = tmp_path / "evil_seg.npy"
    np.save(bad, np.array({"masks": mask, "x": Evil()}, dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="not loaded for safety: refusing to load '[a-z]+.open'"):
        read_cellpose_seg(bad)
    assert not (tmp_path / "pwned").exists()
    plain = tmp_path / "plain.npy"
    np.save(plain, mask)
    assert np.array_equal(read_cellpose_seg(plain) > 0, mask > 0)
    junk = tmp_path / "junk_seg.npy"
    junk.write_bytes(b"\x93NUMPY\x01\x00" + (20).to_bytes(2, "little") + b"{'descr': '|O', }   " + pickle.dumps([1, 2]))
    with pytest.raises(InputError, match="no 'masks' entry"):
        read_cellpose_seg(junk)


def test_imagej_roi_zip_round_trip(mask: np.ndarray, tmp_path: Path) -> None:
    from efficell_app.core.export import write_imagej_rois

    z = write_imagej_rois(mask, tmp_path / "rois.zip")
    got = read_imagej_rois(z, mask.shape)
    n_true = len(np.unique(mask)) - 1
    assert got.max() == n_true
    inter = ((got > 0) & (mask > 0)).sum() / ((got > 0) | (mask > 0)).sum()
    assert inter > 0.85
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w"):
        pass
    with pytest.raises(InputError):
        read_imagej_rois(empty, mask.shape)
    notzip = tmp_path / "bad.zip"
    notzip.write_bytes(b"hello")
    with pytest.raises(InputError, match="not an ImageJ ROI file"):
        read_imagej_rois(notzip, mask.shape)


def test_group_makes_one_undo_step(mask: np.ndarray) -> None:
    ed = LabelEditor(mask)
    orig = mask.copy()
    nid = ed.new_id()
    ed.begin_group()
    for x in range(5, 60, 5):
        ed.brush(nid, [(40, x - 5), (40, x)], radius=2, overwrite=True)
    assert ed.end_group("paint")
    assert ed.undo_names() == ["paint"]
    ed.undo()
    assert np.array_equal(ed.labels, orig)
    ed.redo()
    assert (ed.labels[40, 0:56] == nid).all()
