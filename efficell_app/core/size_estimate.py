"""Automatic estimate of the typical object diameter of an image, for a model trained at one object size.

A model trained with objects rescaled to about ``target`` px (the adapter's ``target_diameter``)
labels objects reliably only near that size. Measuring the objects it finds at the native scale
fails when they are much larger: it then cuts each one into pieces of roughly the target size,
and the estimate comes out too small (phase-contrast cells of 60 px were read as 28 px).

So the estimate asks, at a few scales, *how self-consistent the model is*, not only how big the
objects look. At every probe scale ``s`` the model's instances are compared with its own
geometric branch: for each instance, the normalised distance to its boundary and the offsets to
its centre (what the geometric head was trained to predict, :func:`targets.geometric_target`)
are computed from the instance mask and compared with the predicted maps. When objects are near
the training size the two agree; when they are much larger, the pieces' centres are not where
the head points, and when they are much smaller, merged or missing objects disagree too. The
probe with the lowest disagreement (among those with a few objects) gives the diameter:
median object diameter at that scale / ``s``.

Search: coarse probes a factor 2 apart (``PROBE_SCALES``: x0.25 ... x2), then the two
neighbours a factor sqrt(2) either side of the best (the refinement), best of the three.
The coarsest probe sees the whole image; every other probe segments one window of at most
``PROBE_WINDOW``² model pixels, placed where the coarse probe saw most foreground, so that
sparse images still show objects. Cost, in model pixels relative to one native pass of an
H x W image: 1/16 for the coarse probe plus at most 256² / (H W) for each of the other five;
for 1024² about 0.38 pass, for 512² at most 1.35, for 256² at most 4.4 (each probe then
covers the whole image: about a second on a CPU); :func:`probe_cost` gives the bound. When a
probe at scale 1 covered the whole image, its dense maps serve as the native-scale
segmentation too (``SizeEstimate.native``).

One constraint keeps the choice physical: when the objects the model finds at the native scale are
already at least the training size (``target``), the image is never enlarged (no probe above x1 is
chosen): objects that look that big cannot be smaller than the target, and an enlarged probe that
looks "consistent" there is the model splitting texture into small blobs (the rare 3-5x misses of
the unconstrained search, e.g. a phase-contrast image read as 7 px cells instead of 37 px).

Nothing here is fit to one model: the probe grid spans the rescale range the pipeline allows
(AUTO_SCALE_RANGE), the target size is the adapter's, and the criterion is what the geometric
head is trained to output.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .cancel import CancelToken
from .instances import InstanceParams, dense_to_labels
from .training_data import resize_image

log = logging.getLogger(__name__)

PROBE_SCALES = (0.25, 0.5, 1.0, 2.0)  # coarse search, a factor 2 apart
REFINE_STEP = math.sqrt(2.0)  # then the neighbours this factor either side of the best probe
PROBE_WINDOW = 256  # model pixels per side of the window a probe segments (one tile of the encoder)
MIN_OBJECTS = 3  # a probe with fewer whole objects says little about their size
MIN_SIDE = 32  # model pixels: smaller probes are skipped

Predict = Callable[[np.ndarray, Callable[[int, int], None] | None], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Probe:
    """What the model found at one scale, in one window."""

    scale: float  # model / input
    window: tuple[int, int, int, int]  # y0, x0, height, width in input pixels
    model_pixels: int  # pixels the model processed
    n_objects: int  # objects used for the statistics
    diameter: float  # their median equivalent-circle diameter, model pixels (0: none)
    inconsistency: float  # mean |geometry predicted - geometry of the instances| (lower: self-consistent)

    @property
    def implied_diameter(self) -> float:
        """The median diameter in input pixels."""
        return self.diameter / self.scale

    @property
    def usable(self) -> bool:
        return self.n_objects >= MIN_OBJECTS


@dataclass
class SizeEstimate:
    diameter: float | None  # input pixels; None when no probe found any object
    chosen: Probe | None
    probes: list[Probe] = field(default_factory=list)
    # (prob, geo, labels) of the whole image at the native scale when a probe computed it (small images):
    # the segmentation at scale 1 needs no second pass then.
    native: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    @property
    def model_pixels(self) -> int:
        return sum(p.model_pixels for p in self.probes)

    def passes(self, shape: tuple[int, int]) -> float:
        """Model pixels processed, as a multiple of one pass over the image at its native scale."""
        return self.model_pixels / float(shape[0] * shape[1])


def estimate_diameter(predict: Predict, x: np.ndarray, params: InstanceParams | None = None,
                      cancel: CancelToken | None = None, report: Callable[[float], None] | None = None,
                      scales: tuple[float, ...] = PROBE_SCALES, window: int = PROBE_WINDOW,
                      target: float | None = None) -> SizeEstimate:
    """Typical object diameter (input pixels) of the normalised model input ``x`` (C, H, W).

    ``predict(x_scaled, progress)`` -> (prob (3,h,w), geo (3,h,w)) is the model's dense prediction
    (e.g. ``DensePredictor.predict`` bound to a cancel token); ``params`` turn it into instances
    (at model scale). ``report`` gets the fraction done (0..1). ``target``: the object diameter the
    model was trained at (model px); with it, no enlarging probe is chosen when the native-scale
    objects are at least that big (module docstring).
    """
    params = params or InstanceParams()
    h, w = x.shape[1:]
    scales = tuple(sorted(scales))
    total = len(scales) + 2
    done = [0]

    def tick(frac: float = 0.0) -> None:
        if report is not None:
            report(min((done[0] + frac) / total, 1.0))

    probes: list[Probe] = []
    native: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def run(s: float, win: tuple[int, int, int, int] | None, keep_density: bool = False) -> np.ndarray | None:
        p, dense = _probe(predict, x, s, win, params, lambda d, n: tick(d / n))
        probes.append(p)
        if dense is not None and win is None and abs(s - 1.0) < 1e-3:
            native.append(dense)
        return (1.0 - dense[0][0]).astype(np.float32) if keep_density and dense is not None else None

    # Coarsest scale first, on the whole image: it also says where the objects are.
    density = run(scales[0], None, keep_density=True)
    done[0] += 1
    for s in scales[1:]:
        if cancel is not None:
            cancel.raise_if_cancelled()
        if s <= 1.0 + 1e-6 or _may_enlarge(probes, target):
            run(s, _window(h, w, s, window, density))
        done[0] += 1
    best = _best(probes, target)
    if best is not None and best.usable:
        for f in (1.0 / REFINE_STEP, REFINE_STEP):
            s = best.scale * f
            if cancel is not None:
                cancel.raise_if_cancelled()
            if min(h, w) * s >= MIN_SIDE and (s <= 1.0 + 1e-6 or _may_enlarge(probes, target)):
                run(s, _window(h, w, s, window, density))
            done[0] += 1
        best = _best(probes, target)
    done[0] = total
    tick()
    d = best.implied_diameter if best is not None else None
    log.debug("size estimate %s from %s", d, [(round(p.scale, 3), round(p.implied_diameter, 1), p.n_objects,
                                               round(p.inconsistency, 3)) for p in probes])
    return SizeEstimate(d, best, probes, native[0] if native else None)


def probe_cost(shape: tuple[int, int], scales: tuple[float, ...] = PROBE_SCALES, window: int = PROBE_WINDOW) -> float:
    """Upper bound of the model pixels :func:`estimate_diameter` processes, in native passes of an image of ``shape``."""
    h, w = shape
    s0, rest = min(scales), sorted(scales)[1:]
    refine = [max(rest) * REFINE_STEP] * 2  # the two refinement probes cost at most a full window each
    slack = math.ceil(max(rest) * REFINE_STEP) + 1  # a window of ceil(window / s) input px may round up a little

    def side(n: int, s: float) -> float:
        return min(n * s + 1, window + slack)

    px = (h * s0 + 1) * (w * s0 + 1) + sum(side(h, s) * side(w, s) for s in [*rest, *refine])
    return px / float(h * w)


# ----------------------------------------------------------------------------- internals


def _best(probes: list[Probe], target: float | None = None) -> Probe | None:
    """The most self-consistent probe with enough objects; else the one with most objects; None if none found any.

    With ``target``: enlarging probes (scale > 1) are not eligible when the native-scale probe found
    usable objects of at least ``target`` model px.
    """
    usable = [p for p in probes if p.usable]
    if not _may_enlarge(probes, target):
        usable = [p for p in usable if p.scale <= 1.0 + 1e-6]
    if usable:
        return min(usable, key=lambda p: (p.inconsistency, -p.scale))
    found = [p for p in probes if p.n_objects > 0]
    return max(found, key=lambda p: (p.n_objects, -p.inconsistency)) if found else None


def _may_enlarge(probes: list[Probe], target: float | None) -> bool:
    """False when the native-scale probe found usable objects already at least ``target`` model px."""
    native = [p for p in probes if p.usable and abs(p.scale - 1.0) < 1e-6]
    return target is None or not native or native[0].diameter < target


def _window(h: int, w: int, s: float, side: int, density: np.ndarray | None) -> tuple[int, int, int, int] | None:
    """Input-pixel window (y0, x0, wh, ww) whose model-scale size is at most side x side, where
    ``density`` (a low-resolution foreground map of the whole image) is highest; None: the whole image."""
    wh, ww = min(h, math.ceil(side / s)), min(w, math.ceil(side / s))
    if (wh, ww) == (h, w):
        return None
    if density is None or density.size == 0:
        return ((h - wh) // 2, (w - ww) // 2, wh, ww)
    dh, dw = density.shape
    fy, fx = dh / h, dw / w
    bh, bw = max(1, min(dh, round(wh * fy))), max(1, min(dw, round(ww * fx)))
    ii = np.pad(density.astype(np.float64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    box = ii[bh:, bw:] - ii[:-bh, bw:] - ii[bh:, :-bw] + ii[:-bh, :-bw]  # sums over every bh x bw window
    yy, xx = np.mgrid[0:box.shape[0], 0:box.shape[1]]
    centre = np.hypot(yy - (box.shape[0] - 1) / 2, xx - (box.shape[1] - 1) / 2)
    score = box - 1e-6 * centre  # ties (e.g. uniform images): the central window
    cy, cx = np.unravel_index(int(np.argmax(score)), score.shape)
    y0 = int(np.clip(round(cy / fy), 0, h - wh))
    x0 = int(np.clip(round(cx / fx), 0, w - ww))
    return (y0, x0, wh, ww)


def _probe(predict: Predict, x: np.ndarray, s: float, window: tuple[int, int, int, int] | None,
           params: InstanceParams, progress: Callable[[int, int], None],
           ) -> tuple[Probe, tuple[np.ndarray, np.ndarray, np.ndarray] | None]:
    """Segment ``window`` of ``x`` rescaled by ``s``; the probe and its (prob, geo, labels) (None: skipped)."""
    h, w = x.shape[1:]
    y0, x0, wh, ww = window or (0, 0, h, w)
    if min(wh, ww) * s < MIN_SIDE / 2:
        return Probe(s, (y0, x0, wh, ww), 0, 0, 0.0, math.inf), None
    crop = np.ascontiguousarray(x[:, y0:y0 + wh, x0:x0 + ww])
    xs = resize_image(crop, s)
    prob, geo = predict(xs, progress)
    labels = dense_to_labels(prob, geo[0], params)
    # Objects cut by the window's edge (not the image's) are partial: leave them out when enough remain.
    cut = (y0 > 0, y0 + wh < h, x0 > 0, x0 + ww < w)
    keep = _whole_objects(labels, cut)
    diameter, n, inconsistency = _statistics(labels, geo, keep)
    return Probe(s, (y0, x0, wh, ww), int(xs.shape[1] * xs.shape[2]), n, diameter, inconsistency), (prob, geo, labels)


def _whole_objects(labels: np.ndarray, cut: tuple[bool, bool, bool, bool]) -> np.ndarray:
    """Boolean per label (index 0 = background): kept for the statistics."""
    n = int(labels.max())
    keep = np.ones(n + 1, bool)
    keep[0] = False
    edges = [e for e, c in zip((labels[0], labels[-1], labels[:, 0], labels[:, -1]), cut) if c]
    if edges:
        touching = np.zeros(n + 1, bool)
        touching[np.concatenate(edges)] = True
        if (keep & ~touching).sum() >= MIN_OBJECTS:
            keep &= ~touching
    return keep


def _statistics(labels: np.ndarray, geo: np.ndarray, keep: np.ndarray) -> tuple[float, int, float]:
    """(median diameter in model px, objects, geometric inconsistency) of the kept objects."""
    from .targets import geometric_target

    n = int(keep.sum())
    if n == 0:
        return 0.0, 0, math.inf
    sizes = np.bincount(labels.ravel(), minlength=keep.size)[keep]
    diameter = float(np.median(2.0 * np.sqrt(sizes / np.pi)))
    lab = np.where(keep[labels], labels, 0)
    m = lab > 0
    target = geometric_target(lab)
    offsets = float(np.abs(geo[1:3][:, m] - target[1:3][:, m]).mean())
    distance = float(np.abs(geo[0][m] - target[0][m]).mean())
    return diameter, n, offsets + distance
