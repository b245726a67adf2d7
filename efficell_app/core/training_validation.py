"""Scoring adapters during few-shot training: validation images, pooled counts, threshold choice.

A validation image is scored through the real tiling (:class:`~.inference.DensePredictor`,
encoder features from the training cache) and the real post-processing
(``instances.dense_to_labels``), against its labels at the original scale. Scores are kept
as match counts (:class:`~.metrics.MatchStats`) per image, so that the images held out by
different folds of a cross-validation can be pooled (counts add; AP does not) and the
instance thresholds can be chosen on all of them at once.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .instances import InstanceParams
from .metrics import MatchStats, match, match_stats, overlaps, pool

IOU_THRESHOLDS = (0.5, 0.75, 0.9)
FG_THRESHOLDS = (0.3, 0.4, 0.5, 0.6)
MARKER_THRESHOLDS = (0.3, 0.4, 0.5, 0.6)
MAX_VAL_SIDE = 768  # model pixels: a larger held-out image is scored on its busiest window of this size
# A threshold changes only where it improves pooled AP@0.5 by more than this, and only on images holding at
# least MIN_OBJECTS_TO_TUNE objects: on the training split, re-tuning on fewer cells or for smaller gains lost
# AP on the other images more often than it gained (docs/method.md).
THRESHOLD_MARGIN = 0.01
MIN_OBJECTS_TO_TUNE = 50
# Trained weights replace the start only on evidence: their held-out errors (false positives + misses at IoU 0.5,
# pooled) must be fewer than the start's with a one-sided p below this, in the exact conditional test of two
# Poisson counts. A fixed margin in AP was not enough: gains of 2-8 objects on the few dozen cells of 1-5 images
# did not carry over to the rest of a dataset (docs/method.md).
EVIDENCE_ALPHA = 0.05
# ... and their pooled held-out AP@0.5 must beat the start's by more than this many objects' worth (1 / objects
# held out): with the few cells of one image's band, a single cell that happens to match is not evidence.
MIN_IMPROVEMENT_OBJECTS = 1.0


@dataclass
class ValImage:
    """One validation image at model scale with its labels at the original scale."""

    name: str
    x: np.ndarray  # (3, h, w) normalised, at model scale
    gt: np.ndarray  # (H, W) labels at the original scale
    image: int = -1  # index of the training image it comes from (-1: a separate validation image)


Counts = list[dict[float, MatchStats]]  # per validation image, match counts at each IoU threshold
Dense = list[tuple[np.ndarray, np.ndarray]]  # per validation image: (prob (3,h,w), distance (1,h,w)), float16


def busiest_window(mask: np.ndarray, side: int) -> tuple[slice, slice]:
    """The ``side`` x ``side`` window (or less, for a smaller image) with the most labelled pixels."""
    h, w = mask.shape
    wh, ww = min(side, h), min(side, w)
    if (wh, ww) == (h, w):
        return slice(0, h), slice(0, w)
    fg = np.pad((mask > 0).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    step = max(1, min(wh, ww) // 8)
    ys, xs = np.arange(0, h - wh + 1, step), np.arange(0, w - ww + 1, step)
    sums = fg[ys[:, None] + wh, xs[None, :] + ww] - fg[ys[:, None], xs[None, :] + ww] - fg[ys[:, None] + wh, xs[None, :]] \
        + fg[ys[:, None], xs[None, :]]
    iy, ix = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return slice(int(ys[iy]), int(ys[iy]) + wh), slice(int(xs[ix]), int(xs[ix]) + ww)


def val_image(name: str, x: np.ndarray, gt: np.ndarray, image: int = -1, max_side: int = MAX_VAL_SIDE) -> ValImage:
    """A validation image, cut to its busiest ``max_side`` window at model scale when larger (bounded cost)."""
    from .training_data import resize_labels

    h, w = x.shape[1:]
    if max(h, w) <= max_side:
        return ValImage(name, np.ascontiguousarray(x, dtype=np.float32), gt, image)
    ys, xs = busiest_window(resize_labels(gt, (h, w)), max_side)
    sy, sx = gt.shape[0] / h, gt.shape[1] / w  # the same window at the original scale
    oy = slice(int(round(ys.start * sy)), int(round(ys.stop * sy)))
    ox = slice(int(round(xs.start * sx)), int(round(xs.stop * sx)))
    from skimage.segmentation import relabel_sequential

    return ValImage(f"{name} [window]", np.ascontiguousarray(x[:, ys, xs], dtype=np.float32),
                    relabel_sequential(gt[oy, ox])[0].astype(np.int32), image)


def labels_of(v: ValImage, prob: np.ndarray, dist: np.ndarray, params: InstanceParams) -> np.ndarray:
    """Instances of one validation image at its original scale."""
    from skimage.segmentation import relabel_sequential

    from .instances import dense_to_labels
    from .training_data import resize_labels

    lab = resize_labels(dense_to_labels(prob.astype(np.float32), dist.astype(np.float32), params), v.gt.shape)
    return relabel_sequential(lab)[0].astype(np.int32)


def image_counts(vals: Sequence[ValImage], dense: Dense, params: InstanceParams) -> Counts:
    return [match_stats(v.gt, labels_of(v, p, d[0], params), IOU_THRESHOLDS) for v, (p, d) in zip(vals, dense)]


def scores(counts: Counts) -> dict[str, float]:
    """Pooled scores of some images' counts (the keys the training reports and stores)."""
    if not counts:
        return {"ap50": 0.0, "ap75": 0.0, "ap90": 0.0, "f1_50": 0.0, "precision_50": 0.0, "recall_50": 0.0,
                "mean_matched_iou": 0.0, "n_true": 0, "n_pred": 0, "n_images": 0}
    p = pool(counts)
    out = {"ap50": p[0.5].ap, "ap75": p[0.75].ap, "ap90": p[0.9].ap, "f1_50": p[0.5].f1,
           "precision_50": p[0.5].precision, "recall_50": p[0.5].recall,
           "mean_matched_iou": p[0.5].mean_matched_iou or 0.0, "n_true": p[0.5].n_true, "n_pred": p[0.5].n_pred,
           "n_images": len(counts)}
    return {k: (round(float(v), 4) if isinstance(v, float) else v) for k, v in out.items()}


def errors(counts: Counts) -> int:
    """False positives + misses at IoU 0.5 over some images' counts."""
    p = pool(counts)
    return int(p[0.5].fp + p[0.5].fn) if p else 0


def evidence(start: Counts, trained: Counts) -> dict[str, Any]:
    """How strongly the held-out images say the trained state errs less than the start.

    Given n = E0 + E1 errors of the two in all, if both were equally good each error would be the trained
    state's with probability 1/2: ``p_value`` = P(Binomial(n, 1/2) <= E1), the chance of so few errors on the
    trained side by luck (the conditional test of two Poisson rates; exact, so valid for a handful of cells).
    """
    from scipy.stats import binom

    e0, e1 = errors(start), errors(trained)
    p = float(binom.cdf(e1, e0 + e1, 0.5)) if e0 + e1 else 1.0
    return {"start_errors": e0, "trained_errors": e1, "p_value": round(p, 4), "alpha": EVIDENCE_ALPHA,
            "significant": p < EVIDENCE_ALPHA}


def keeps_trained(start: dict[str, Any], trained: dict[str, Any], proof: dict[str, Any] | None,
                  test: str = "unpaired") -> bool:
    """The keep rule: do the held-out scores (:func:`scores`) and errors (:func:`evidence`) say the trained state
    beats the start? ``test``: the evidence that decides — "unpaired" (the rule), "paired" (``proof["paired"]``,
    :func:`paired_evidence`: measured beside it) or "none" (the AP margin alone: the rule before 2026-12-05).
    Benchmarks replay the alternatives with it on runs that kept the trained weights."""
    if trained["ap50"] <= start["ap50"] + MIN_IMPROVEMENT_OBJECTS / max(start["n_true"], 1):
        return False
    if test == "none":
        return True
    ev = proof if test == "unpaired" else (proof or {}).get("paired")
    return ev is not None and ev["p_value"] < EVIDENCE_ALPHA


def error_objects(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The label ids of the true objects missed and of the predicted objects that are false, at IoU 0.5 (the
    errors :func:`errors` counts, one by one)."""
    ov = overlaps(gt, pred)
    rows, cols, _ = match(ov, 0.5)
    return np.setdiff1d(ov.true_ids, ov.true_ids[rows]), np.setdiff1d(ov.pred_ids, ov.pred_ids[cols])


def paired_evidence(gts: Sequence[np.ndarray], start: Sequence[np.ndarray], trained: Sequence[np.ndarray]) -> dict[str, Any]:
    """:func:`evidence` over the same errors, paired: which the trained state fixes and which it makes.

    Both are scored on the same objects, and most errors are the same ones (a cell both miss, a false object
    both see). A miss is the same error when both miss that true object; a false object is, when a false
    object of the other overlaps it at IoU >= 0.5. Only the discordant errors say which is better: given
    n = fixed + made, ``p_value`` = P(Binomial(n, 1/2) <= made) (McNemar's exact test). Per image: the true
    labels and the start's and the trained state's labels, at one scale.
    """
    from scipy.stats import binom

    fixed = made = shared = 0
    for gt, a, b in zip(gts, start, trained, strict=True):
        miss_a, false_a = error_objects(gt, a)
        miss_b, false_b = error_objects(gt, b)
        same_miss = np.intersect1d(miss_a, miss_b).size
        same_false = match(overlaps(np.where(np.isin(a, false_a), a, 0), np.where(np.isin(b, false_b), b, 0)), 0.5)[0].size
        fixed += miss_a.size + false_a.size - same_miss - same_false
        made += miss_b.size + false_b.size - same_miss - same_false
        shared += same_miss + same_false
    p = float(binom.cdf(made, fixed + made, 0.5)) if fixed + made else 1.0
    return {"fixed": int(fixed), "made": int(made), "shared": int(shared), "p_value": round(p, 4)}


def candidate_params(params: InstanceParams) -> list[InstanceParams]:
    """``params`` and its neighbours along each threshold (the set scored at every checkpoint)."""
    out = [params]
    out += [replace(params, marker_threshold=m) for m in MARKER_THRESHOLDS if abs(m - params.marker_threshold) > 1e-6]
    out += [replace(params, fg_threshold=f) for f in FG_THRESHOLDS if abs(f - params.fg_threshold) > 1e-6]
    return out


def can_tune(vals: Sequence[ValImage]) -> bool:
    """Enough objects to choose thresholds on (the count of the labels, at the original scale)."""
    return sum(int(len(np.unique(v.gt)) - 1) for v in vals) >= MIN_OBJECTS_TO_TUNE


def tune(vals: Sequence[ValImage], dense: Dense, params: InstanceParams,
         folds: Sequence[Sequence[int]] | None = None) -> tuple[InstanceParams, Counts]:
    """Coordinate search of ``marker_threshold`` then ``fg_threshold`` maximising pooled AP@0.5.

    The current value wins ties: a threshold changes only for a gain above ``THRESHOLD_MARGIN``.
    With ``folds`` (groups of indices into ``vals``, two or more), the change must also win out of
    fold: thresholds searched on the other groups' images, scored on each group's, pooled, must beat
    ``params`` by the margin (a search scored on the images it chose on always finds some gain).
    Returns the chosen parameters and their per-image counts.
    """
    best_p, best_c = _search(vals, dense, params)
    if best_p == params or folds is None or len(folds) < 2:
        return best_p, best_c
    held: list[Any] = [None] * len(vals)
    for group in folds:
        rest = [i for i in range(len(vals)) if i not in set(group)]
        p_g = _search([vals[i] for i in rest], [dense[i] for i in rest], params)[0] if rest else params
        for i, c in zip(group, image_counts([vals[i] for i in group], [dense[i] for i in group], p_g)):
            held[i] = c
    base = image_counts(vals, dense, params)
    if None in held or pool(held)[0.5].ap <= pool(base)[0.5].ap + THRESHOLD_MARGIN:
        return params, base
    return best_p, best_c


def _search(vals: Sequence[ValImage], dense: Dense, params: InstanceParams) -> tuple[InstanceParams, Counts]:
    """:func:`tune`'s search on these images alone."""
    best_p = params
    best_c = image_counts(vals, dense, params)
    best = pool(best_c)[0.5].ap if best_c else 0.0
    for name, grid in (("marker_threshold", MARKER_THRESHOLDS), ("fg_threshold", FG_THRESHOLDS)):
        start = best_p
        for v in grid:
            if abs(v - getattr(start, name)) < 1e-6:
                continue
            p = replace(start, **{name: v})
            c = image_counts(vals, dense, p)
            ap = pool(c)[0.5].ap if c else 0.0
            if ap > best + THRESHOLD_MARGIN:
                best_p, best_c, best = p, c, ap
    return best_p, best_c


class Validator:
    """Dense predictions of adapters on validation images, with encoder features from the training cache.

    ``warm`` fills the cache with every validation tile's features once; afterwards a
    prediction costs one adapter pass per tile. Keeps its timings so that a time budget can
    plan the validations it still needs.
    """

    def __init__(self, cache, vals: list[ValImage], device: str, tile: int, stride: int) -> None:  # noqa: ANN001
        self.cache, self.vals, self.device, self.tile, self.stride = cache, vals, device, tile, stride
        self.seconds_spent = 0.0
        self.predict_s_per_px = 0.0  # measured: one adapter pass, per model pixel
        self.score_s_per_px = 0.0  # measured: one post-processing + scoring, per model pixel

    def pixels(self, idx: Sequence[int] | None = None) -> int:
        return sum(self.vals[i].x.shape[1] * self.vals[i].x.shape[2] for i in (range(len(self.vals)) if idx is None else idx))

    def predict(self, adapters, idx: Sequence[int] | None = None, features_only: bool = False) -> Dense:  # noqa: ANN001
        from .feature_cache import CachedFeatureModel
        from .inference import DensePredictor

        idx = list(range(len(self.vals))) if idx is None else list(idx)
        model = CachedFeatureModel(self.cache, adapters, features_only=features_only)
        # no CPU fallback: the adapters being trained stay on the training device
        pred = DensePredictor(model, device=self.device, tile=self.tile, patch=self.stride, cpu_fallback=False)
        t0 = time.time()
        try:
            out = []
            for i in idx:
                p, g = pred.predict(self.vals[i].x)
                out.append((p.astype(np.float16), g[:1].astype(np.float16)))
        finally:
            adapters.train()
        if not features_only and idx:
            dt = time.time() - t0
            self.seconds_spent += dt
            self.predict_s_per_px = dt / max(self.pixels(idx), 1)
        return out

    def warm(self, adapters) -> None:  # noqa: ANN001
        """Compute (cache) the encoder features of every validation tile."""
        if self.vals:
            self.predict(adapters, features_only=True)

    def score(self, idx: Sequence[int], dense: Dense, params: Sequence[InstanceParams]) -> list[Counts]:
        """Per-image counts of the images ``idx`` (with their ``dense`` maps) under each of ``params``."""
        t0 = time.time()
        vals = [self.vals[i] for i in idx]
        out = [image_counts(vals, dense, p) for p in params]
        dt = time.time() - t0
        self.seconds_spent += dt
        if idx and params:
            self.score_s_per_px = dt / max(self.pixels(idx), 1) / len(params)
        return out

    def estimate_seconds(self, idx: Sequence[int] | None, n_params: int) -> float:
        """What predicting and scoring the images ``idx`` (None: all) under ``n_params`` settings costs."""
        return self.pixels(idx) * (self.predict_s_per_px + n_params * self.score_s_per_px)


def summary(per_fold: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean, spread and range of the per-fold gains over the start (for the report and the metadata)."""
    gains = [f["trained"]["ap50"] - f["start"]["ap50"] for f in per_fold]
    if not gains:
        return {}
    return {"gain_mean": round(float(np.mean(gains)), 4), "gain_sd": round(float(np.std(gains)), 4),
            "gain_min": round(float(np.min(gains)), 4), "gain_max": round(float(np.max(gains)), 4),
            "folds_improved": int(sum(g > 0 for g in gains)), "folds": len(gains)}


DIAMETER_MARGIN = 0.02  # a stored diameter must beat estimating it per image by this much AP@0.5


def choose_diameter(segmenter, items: Sequence[Any], cancel=None) -> dict[str, Any]:  # noqa: ANN001
    """Should an adapter segment at the diameter its training masks give, or estimate it per image?

    ``segmenter``: the starting model (a :class:`~.pipeline.Segmenter` that stores no diameter);
    ``items``: the training images with their masks. Each image is segmented twice: at the diameter
    the *other* images' masks give (their median; a single image: its own) and with the diameter
    estimated. The stored diameter is used only where it beats the estimate on these images by
    ``DIAMETER_MARGIN`` (pooled AP@0.5): a lab imaging at one magnification gains, a collection of
    mixed magnifications keeps the per-image estimate.
    """
    from .training_data import object_diameter

    ds = [object_diameter(it.mask) for it in items]
    fixed, auto = [], []
    for i, it in enumerate(items):
        ref = float(np.median(ds[:i] + ds[i + 1:])) if len(ds) > 1 else ds[i]
        fixed.append(match_stats(it.mask, segmenter.segment(it.img, diameter=ref, cancel=cancel).labels, (0.5,)))
        auto.append(match_stats(it.mask, segmenter.segment(it.img, cancel=cancel).labels, (0.5,)))
    ap_fixed, ap_auto = pool(fixed)[0.5].ap, pool(auto)[0.5].ap
    median = float(np.median(ds))
    use = ap_fixed > ap_auto + DIAMETER_MARGIN
    how = "the other images' median diameter" if len(ds) > 1 else "its own diameter"
    return {"median_px": round(median, 2), "per_image_px": [round(d, 2) for d in ds], "used": bool(use),
            "ap50_at_mask_diameter": round(ap_fixed, 4), "ap50_estimated": round(ap_auto, 4),
            "rule": f"each training image segmented by the starting model at {how} and with the diameter estimated; "
                    f"the masks' diameter is stored when it scores higher by more than {DIAMETER_MARGIN} AP@0.5"}
