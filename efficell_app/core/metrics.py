"""Instance segmentation scores: one-to-one matching by IoU, AP, F1, precision, recall.

The convention is the one of the 2018 Data Science Bowl, Cellpose and StarDist: a
predicted object and a true object match when their intersection over union (IoU) is at
least the threshold, each object matching at most one other; then

    AP = TP / (TP + FP + FN),  precision = TP / (TP + FP),  recall = TP / (TP + FN),
    F1 = 2 TP / (2 TP + FP + FN).

For thresholds above 0.5 the matching is unique (an object cannot overlap two others by
more than half of their union each); at 0.5 and below, ties and conflicts are resolved
as StarDist does, by an optimal assignment (``scipy.optimize.linear_sum_assignment``)
that first maximises the number of matches and then their summed IoU. The assignment runs
only on the small connected groups of conflicting candidates, so it stays fast.

Overlaps are counted from the pixels where both images are labelled, in one pass
(``np.bincount`` on paired labels), so a 2,000 x 2,000 image with thousands of cells is
scored in a fraction of a second.

Empty images: with no true and no predicted objects every ratio is 1.0 (nothing to find,
nothing wrongly found); otherwise a ratio whose denominator is 0 is 0.0. The mean matched
IoU is ``None`` when nothing matched. Pooled scores over several images are computed from
the summed counts, so an empty pair of images adds nothing to them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

DEFAULT_THRESHOLDS: tuple[float, ...] = (0.5, 0.75, 0.9)
_BINCOUNT_MAX_CELLS = 20_000_000  # dense contingency table above this many cells -> sort-based counting


@dataclass(frozen=True)
class Overlaps:
    """Sparse IoU table between the objects of a true and a predicted label image.

    ``true_ids`` / ``pred_ids`` are the original label values of the objects (ascending);
    ``rows`` / ``cols`` index into them, one entry per overlapping (true, pred) pair, with
    its ``intersection`` and ``iou``.
    """

    true_ids: np.ndarray
    pred_ids: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    intersection: np.ndarray
    iou: np.ndarray

    @property
    def n_true(self) -> int:
        return int(self.true_ids.size)

    @property
    def n_pred(self) -> int:
        return int(self.pred_ids.size)

    def dense(self) -> np.ndarray:
        """The full ``(n_true, n_pred)`` IoU matrix (for small images and tests)."""
        out = np.zeros((self.n_true, self.n_pred), dtype=np.float64)
        out[self.rows, self.cols] = self.iou
        return out


@dataclass(frozen=True)
class MatchStats:
    """Counts of one image (or of several, summed) at one IoU threshold."""

    threshold: float
    tp: int
    fp: int
    fn: int
    sum_matched_iou: float = 0.0
    n_images: int = 1

    @property
    def n_true(self) -> int:
        return self.tp + self.fn

    @property
    def n_pred(self) -> int:
        return self.tp + self.fp

    def _ratio(self, num: float, den: float) -> float:
        if den > 0:
            return float(num) / float(den)
        return 1.0 if self.n_true == 0 and self.n_pred == 0 else 0.0

    @property
    def ap(self) -> float:
        """Average precision as in the DSB 2018 / Cellpose / StarDist: TP / (TP + FP + FN)."""
        return self._ratio(self.tp, self.tp + self.fp + self.fn)

    @property
    def precision(self) -> float:
        return self._ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        return self._ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float:
        return self._ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    @property
    def mean_matched_iou(self) -> float | None:
        """Mean IoU of the matched pairs; ``None`` when nothing matched."""
        return self.sum_matched_iou / self.tp if self.tp else None

    def __add__(self, other: MatchStats) -> MatchStats:
        if not isinstance(other, MatchStats):
            return NotImplemented
        if other.threshold != self.threshold:
            raise ValueError(f"cannot add scores at IoU {self.threshold} and {other.threshold}")
        return MatchStats(self.threshold, self.tp + other.tp, self.fp + other.fp, self.fn + other.fn,
                          self.sum_matched_iou + other.sum_matched_iou, self.n_images + other.n_images)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (counts and scores)."""
        return {
            "threshold": self.threshold, "n_images": self.n_images, "n_true": self.n_true, "n_pred": self.n_pred,
            "tp": self.tp, "fp": self.fp, "fn": self.fn, "ap": self.ap, "precision": self.precision,
            "recall": self.recall, "f1": self.f1, "mean_matched_iou": self.mean_matched_iou,
        }


# ----------------------------------------------------------------------------- overlaps


def _check_labels(arr: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.dtype == bool:
        raise ValueError(f"{name} is a boolean mask; label the objects first (0 = background, 1..N objects)")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError(f"{name} has non-integer labels")
        arr = arr.astype(np.int64)
    elif arr.dtype.kind not in "ui":
        raise ValueError(f"{name} has unsupported type {arr.dtype}; labels must be integers")
    if arr.size and arr.dtype.kind == "i" and arr.min() < 0:
        raise ValueError(f"{name} has negative labels")
    return arr


def _compact(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Renumber labels to 0..n (0 stays background).

    Returns ``(compact labels as intp, original ids of 1..n, areas of 1..n)``.
    """
    flat = labels.reshape(-1)
    top = int(flat.max()) if flat.size else 0
    if flat.dtype == np.uint64:
        if top > np.iinfo(np.int64).max:
            raise ValueError("label values exceed the int64 range")
        flat = flat.astype(np.int64)
    if top <= max(4 * flat.size, 1_000_000):
        areas = np.bincount(flat, minlength=top + 1)
        ids = np.flatnonzero(areas[1:]) + 1
        lut = np.zeros(top + 1, dtype=np.intp)
        lut[ids] = np.arange(1, ids.size + 1)
        return lut[flat], ids.astype(np.int64), areas[ids]
    # Sparse huge label values (e.g. hashes): sort-based renumbering.
    uniq, inverse, counts = np.unique(flat, return_inverse=True, return_counts=True)
    if uniq[0] != 0:
        return inverse.astype(np.intp) + 1, uniq.astype(np.int64), counts
    return inverse.astype(np.intp), uniq[1:].astype(np.int64), counts[1:]


def overlaps(gt: np.ndarray, pred: np.ndarray) -> Overlaps:
    """IoU of every overlapping (true, predicted) object pair of two label images."""
    gt = _check_labels(gt, "ground truth")
    pred = _check_labels(pred, "prediction")
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth has shape {gt.shape} but prediction has shape {pred.shape}")
    g, true_ids, true_area = _compact(gt)
    p, pred_ids, pred_area = _compact(pred)
    n_t, n_p = true_ids.size, pred_ids.size
    both = (g > 0) & (p > 0)
    gb = g[both].astype(np.int64) - 1
    pb = p[both].astype(np.int64) - 1
    key = gb * max(n_p, 1) + pb
    if n_t * n_p <= _BINCOUNT_MAX_CELLS:
        counts = np.bincount(key, minlength=n_t * n_p) if key.size else np.zeros(0, np.int64)
        keys = np.flatnonzero(counts)
        inter = counts[keys]
    else:
        keys, inter = np.unique(key, return_counts=True)
    rows = (keys // max(n_p, 1)).astype(np.intp)
    cols = (keys % max(n_p, 1)).astype(np.intp)
    union = true_area[rows] + pred_area[cols] - inter
    iou = inter / union if inter.size else np.zeros(0, dtype=np.float64)
    return Overlaps(true_ids, pred_ids, rows, cols, inter.astype(np.int64), iou.astype(np.float64))


# ----------------------------------------------------------------------------- matching


def match(ov: Overlaps, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-to-one matching of objects whose IoU is at least ``threshold``.

    Returns ``(rows, cols, iou)`` of the matched pairs (indices into ``ov.true_ids`` /
    ``ov.pred_ids``). Maximises the number of matches, then their summed IoU.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"IoU threshold must be in (0, 1], not {threshold}")
    cand = ov.iou >= threshold
    rows, cols, iou = ov.rows[cand], ov.cols[cand], ov.iou[cand]
    if rows.size == 0:
        return rows, cols, iou
    row_deg = np.bincount(rows, minlength=ov.n_true)
    col_deg = np.bincount(cols, minlength=ov.n_pred)
    simple = (row_deg[rows] == 1) & (col_deg[cols] == 1)
    if simple.all():
        return rows, cols, iou
    out_r, out_c, out_i = [rows[simple]], [cols[simple]], [iou[simple]]
    rows, cols, iou = rows[~simple], cols[~simple], iou[~simple]
    from scipy.optimize import linear_sum_assignment
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    # Bipartite graph of the conflicting candidates: nodes 0..n_true-1 then the predictions.
    n = ov.n_true + ov.n_pred
    graph = coo_matrix((np.ones(rows.size), (rows, cols + ov.n_true)), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    edge_comp = comp[rows]
    order = np.argsort(edge_comp, kind="stable")
    bounds = np.flatnonzero(np.diff(edge_comp[order])) + 1
    for group in np.split(order, bounds):
        r, c, s = rows[group], cols[group], iou[group]
        ur, ri = np.unique(r, return_inverse=True)
        uc, ci = np.unique(c, return_inverse=True)
        k = min(ur.size, uc.size)
        cost = np.zeros((ur.size, uc.size))
        cost[ri, ci] = -1.0 - s / (2.0 * k)  # cardinality first, then summed IoU (StarDist's cost)
        a, b = linear_sum_assignment(cost)
        ok = cost[a, b] < 0
        a, b = a[ok], b[ok]
        m = np.zeros((ur.size, uc.size))
        m[ri, ci] = s
        out_r.append(ur[a])
        out_c.append(uc[b])
        out_i.append(m[a, b])
    return np.concatenate(out_r), np.concatenate(out_c), np.concatenate(out_i)


def match_stats(gt: np.ndarray, pred: np.ndarray, thresholds: Iterable[float] = DEFAULT_THRESHOLDS) -> dict[float, MatchStats]:
    """Scores of one image at each IoU threshold."""
    ov = overlaps(gt, pred)
    return stats_from_overlaps(ov, thresholds)


def stats_from_overlaps(ov: Overlaps, thresholds: Iterable[float] = DEFAULT_THRESHOLDS) -> dict[float, MatchStats]:
    """Scores at each threshold from an already computed overlap table."""
    out: dict[float, MatchStats] = {}
    for t in thresholds:
        t = float(t)
        r, _, s = match(ov, t)
        tp = int(r.size)
        out[t] = MatchStats(t, tp, ov.n_pred - tp, ov.n_true - tp, float(s.sum()))
    return out


def pool(per_image: Iterable[Mapping[float, MatchStats]]) -> dict[float, MatchStats]:
    """Pool per-image scores by summing TP, FP, FN (and matched IoU) at each threshold."""
    pooled: dict[float, MatchStats] = {}
    for scores in per_image:
        for t, s in scores.items():
            pooled[t] = pooled[t] + s if t in pooled else s
    return pooled


def average_precision(gt: np.ndarray | Sequence[np.ndarray], pred: np.ndarray | Sequence[np.ndarray],
                      thresholds: Iterable[float] = DEFAULT_THRESHOLDS) -> dict[str, Any]:
    """AP, F1, precision, recall and mean matched IoU, per image and pooled over images.

    ``gt`` and ``pred`` are one label image each, or equally long sequences of them.
    Returns ``{"thresholds": [...], "per_image": [{t: MatchStats}, ...], "pooled": {t: MatchStats}}``;
    ``result["pooled"][0.5].ap`` is the pooled AP at IoU 0.5.
    """
    thresholds = tuple(float(t) for t in thresholds)
    gts = [gt] if isinstance(gt, np.ndarray) else list(gt)
    preds = [pred] if isinstance(pred, np.ndarray) else list(pred)
    if len(gts) != len(preds):
        raise ValueError(f"{len(gts)} ground-truth images but {len(preds)} predictions")
    per_image = [match_stats(g, p, thresholds) for g, p in zip(gts, preds)]
    pooled = pool(per_image) if per_image else {t: MatchStats(t, 0, 0, 0, 0.0, 0) for t in thresholds}
    return {"thresholds": list(thresholds), "per_image": per_image, "pooled": pooled}
