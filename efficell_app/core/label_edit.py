"""Editing an instance label image: brush, eraser, fill, new cells, delete, merge, split, undo/redo.

Every operation works on the bounding box of what it touches (a crop), never on the whole
image, so a stroke on a 4k x 4k image with thousands of cells costs about as much as on a
small one. Each change is kept as a diff (box + old and new crop, trimmed to the pixels that
really changed), which gives undo/redo of any depth at a small memory cost.

Coordinates are ``(row, col)`` = ``(y, x)`` in image pixels throughout.

Importers of existing masks live in :mod:`efficell_app.core.mask_import`.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

Box = tuple[int, int, int, int]  # r0, r1, c0, c1 (half-open)
Points = Sequence[tuple[float, float]] | np.ndarray
FILL_WINDOW = 512  # first window of a background flood fill (grown while the fill touches its edge)


@dataclass(frozen=True)
class Edit:
    """One undoable change: the box it touched and the crop before and after."""

    name: str
    box: Box
    before: np.ndarray
    after: np.ndarray

    @property
    def nbytes(self) -> int:
        return int(self.before.nbytes + self.after.nbytes)


def _disk(radius: int) -> np.ndarray:
    r = int(radius)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return (yy * yy + xx * xx) <= r * r + r * 0.8  # slightly rounder than the strict disk for small radii


def _as_points(points: Points) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if pts.size == 0:
        raise ValueError("no points given")
    if not np.all(np.isfinite(pts)):
        raise ValueError("points must be finite numbers")
    return pts


def densify(points: Points, step: float) -> np.ndarray:
    """Points along the polyline through ``points`` at most ``step`` apart (the points included)."""
    pts = _as_points(points)
    if len(pts) == 1:
        return pts
    out = [pts[:1]]
    for a, b in itertools.pairwise(pts):
        n = max(1, int(np.ceil(np.hypot(*(b - a)) / max(step, 1e-6))))
        t = np.arange(1, n + 1, dtype=np.float64)[:, None] / n
        out.append(a + (b - a) * t)
    return np.concatenate(out)


class LabelEditor:
    """An ``int32`` label image (0 = background) with editing operations and undo/redo.

    ``labels`` is edited in place (views of it stay current). ``changes`` counts every
    change (edits, undos, redos) so an autosaver can tell when there is something new;
    ``listeners`` are called with the box of each change (for redrawing just that part).
    """

    def __init__(self, labels: np.ndarray, copy: bool = True) -> None:
        from scipy import ndimage

        arr = np.asarray(labels)
        if arr.ndim != 2:
            raise ValueError(f"a label image must be 2-D, got shape {arr.shape}")
        if arr.dtype.kind not in "uib":
            raise ValueError(f"a label image holds whole numbers, got {arr.dtype}")
        if arr.size and int(arr.min()) < 0:
            raise ValueError("a label image cannot hold negative labels")
        self.labels = np.array(arr, dtype=np.int32, copy=True) if copy or arr.dtype != np.int32 else arr
        self.shape: tuple[int, int] = (int(arr.shape[0]), int(arr.shape[1]))
        self._boxes: dict[int, list[int]] = {}
        for i, sl in enumerate(ndimage.find_objects(self.labels)):
            if sl is not None:
                self._boxes[i + 1] = [sl[0].start, sl[0].stop, sl[1].start, sl[1].stop]
        self._next = (max(self._boxes) + 1) if self._boxes else 1
        self._undo: list[Edit] = []
        self._redo: list[Edit] = []
        self._group_start: int | None = None
        self.changes = 0
        self.listeners: list[Callable[[Box], None]] = []

    # ------------------------------------------------------------------ state
    @property
    def next_id(self) -> int:
        """The id the next new cell gets (ids are never reused while the image is open)."""
        return self._next

    def new_id(self) -> int:
        nid = self._next
        self._next += 1
        return nid

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    @property
    def history_bytes(self) -> int:
        return sum(e.nbytes for e in self._undo) + sum(e.nbytes for e in self._redo)

    def undo_names(self) -> list[str]:
        return [e.name for e in self._undo]

    def box_of(self, label: int) -> Box | None:
        """A box holding every pixel of ``label`` (may be larger than the cell), or None."""
        b = self._boxes.get(int(label))
        return None if b is None else (b[0], b[1], b[2], b[3])

    def cell_ids(self) -> np.ndarray:
        """Ids present in the image (a full pass; for tests and summaries)."""
        ids = np.unique(self.labels)
        return ids[ids > 0]

    def n_cells(self) -> int:
        return int(self.cell_ids().size)

    def label_at(self, y: float, x: float) -> int:
        r, c = int(np.floor(y)), int(np.floor(x))
        if 0 <= r < self.shape[0] and 0 <= c < self.shape[1]:
            return int(self.labels[r, c])
        return 0

    # ------------------------------------------------------------------ core mechanics
    def _clip(self, r0: float, r1: float, c0: float, c1: float) -> Box | None:
        h, w = self.shape
        b = (max(0, int(np.floor(r0))), min(h, int(np.ceil(r1))), max(0, int(np.floor(c0))), min(w, int(np.ceil(c1))))
        return b if b[0] < b[1] and b[2] < b[3] else None

    def _commit(self, name: str, box: Box, new: np.ndarray) -> bool:
        """Write ``new`` into ``box`` and record the change (trimmed to changed pixels)."""
        r0, r1, c0, c1 = box
        old = self.labels[r0:r1, c0:c1]
        diff = old != new
        if not diff.any():
            return False
        rows = np.flatnonzero(diff.any(axis=1))
        cols = np.flatnonzero(diff.any(axis=0))
        tr0, tr1, tc0, tc1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        tight = (r0 + tr0, r0 + tr1, c0 + tc0, c0 + tc1)
        before = old[tr0:tr1, tc0:tc1].copy()
        after = np.ascontiguousarray(new[tr0:tr1, tc0:tc1], dtype=np.int32)
        self._undo.append(Edit(name, tight, before, after))
        self._redo.clear()
        self._apply(tight, after)
        return True

    def _apply(self, box: Box, crop: np.ndarray) -> None:
        r0, r1, c0, c1 = box
        self.labels[r0:r1, c0:c1] = crop
        ids = np.unique(crop)
        for lab in ids[ids > 0].tolist():
            b = self._boxes.get(lab)
            if b is None:
                self._boxes[lab] = [r0, r1, c0, c1]
            else:
                b[0], b[1], b[2], b[3] = min(b[0], r0), max(b[1], r1), min(b[2], c0), max(b[3], c1)
        if ids.size and int(ids[-1]) >= self._next:
            self._next = int(ids[-1]) + 1
        self.changes += 1
        for fn in list(self.listeners):
            fn(box)

    def begin_group(self) -> None:
        """Start collecting edits into one undo step (a whole brush stroke made of many segments)."""
        self._group_start = len(self._undo)

    def end_group(self, name: str | None = None) -> bool:
        """Fold the edits since :meth:`begin_group` into one undo step; returns whether any happened."""
        start = self._group_start
        self._group_start = None
        if start is None or len(self._undo) - start < 1:
            return False
        group = self._undo[start:]
        if len(group) == 1 and name is None:
            return True
        r0 = min(e.box[0] for e in group)
        r1 = max(e.box[1] for e in group)
        c0 = min(e.box[2] for e in group)
        c1 = max(e.box[3] for e in group)
        after = self.labels[r0:r1, c0:c1].copy()
        before = after.copy()
        for e in reversed(group):
            b = e.box
            before[b[0] - r0 : b[1] - r0, b[2] - c0 : b[3] - c0] = e.before
        del self._undo[start:]
        self._undo.append(Edit(name or group[0].name, (r0, r1, c0, c1), before, after))
        return True

    def undo(self) -> Box | None:
        """Revert the last change; returns its box (None when there is nothing to undo)."""
        if not self._undo:
            return None
        e = self._undo.pop()
        self._redo.append(e)
        self._apply(e.box, e.before)
        return e.box

    def redo(self) -> Box | None:
        if not self._redo:
            return None
        e = self._redo.pop()
        self._undo.append(e)
        self._apply(e.box, e.after)
        return e.box

    # ------------------------------------------------------------------ painting
    def _stroke_mask(self, points: Points, radius: float) -> tuple[Box, np.ndarray] | None:
        r = max(0, round(radius))
        pts = densify(points, max(0.5, r * 0.5))
        box = self._clip(pts[:, 0].min() - r, pts[:, 0].max() + r + 1, pts[:, 1].min() - r, pts[:, 1].max() + r + 1)
        if box is None:
            return None
        r0, r1, c0, c1 = box
        mask = np.zeros((r1 - r0, c1 - c0), dtype=bool)
        disk = _disk(r)
        centres = np.unique(np.floor(pts).astype(np.int64), axis=0)
        for cy, cx in centres.tolist():
            y0, x0 = cy - r - r0, cx - r - c0
            ys, xs = max(0, y0), max(0, x0)
            ye, xe = min(mask.shape[0], y0 + 2 * r + 1), min(mask.shape[1], x0 + 2 * r + 1)
            if ys < ye and xs < xe:
                mask[ys:ye, xs:xe] |= disk[ys - y0 : ye - y0, xs - x0 : xe - x0]
        return box, mask

    def brush(self, label: int, points: Points, radius: float, overwrite: bool = False) -> bool:
        """Paint ``label`` along the stroke through ``points`` with a round brush.

        By default only background and the cell itself are painted (neighbours are not
        eaten); ``overwrite`` paints over other cells too. Returns whether anything changed.
        """
        label = int(label)
        if label < 0:
            raise ValueError("labels are 0 (background) or positive")
        found = self._stroke_mask(points, radius)
        if found is None:
            return False
        box, mask = found
        r0, r1, c0, c1 = box
        new = self.labels[r0:r1, c0:c1].copy()
        if not overwrite and label > 0:
            mask &= (new == 0) | (new == label)
        new[mask] = label
        return self._commit("paint" if label else "erase", box, new)

    def erase(self, points: Points, radius: float, only: int | None = None) -> bool:
        """Set pixels under the stroke to background (only those of cell ``only`` if given)."""
        found = self._stroke_mask(points, radius)
        if found is None:
            return False
        box, mask = found
        r0, r1, c0, c1 = box
        new = self.labels[r0:r1, c0:c1].copy()
        if only is not None:
            mask &= new == int(only)
        new[mask] = 0
        return self._commit("erase", box, new)

    def fill(self, y: float, x: float, label: int) -> bool:
        """Flood-fill the connected region (4-connected, same value) under ``(y, x)`` with ``label``.

        On a cell this relabels that piece; on background it fills the background region
        (e.g. a hole inside a cell). A background region is searched in a window that grows
        only while the fill reaches its edge, so filling a hole stays a local operation.
        """
        from skimage.segmentation import flood

        r, c = int(np.floor(y)), int(np.floor(x))
        h, w = self.shape
        if not (0 <= r < h and 0 <= c < w):
            return False
        value, label = int(self.labels[r, c]), int(label)
        if value == label:
            return False
        if value > 0:
            box = self.box_of(value) or (0, h, 0, w)
            r0, r1, c0, c1 = box
            crop = self.labels[r0:r1, c0:c1]
            region = flood(crop == value, (r - r0, c - c0), connectivity=1)
        else:
            half = FILL_WINDOW // 2
            while True:
                box = self._clip(r - half, r + half, c - half, c + half)
                assert box is not None
                r0, r1, c0, c1 = box
                crop = self.labels[r0:r1, c0:c1]
                region = flood(crop == 0, (r - r0, c - c0), connectivity=1)
                touches = ((r0 > 0 and region[0].any()) or (r1 < h and region[-1].any())
                           or (c0 > 0 and region[:, 0].any()) or (c1 < w and region[:, -1].any()))
                if not touches or box == (0, h, 0, w):
                    break
                half *= 2
        new = crop.copy()
        new[region] = label
        return self._commit("fill", box, new)

    # ------------------------------------------------------------------ cells
    def add_polygon(self, vertices: Points, overwrite: bool = False) -> int:
        """Draw a new cell inside the closed polygon ``vertices``; returns its id (0: nothing drawn).

        The outline itself belongs to the cell. Other cells are kept unless ``overwrite``.
        """
        from skimage.draw import line as draw_line
        from skimage.draw import polygon

        pts = _as_points(vertices)
        box = self._clip(pts[:, 0].min(), pts[:, 0].max() + 1, pts[:, 1].min(), pts[:, 1].max() + 1)
        if box is None:
            return 0
        r0, r1, c0, c1 = box
        shape = (r1 - r0, c1 - c0)
        rr, cc = polygon(pts[:, 0] - r0 + 0.5, pts[:, 1] - c0 + 0.5, shape)  # pixel centres inside
        mask = np.zeros(shape, dtype=bool)
        mask[rr, cc] = True
        ring = np.floor(pts).astype(np.int64) - (r0, c0)
        for (ya, xa), (yb, xb) in zip(ring.tolist(), np.roll(ring, -1, axis=0).tolist()):
            pr, pc = draw_line(ya, xa, yb, xb)
            ok = (pr >= 0) & (pr < shape[0]) & (pc >= 0) & (pc < shape[1])
            mask[pr[ok], pc[ok]] = True
        new = self.labels[r0:r1, c0:c1].copy()
        if not overwrite:
            mask &= new == 0
        if not mask.any():
            return 0
        nid = self._next
        new[mask] = nid
        self._commit("new cell", box, new)
        return nid

    def add_freehand(self, points: Points, overwrite: bool = False) -> int:
        """A new cell from a freehand outline (closed automatically); returns its id (0: nothing)."""
        pts = densify(points, 1.0)
        return self.add_polygon(pts, overwrite=overwrite)

    def delete_cell(self, label: int) -> bool:
        label = int(label)
        box = self.box_of(label)
        if label <= 0 or box is None:
            return False
        r0, r1, c0, c1 = box
        new = self.labels[r0:r1, c0:c1].copy()
        new[new == label] = 0
        return self._commit("delete", box, new)

    def merge(self, a: int, b: int, close_gap: bool = True) -> int:
        """Merge cell ``b`` into cell ``a`` (``a`` keeps its id); returns ``a`` (0: nothing merged).

        With ``close_gap`` background pixels lying between the two cells (touching both within
        one pixel) join the merged cell, so the boundary line between them disappears.
        """
        from scipy import ndimage

        a, b = int(a), int(b)
        ba, bb = self.box_of(a), self.box_of(b)
        if a <= 0 or b <= 0 or a == b or ba is None or bb is None:
            return 0
        box = self._clip(min(ba[0], bb[0]) - 1, max(ba[1], bb[1]) + 1, min(ba[2], bb[2]) - 1, max(ba[3], bb[3]) + 1)
        assert box is not None
        r0, r1, c0, c1 = box
        new = self.labels[r0:r1, c0:c1].copy()
        mb = new == b
        if not mb.any() or not (new == a).any():
            return 0
        if close_gap:
            st = np.ones((3, 3), dtype=bool)
            gap = (new == 0) & ndimage.binary_dilation(new == a, st) & ndimage.binary_dilation(mb, st)
            new[gap] = a
        new[mb] = a
        self._commit("merge", box, new)
        return a

    def split(self, label: int, line: Points, min_piece: int = 3) -> list[int]:
        """Cut cell ``label`` along the polyline ``line``; returns the ids of the pieces.

        The largest piece keeps ``label``; the others get new ids. Pixels on the cut line and
        pieces smaller than ``min_piece`` pixels go to the nearest piece, so no pixel of the
        cell is lost. Returns ``[]`` (and changes nothing) when the line does not cut the cell
        in two: it must cross the cell from one side to the other.
        """
        from scipy import ndimage
        from skimage.draw import line as draw_line

        label = int(label)
        box = self.box_of(label)
        if label <= 0 or box is None:
            return []
        r0, r1, c0, c1 = box
        new = self.labels[r0:r1, c0:c1].copy()
        cell = new == label
        pts = np.floor(_as_points(line)).astype(np.int64)
        cut = np.zeros(cell.shape, dtype=bool)
        if len(pts) == 1:
            return []
        for (ya, xa), (yb, xb) in zip(pts[:-1].tolist(), pts[1:].tolist()):
            rr, cc = draw_line(ya - r0, xa - c0, yb - r0, xb - c0)
            ok = (rr >= 0) & (rr < cell.shape[0]) & (cc >= 0) & (cc < cell.shape[1])
            cut[rr[ok], cc[ok]] = True
        pieces, n = ndimage.label(cell & ~cut)  # 4-connectivity: a 1-px line separates
        if n < 2:
            return []
        sizes = np.bincount(pieces.ravel(), minlength=n + 1)
        sizes[0] = 0
        big = [i for i in range(1, n + 1) if sizes[i] >= min_piece]
        if len(big) < 2:
            return []
        keep = np.isin(pieces, big)
        # every cell pixel not in a kept piece (line, tiny fragments) joins the nearest kept piece
        _, (iy, ix) = ndimage.distance_transform_edt(~keep, return_indices=True)
        nearest = pieces[iy, ix]
        order = sorted(big, key=lambda i: -sizes[i])
        ids = [label] + [self.new_id() for _ in order[1:]]
        lut = np.zeros(n + 1, dtype=np.int32)
        for piece, nid in zip(order, ids):
            lut[piece] = nid
        new[cell] = lut[nearest[cell]]
        self._commit("split", box, new)
        return ids

    def set_labels(self, labels: np.ndarray, name: str = "replace") -> bool:
        """Replace the whole label image (undoable; stored as the box of what differs)."""
        arr = np.asarray(labels)
        if arr.shape != self.shape:
            raise ValueError(f"labels are {arr.shape[0]}x{arr.shape[1]} but the image is {self.shape[0]}x{self.shape[1]}")
        if arr.size and int(arr.min()) < 0:
            raise ValueError("a label image cannot hold negative labels")
        return self._commit(name, (0, self.shape[0], 0, self.shape[1]), arr.astype(np.int32, copy=False))

    def relabel(self) -> bool:
        """Renumber cells 1..n in order (a full pass; undoable). Ids of new cells restart after n."""
        from skimage.segmentation import relabel_sequential

        new = relabel_sequential(self.labels)[0].astype(np.int32)
        changed = self._commit("renumber", (0, self.shape[0], 0, self.shape[1]), new)
        if changed:
            self._boxes = {}
            from scipy import ndimage

            for i, sl in enumerate(ndimage.find_objects(self.labels)):
                if sl is not None:
                    self._boxes[i + 1] = [sl[0].start, sl[0].stop, sl[1].start, sl[1].stop]
            self._next = (max(self._boxes) + 1) if self._boxes else 1
        return changed

    def majority_label(self, points: Points) -> int:
        """The cell most of the polyline's pixels fall on (0 when it crosses only background)."""
        pts = densify(points, 1.0)
        r = np.clip(np.floor(pts[:, 0]).astype(np.int64), 0, self.shape[0] - 1)
        c = np.clip(np.floor(pts[:, 1]).astype(np.int64), 0, self.shape[1] - 1)
        vals = self.labels[r, c]
        vals = vals[vals > 0]
        if vals.size == 0:
            return 0
        ids, counts = np.unique(vals, return_counts=True)
        return int(ids[np.argmax(counts)])
