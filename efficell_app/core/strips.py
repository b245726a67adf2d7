"""Segmentation of large images in horizontal strips, with bounded memory.

The model-scale image, its dense maps and its watershed are never held whole. Three
streaming stages, top to bottom:

1. :class:`ModelInput` makes the normalised 3-channel model input a block of rows at a
   time, with percentiles computed on the whole image (as :func:`images.model_input`).
2. :func:`stream_dense` runs the :class:`DensePredictor` over the *same* tile grid and
   blend as :meth:`DensePredictor.predict` and yields each block of rows as soon as no
   further tile touches it, so the values are bit-identical to the unstriped prediction.
3. :class:`StripLabeller` cuts the rows into strips (a *core* of rows plus a *margin*
   above and below), runs :func:`dense_to_labels` on each strip window and keeps a cell
   from the strip whose core holds the cell's top-most row. A cell that reaches the
   window's bottom edge stays *open* and the next strip continues it under the same
   label, so a cell crossing a strip border is one label.

Why the result equals the unstriped one: the watershed of a foreground cluster (8-connected;
hole filling looks at diagonal neighbours) depends on that cluster alone. When every
cluster is at most ``margin`` rows tall, the cluster of a cell whose top row lies in a
strip's core lies wholly inside that strip's window, so the strip labels it exactly as the
whole image would; each cell is kept by exactly one strip. Taller clusters (confluent
sheets) are labelled within the window, ``margin`` rows away from its cut, and continued
across it. The watershed falls back to connected components only when the *whole image*
has no seed; strips without seeds keep provisional labels that are dropped at the end when
another strip had seeds. One caveat: skimage's watershed breaks exact floating-point ties
between seed pixels by heap order, which depends on the whole image; continuous network
outputs practically never tie. Dense maps are kept in float32 (memory bounded by the strip
size) so that nothing differs from the whole-image path but the extent of the arrays.

Memory for an H x W model-scale image: the input's raw pixels (a read-only memory map for an
uncompressed TIFF, see :func:`images.read_image`: only the file pages in use are resident),
int32 labels of H x W, and buffers whose size depends on the width only: the tile row of
accumulators (7 float32 maps x one tile of rows), the rows a strip window still needs (4 float32
maps, a :class:`RowBuffer` reused from strip to strip, never concatenated) and the watershed of
one window (about 40 bytes per window pixel); windows hold about ``WINDOW_PIXELS`` pixels (plus
the margins), whatever the image size. The strips a labeller yields are views of its buffers
(no copy of the dense maps per strip); the caller drops its own dense rows as soon as they are
pushed.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .cancel import CancelToken
from .images import ImageData, input_channels, percentile_range, work_dtype
from .inference import blend_window, plan_tiles
from .instances import InstanceParams, dense_to_labels, seed_mask
from .segment_plan import (
    PlannedSegmenter,
    SegmentationResult,
    check_diameter,
    disagreement,
    fit_shape,
    is_blank,
    plan_scale,
)
from .training_data import resize_image

if TYPE_CHECKING:
    from .inference import DensePredictor

log = logging.getLogger(__name__)

STRIP_PIXELS = 4096 * 4096  # model-scale pixels above which Segmenter.segment works in strips
WINDOW_PIXELS = 2048 * 4096  # aim for strip cores of about this many model-scale pixels
ESTIMATE_CROP = 1024  # the cell diameter of a large image is estimated on a central crop this big

RowSource = Callable[[int, int], np.ndarray]  # (row0, row1) -> (3, row1 - row0, W) float32


@dataclass(frozen=True)
class StripPlan:
    core_rows: int  # rows each strip owns
    margin: int  # extra rows above and below the core (>= the tallest cell cluster for exact results)


def plan_strips(h: int, w: int, target_diameter: float) -> StripPlan:
    """Cores of about :data:`WINDOW_PIXELS`, a margin of 5 cell diameters (at least 128 rows)."""
    margin = int(max(128, math.ceil(5 * target_diameter)))
    core = int(np.clip(WINDOW_PIXELS // max(w, 1), 2 * margin, 4096))
    return StripPlan(core_rows=core, margin=margin)


# ----------------------------------------------------------------------------- model input


def resize_each_channel(x: np.ndarray, scale: float) -> np.ndarray:
    """:func:`training_data.resize_image` one channel at a time.

    torch may round a (3, H, W) resize differently from three (1, H, W) ones (by an ulp);
    both segmentation paths resize this way so that strips reproduce the whole image exactly.
    """
    if abs(scale - 1.0) < 1e-3:
        return x
    first = resize_image(np.ascontiguousarray(x[:1]), scale)
    out = np.empty((x.shape[0], *first.shape[1:]), np.float32)
    out[0] = first[0]
    for c in range(1, x.shape[0]):
        out[c] = resize_image(np.ascontiguousarray(x[c:c + 1]), scale)[0]
    return out



class ModelInput:
    """The normalised model input of an image (as :func:`images.model_input`), by blocks of rows."""

    def __init__(self, img: ImageData, channels: tuple[int, ...] | None, low: float = 1.0, high: float = 99.8) -> None:
        chans = input_channels(img, channels)
        self.data = img.data
        self.chans = chans
        self.shape = img.shape
        self._work = work_dtype(self.data.dtype)
        self._ranges = [self._range(self.data[c], low, high) for c in chans]

    @staticmethod
    def _range(channel: np.ndarray, low: float, high: float) -> tuple[float, float] | None:
        lo, hi = percentile_range(channel, low, high)
        if hi - lo < 1e-12:
            lo, hi = float(channel.min()), float(channel.max())
        return None if hi - lo < 1e-12 else (lo, hi)

    def channel(self, k: int, r0: int, r1: int, c0: int = 0, c1: int | None = None) -> np.ndarray:
        """Normalised selected channel ``k``, rows r0:r1 and columns c0:c1 (float32)."""
        raw = self.data[self.chans[k], r0:r1, c0:c1]
        rng = self._ranges[k]
        if rng is None:
            return np.zeros(raw.shape, np.float32)
        lo, hi = rng
        if self._work is np.float32:
            out = np.subtract(raw, lo, dtype=np.float32)
            out *= np.float32(1.0 / (hi - lo))
        else:
            out = ((raw.astype(np.float64) - lo) * (1.0 / (hi - lo))).astype(np.float32)
        np.clip(out, -0.5, 1.5, out=out)
        return out

    def _planes(self, r0: int, r1: int, c0: int = 0, c1: int | None = None) -> np.ndarray:
        """The distinct planes: 1 for one channel, else 3 (two channels get their mean as the third)."""
        sel = np.stack([self.channel(k, r0, r1, c0, c1) for k in range(len(self.chans))])
        if sel.shape[0] == 2:
            sel = np.concatenate([sel, sel.mean(axis=0, keepdims=True)], axis=0)
        return sel

    def rows(self, r0: int, r1: int, c0: int = 0, c1: int | None = None) -> np.ndarray:
        """(3, r1 - r0, width) float32 at the input scale."""
        p = self._planes(r0, r1, c0, c1)
        return np.repeat(p, 3, axis=0) if p.shape[0] == 1 else p

    def at_scale(self, scale: float) -> tuple[RowSource, tuple[int, int]]:
        """A row source at model scale and its (H, W). Rescaling resizes whole planes, one at a time
        (bit-identical to resizing the 3-channel image); scale 1 needs no copy of the image."""
        h, w = self.shape
        if abs(scale - 1.0) < 1e-3:  # the same test as training_data.resize_image
            return self.rows, (h, w)
        n = len(self.chans)
        planes: np.ndarray | None = None
        for k in range(1 if n == 1 else 3):
            if k < n:
                plane = self.channel(k, 0, h)
            else:
                plane = np.stack([self.channel(0, 0, h), self.channel(1, 0, h)]).mean(axis=0)
            small = resize_image(plane[None], scale)[0]
            if planes is None:
                planes = np.empty((1 if n == 1 else 3, *small.shape), np.float32)
            planes[k] = small
            del plane, small
        assert planes is not None

        def source(r0: int, r1: int) -> np.ndarray:
            p = planes[:, r0:r1]
            return np.repeat(p, 3, axis=0) if p.shape[0] == 1 else p

        return source, (int(planes.shape[1]), int(planes.shape[2]))


# ----------------------------------------------------------------------------- dense maps


class RowBuffer:
    """Rows ``[start, start + n)`` of a ``(C, H, W)`` float32 map, in one buffer reused from strip
    to strip: appending writes in place and dropping shifts the kept rows down in chunks that do
    not overlap, so neither makes a second copy of the whole buffer (as ``np.concatenate`` would).
    """

    def __init__(self, channels: int, width: int, start: int = 0) -> None:
        self._buf = np.zeros((channels, 0, width), np.float32)
        self.start = start  # image row of the first held row
        self.n = 0

    @property
    def stop(self) -> int:
        return self.start + self.n

    @property
    def rows(self) -> np.ndarray:
        """A view of the held rows (valid until the next append/drop)."""
        return self._buf[:, :self.n]

    def reserve(self, n: int) -> None:
        """Make room for ``n`` held rows; new rows are zero."""
        if n > self._buf.shape[1]:
            big = np.zeros((self._buf.shape[0], max(n, self._buf.shape[1] + self._buf.shape[1] // 4), self._buf.shape[2]), np.float32)
            big[:, :self.n] = self._buf[:, :self.n]
            self._buf = big
        self._buf[:, self.n:n] = 0.0

    def extend_to(self, stop: int) -> np.ndarray:
        """Hold rows up to image row ``stop`` (new rows zero); returns the held rows."""
        if stop > self.stop:
            self.reserve(stop - self.start)
            self.n = stop - self.start
        return self.rows

    def append(self, *parts: np.ndarray) -> None:
        """Append rows given as (c_i, k, W) arrays whose channels add up to C."""
        k = parts[0].shape[1]
        self.reserve(self.n + k)
        c = 0
        for part in parts:
            self._buf[c:c + part.shape[0], self.n:self.n + k] = part
            c += part.shape[0]
        self.n += k

    def drop_before(self, row: int) -> None:
        """Forget the rows above image row ``row``."""
        k = min(max(0, row - self.start), self.n)
        if k == 0:
            return
        keep = self.n - k
        for i in range(0, keep, k):  # destination chunks never overlap their source
            j = min(i + k, keep)
            self._buf[:, i:j] = self._buf[:, k + i:k + j]
        self.start += k
        self.n = keep



def stream_dense(predictor: DensePredictor, source: RowSource, h: int, w: int, cancel: CancelToken | None = None,
                 progress: Callable[[int, int], None] | None = None) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield ``(row0, prob (3,n,w), geo (3,n,w))`` blocks covering rows 0..h in order.

    Same tiles, padding, blend window and summation order as :meth:`DensePredictor.predict`
    (identical values on a CPU); only about one tile row of accumulators is held at a time.
    """
    plan = plan_tiles(h, w, predictor.tile, predictor.patch, predictor.overlap)
    th, tw = plan.tile
    ph, pw = max(h, th), max(w, tw)
    mode = "reflect" if (ph - h < h and pw - w < w) else "constant"
    win = blend_window(th, tw, predictor.overlap if plan.n_tiles > 1 else 0)
    starts = plan.starts_y
    acc = RowBuffer(7, pw)  # prob (3), geo (3), weight (1) of the rows still receiving tiles
    done = 0
    for j, y in enumerate(starts):
        block = source(y, min(y + th, h))
        if block.shape[1:] != (th, pw):
            block = np.pad(block, ((0, 0), (0, th - block.shape[1]), (0, pw - w)), mode=mode)
        held = acc.extend_to(y + th)
        base = acc.start
        acc_p, acc_g, acc_w = held[0:3], held[3:6], held[6]
        ys = slice(y - base, y - base + th)
        xs_all = plan.starts_x
        i = 0
        while i < len(xs_all):  # the batch size may shrink on a GPU out-of-memory retry
            if cancel is not None:
                cancel.raise_if_cancelled()
            chunk = xs_all[i:i + predictor.batch_size]
            i += len(chunk)
            batch = np.stack([block[:, :, x0:x0 + tw] for x0 in chunk]).astype(np.float32, copy=False)
            prob, geo = predictor._forward_safe(batch)
            for x0, p, g in zip(chunk, prob, geo):
                acc_p[:, ys, x0:x0 + tw] += p * win
                acc_g[:, ys, x0:x0 + tw] += g * win
                acc_w[ys, x0:x0 + tw] += win
            done += len(chunk)
            if progress is not None:
                progress(done, plan.n_tiles)
        del block
        final = min(starts[j + 1] if j + 1 < len(starts) else ph, h) - base
        if final > 0:
            wgt = np.maximum(acc_w[:final, :w], 1e-6)
            yield base, acc_p[:, :final, :w] / wgt, acc_g[:, :final, :w] / wgt
            acc.drop_before(base + final)


# ----------------------------------------------------------------------------- instances


class StripLabeller:
    """Feeds on dense rows (top to bottom); yields final label rows with global, stitched ids.

    ``push(row0, prob, dist)`` takes the next rows (copied into a reused buffer: the caller may
    drop its arrays at once); ``ready()`` then yields ``(row0, labels (n, W) int32, dense (4, n, W))``
    for each finished strip core (``dense`` = the three probabilities and the distance of those
    rows). Both are *views* of the labeller's buffers, valid until the generator resumes: use
    them, or copy them, before asking for the next strip. ``feed`` = ``push`` + ``ready``.
    """

    def __init__(self, h: int, w: int, params: InstanceParams, plan: StripPlan) -> None:
        if plan.core_rows < 1 or plan.margin < 1:
            raise ValueError("strips need at least one core row and one margin row")
        self.h, self.w, self.params, self.plan = h, w, params, plan
        self._dense = RowBuffer(4, w)  # probabilities (3) and distance of the rows a strip may still need
        self._dense.reserve(min(h, plan.core_rows + 2 * plan.margin + 512))  # the steady state: no regrowth
        self._lab = np.zeros((0, w), np.int32)  # labels of rows [c0, ...) not yet final
        self._c0 = 0  # first row of the next core
        self.next_id = 1
        self._open = np.zeros(0, np.int64)  # ids cut by the last window's bottom edge
        self.any_seeds = False
        self._provisional: list[tuple[int, int]] = []  # id ranges from windows without seeds

    def discarded_ids(self) -> np.ndarray:
        """Ids to drop at the end: the connected-component fallback of seedless strips, when
        another strip had seeds (the whole-image watershed falls back only without any seed)."""
        if not self.any_seeds or not self._provisional:
            return np.zeros(0, np.int64)
        return np.concatenate([np.arange(a, b) for a, b in self._provisional])

    def feed(self, row0: int, prob: np.ndarray, dist: np.ndarray) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        self.push(row0, prob, dist)
        return self.ready()

    def push(self, row0: int, prob: np.ndarray, dist: np.ndarray) -> None:
        if row0 != self._dense.stop:
            raise ValueError("dense rows must arrive in order")
        self._dense.append(prob, dist[None])

    def ready(self) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        while self._c0 < self.h:
            c1 = min(self.h, self._c0 + self.plan.core_rows)
            w1 = min(self.h, c1 + self.plan.margin)
            if self._dense.stop < w1:
                break
            yield self._strip(self._c0, c1, w1)
            # Drop what no later strip needs (after the caller used the views it was given).
            self._lab = self._lab[c1 - self._c0:].copy()
            self._dense.drop_before(max(0, c1 - self.plan.margin))
            self._c0 = c1

    def _strip(self, c0: int, c1: int, w1: int) -> tuple[int, np.ndarray, np.ndarray]:
        h, m = self.h, self.plan.margin
        w0 = max(0, c0 - m)
        d0 = self._dense.start
        win = self._dense.rows[:, w0 - d0:w1 - d0]
        prob, dist = win[:3], win[3]
        seeded = bool(seed_mask(prob, dist, self.params).any())
        self.any_seeds |= seeded
        lw = dense_to_labels(prob, dist, self.params)
        n = int(lw.max())
        # Rolling label buffer: rows [c0, w1).
        if self._lab.shape[0] < w1 - c0:
            self._lab = np.concatenate([self._lab, np.zeros((w1 - c0 - self._lab.shape[0], self.w), np.int32)])
        lab = self._lab
        gid = np.zeros(n + 1, np.int64)
        cut = np.zeros(n + 1, bool)
        if n:
            from scipy import ndimage as ndi

            objs = ndi.find_objects(lw)
            top = np.array([s[0].start if s is not None else h for s in objs]) + w0
            bottom = np.array([s[0].stop - 1 if s is not None else -1 for s in objs]) + w0
            own = (top >= c0) & (top < c1)
            cut[1:] = (bottom == w1 - 1) & (w1 < h)
            below = lw[c0 - w0:]
            if self._open.size:  # continue the cells the previous strip cut at its window's edge
                sel = (below > 0) & np.isin(lab, self._open)
                if sel.any():
                    key = below[sel].astype(np.int64) * (self.next_id + 1) + lab[sel]
                    uk, cnt = np.unique(key, return_counts=True)
                    order = np.lexsort((-cnt, uk // (self.next_id + 1)))  # per window cell, most overlap first
                    uk = uk[order]
                    first = np.r_[True, np.diff(uk // (self.next_id + 1)) != 0]
                    cells, ids = uk[first] // (self.next_id + 1), uk[first] % (self.next_id + 1)
                    take = top[cells - 1] < c0  # only a cell coming from above continues an open one
                    gid[cells[take]] = ids[take]
            new = own & (gid[1:] == 0)
            k = int(new.sum())
            gid[1:][new] = np.arange(self.next_id, self.next_id + k)
            if not seeded and k:
                self._provisional.append((self.next_id, self.next_id + k))
            self.next_id += k
            src = gid[below]
            free = (lab[:w1 - c0] == 0) & (src > 0)
            lab[:w1 - c0][free] = src[free]
        self._open = np.unique(gid[cut & (gid > 0)])
        return c0, lab[:c1 - c0], self._dense.rows[:, c0 - d0:c1 - d0]


def label_in_strips(prob: np.ndarray, dist: np.ndarray, params: InstanceParams | None = None,
                    plan: StripPlan | None = None) -> np.ndarray:
    """:func:`dense_to_labels` of whole (3,H,W)/(H,W) maps, computed strip by strip (for tests and tools)."""
    h, w = dist.shape
    lab = StripLabeller(h, w, params or InstanceParams(), plan or plan_strips(h, w, 24.0))
    out = np.zeros((h, w), np.int32)
    for r0, rows, _ in lab.feed(0, prob, dist):
        out[r0:r0 + rows.shape[0]] = rows
    return _relabel_inplace(out, lab.next_id - 1, lab.discarded_ids())[0]


def _relabel_inplace(labels: np.ndarray, n: int, drop: np.ndarray, step: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Renumber 1..K in order (dropping ``drop`` ids), a block of rows at a time; also returns the old ids kept."""
    present = np.zeros(n + 1, bool)
    for r in range(0, labels.shape[0], step):
        present[np.unique(labels[r:r + step])] = True
    present[0] = False
    present[drop] = False
    fmap = np.zeros(n + 1, np.int32)
    fmap[present] = np.arange(1, int(present.sum()) + 1, dtype=np.int32)
    for r in range(0, labels.shape[0], step):
        labels[r:r + step] = fmap[labels[r:r + step]]
    return labels, np.nonzero(present)[0]


# ----------------------------------------------------------------------------- the whole pass


def needs_strips(h: int, w: int, scale: float, limit: int = STRIP_PIXELS) -> bool:
    return h * w * scale * scale > limit


def segment_in_strips(seg: PlannedSegmenter, img: ImageData, diameter: float | None = None,
                      channels: tuple[int, ...] | None = None, cancel: CancelToken | None = None,
                      progress: Callable[[float], None] | None = None, keep_uncertainty_map: bool = False,
                      plan: StripPlan | None = None, estimated: bool = False) -> SegmentationResult:
    """:meth:`Segmenter.segment` for images too large to hold their dense maps: same result, bounded memory.

    ``estimated``: ``diameter`` came from an estimate (it may then rescale only within
    AUTO_SCALE_RANGE). Without a diameter it is estimated on a central crop. The scale plan,
    the uncertainty and the blank-image rule are :mod:`.segment_plan`'s, as for the whole image.
    """
    t0 = time.time()
    notes = list(img.notes)
    channels = channels if channels is not None else seg.meta.channels
    h, w = img.shape
    report = (lambda f: progress(min(max(f, 0.0), 1.0))) if progress else (lambda f: None)  # noqa: E731
    check_diameter(diameter)
    src = ModelInput(img, channels)
    if diameter is None:
        diameter = _estimate_on_crop(seg, src, cancel, lambda f: report(0.5 * f))
        estimated = True
    base = 0.5 if estimated else 0.0  # the estimate took the first half of the progress bar
    scale_plan = plan_scale(h, w, seg.target_diameter, diameter, estimated)
    notes.extend(scale_plan.notes)
    scale = scale_plan.scale
    source, (hs, ws) = src.at_scale(scale)
    sp = plan or plan_strips(hs, ws, seg.target_diameter)
    labeller = StripLabeller(hs, ws, seg.scaled_params(1.0), sp)
    labels = np.zeros((h, w), np.int32)
    ys = np.minimum((np.arange(h) + 0.5) * hs / h, hs - 1).astype(np.intp)  # as training_data.resize_labels
    xs = np.minimum((np.arange(w) + 0.5) * ws / w, ws - 1).astype(np.intp)
    dis_sum, dis_n = 0.0, 0
    conf_s = np.zeros(1, np.float64)
    conf_n = np.zeros(1, np.float64)
    umap_s = np.zeros((hs, ws), np.float16) if keep_uncertainty_map else None
    tick = lambda d, n: report(base + (1 - base) * d / n)  # noqa: E731
    for r0, prob, geo in stream_dense(seg.predictor, source, hs, ws, cancel, tick):
        labeller.push(r0, prob, geo[0])
        del prob, geo  # copied into the labeller's buffer
        for c0, rows, dense in labeller.ready():
            c1 = c0 + rows.shape[0]
            fg_sem, dis, region = disagreement(dense[0], dense[3])
            dis_sum += float(dis[region].sum(dtype=np.float64))
            dis_n += int(region.sum())
            if umap_s is not None:
                umap_s[c0:c1] = dis
            n = labeller.next_id
            if conf_s.size < n:
                conf_s = np.pad(conf_s, (0, n - conf_s.size))
                conf_n = np.pad(conf_n, (0, n - conf_n.size))
            conf_s += np.bincount(rows.ravel(), weights=fg_sem.ravel(), minlength=n)[:n]
            conf_n += np.bincount(rows.ravel(), minlength=n)[:n]
            if (hs, ws) == (h, w):
                labels[c0:c1] = rows
            else:
                sel = np.nonzero((ys >= c0) & (ys < c1))[0]
                if sel.size:
                    labels[sel[0]:sel[-1] + 1] = rows[ys[sel] - c0][:, xs]
            del rows, dense, fg_sem, dis, region
    if cancel is not None:
        cancel.raise_if_cancelled()
    n = labeller.next_id - 1
    drop = labeller.discarded_ids()
    del labeller, source, src  # the strip buffers (and a rescaled input) are not needed for renumbering
    labels, kept = _relabel_inplace(labels, n, drop)
    # Per-cell confidence in the final numbering (cells lost to the rescale or dropped are left out).
    conf = (conf_s[kept] / np.maximum(conf_n[kept], 1)).astype(np.float32)
    if is_blank(img):
        labels[:] = 0
        conf = np.zeros(0, np.float32)
    umap = None
    if umap_s is not None:
        u = resize_image(umap_s[None].astype(np.float32), 1.0 / scale)[0] if scale != 1.0 else umap_s
        umap = fit_shape(u, (h, w)).astype(np.float16)
    notes.extend(seg.predictor.notes)
    seg.predictor.notes.clear()
    report(1.0)
    settings = seg.result_settings(diameter, estimated, scale, channels)
    settings["strips"] = {"core_rows": sp.core_rows, "margin": sp.margin}
    log.info("segmented %dx%d in strips of %d+2x%d rows: %d cells", h, w, sp.core_rows, sp.margin, int(labels.max()))
    return SegmentationResult(labels=labels, diameter=float(diameter or 0.0), scale=scale, settings=settings,
                              seconds=time.time() - t0, notes=notes, uncertainty=dis_sum / dis_n if dis_n else 0.0,
                              cell_confidence=conf, uncertainty_map=umap)


def _estimate_on_crop(seg: PlannedSegmenter, src: ModelInput, cancel: CancelToken | None, report: Callable[[float], None]) -> float | None:
    h, w = src.shape
    ch, cw = min(h, ESTIMATE_CROP), min(w, ESTIMATE_CROP)
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    x = np.ascontiguousarray(src.rows(y0, y0 + ch, x0, x0 + cw))
    d, _ = seg.estimate_diameter(x, cancel, report)
    return d
