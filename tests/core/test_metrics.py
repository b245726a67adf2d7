"""Matching and AP: hand-built cases, an independent brute-force reference on real masks, speed."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import maximum_bipartite_matching

from efficell_app.core.images import read_mask
from efficell_app.core.metrics import MatchStats, average_precision, match, match_stats, overlaps, pool


def boxes(shape: tuple[int, int], *rects: tuple[int, int, int, int]) -> np.ndarray:
    """Label image with one object per (row0, row1, col0, col1) rectangle, numbered 1.."""
    out = np.zeros(shape, np.int32)
    for k, (r0, r1, c0, c1) in enumerate(rects, start=1):
        out[r0:r1, c0:c1] = k
    return out


GT3 = boxes((40, 60), (0, 10, 0, 10), (20, 30, 0, 10), (0, 10, 30, 40))


# ----------------------------------------------------------------------------- hand-built


def test_perfect_match_is_ap_one_at_every_threshold() -> None:
    pred = GT3.copy()
    pred[pred > 0] += 10  # different numbering must not matter
    res = average_precision(GT3, pred, thresholds=(0.5, 0.75, 0.9, 1.0))
    for t, s in res["pooled"].items():
        assert (s.tp, s.fp, s.fn) == (3, 0, 0)
        assert s.ap == s.f1 == s.precision == s.recall == 1.0
        assert s.mean_matched_iou == pytest.approx(1.0)


def test_one_missed_object() -> None:
    pred = GT3.copy()
    pred[pred == 2] = 0
    s = match_stats(GT3, pred)[0.5]
    assert (s.tp, s.fp, s.fn) == (2, 0, 1)
    assert s.ap == pytest.approx(2 / 3)
    assert s.precision == 1.0 and s.recall == pytest.approx(2 / 3)
    assert s.f1 == pytest.approx(0.8)


def test_one_extra_object() -> None:
    pred = GT3.copy()
    pred[30:38, 50:58] = 9
    s = match_stats(GT3, pred)[0.5]
    assert (s.tp, s.fp, s.fn) == (3, 1, 0)
    assert s.ap == pytest.approx(0.75)
    assert s.precision == pytest.approx(0.75) and s.recall == 1.0


def test_split_object() -> None:
    gt = boxes((20, 20), (0, 20, 0, 20))  # 400 px
    pred = boxes((20, 20), (0, 12, 0, 20), (12, 20, 0, 20))  # IoU 0.6 and 0.4
    res = match_stats(gt, pred, thresholds=(0.3, 0.5, 0.75))
    assert (res[0.3].tp, res[0.3].fp, res[0.3].fn) == (1, 1, 0)  # one-to-one even when both pass
    assert res[0.3].mean_matched_iou == pytest.approx(0.6)  # the better of the two
    assert (res[0.5].tp, res[0.5].fp, res[0.5].fn) == (1, 1, 0)
    assert (res[0.75].tp, res[0.75].fp, res[0.75].fn) == (0, 2, 1)
    assert res[0.75].ap == 0.0 and res[0.75].mean_matched_iou is None


def test_merged_objects() -> None:
    gt = boxes((20, 20), (0, 12, 0, 20), (12, 20, 0, 20))
    pred = boxes((20, 20), (0, 20, 0, 20))
    s = match_stats(gt, pred)[0.5]
    assert (s.tp, s.fp, s.fn) == (1, 0, 1)
    assert s.ap == pytest.approx(0.5)


def test_exact_half_split_matches_only_once() -> None:
    gt = boxes((20, 20), (0, 20, 0, 20))
    pred = boxes((20, 20), (0, 10, 0, 20), (10, 20, 0, 20))  # IoU exactly 0.5 with both halves
    s = match_stats(gt, pred)[0.5]
    assert (s.tp, s.fp, s.fn) == (1, 1, 0)


def test_empty_conventions() -> None:
    empty = np.zeros((40, 60), np.int32)
    both = match_stats(empty, empty)[0.5]
    assert (both.tp, both.fp, both.fn) == (0, 0, 0)
    assert both.ap == both.f1 == both.precision == both.recall == 1.0
    assert both.mean_matched_iou is None
    no_gt = match_stats(empty, GT3)[0.5]
    assert (no_gt.tp, no_gt.fp, no_gt.fn) == (0, 3, 0)
    assert no_gt.ap == no_gt.precision == no_gt.f1 == 0.0 and no_gt.recall == 0.0
    no_pred = match_stats(GT3, empty)[0.5]
    assert (no_pred.tp, no_pred.fp, no_pred.fn) == (0, 0, 3)
    assert no_pred.ap == no_pred.recall == no_pred.precision == 0.0
    # An empty pair adds nothing to pooled scores.
    res = average_precision([GT3, empty], [GT3, empty])
    assert res["pooled"][0.5].ap == 1.0 and res["pooled"][0.5].n_images == 2
    assert average_precision([], [])["pooled"][0.5].n_images == 0


def test_pooled_is_sum_of_counts_not_mean_of_ap() -> None:
    half = GT3.copy()
    half[half >= 2] = 0
    big = boxes((40, 60), *[(r, r + 4, c, c + 4) for r in range(0, 40, 5) for c in range(0, 60, 5)])
    res = average_precision([GT3, big], [half, big])
    p = res["pooled"][0.5]
    assert (p.tp, p.fp, p.fn) == (1 + 96, 0, 2)
    assert p.ap == pytest.approx(97 / 99)
    per = [r[0.5].ap for r in res["per_image"]]
    assert per == pytest.approx([1 / 3, 1.0])
    assert p.ap != pytest.approx(np.mean(per))
    assert pool(res["per_image"])[0.5] == p


def test_label_values_need_not_be_sequential() -> None:
    gt = GT3.astype(np.uint64) * np.uint64(2**40)  # huge, sparse ids
    pred = GT3.astype(np.uint16) * 1000
    ov = overlaps(gt, pred)
    assert list(ov.true_ids) == [2**40, 2 * 2**40, 3 * 2**40]
    assert list(ov.pred_ids) == [1000, 2000, 3000]
    assert match_stats(gt, pred)[0.9].tp == 3
    assert match_stats(GT3.astype(np.float32), GT3)[0.9].tp == 3  # integer-valued floats are fine


@pytest.mark.parametrize(
    ("gt", "pred", "words"),
    [
        (GT3, GT3[:, :50], "shape"),
        (GT3 - 1, GT3, "negative"),
        (GT3 + 0.5, GT3, "non-integer"),
        (GT3 > 0, GT3, "boolean"),
        (GT3.astype(np.complex64), GT3, "type"),
    ],
)
def test_bad_inputs_are_refused(gt: np.ndarray, pred: np.ndarray, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        match_stats(gt, pred)


def test_bad_threshold_and_mismatched_lists() -> None:
    with pytest.raises(ValueError, match="threshold"):
        match_stats(GT3, GT3, thresholds=(0.0,))
    with pytest.raises(ValueError, match="2 ground-truth"):
        average_precision([GT3, GT3], [GT3])
    with pytest.raises(ValueError, match="cannot add"):
        _ = MatchStats(0.5, 1, 0, 0) + MatchStats(0.75, 1, 0, 0)


def test_to_dict_is_plain_and_complete() -> None:
    d = match_stats(GT3, GT3)[0.5].to_dict()
    assert d["ap"] == 1.0 and d["n_true"] == 3 and d["n_pred"] == 3 and d["tp"] == 3
    assert set(d) >= {"threshold", "tp", "fp", "fn", "ap", "precision", "recall", "f1", "mean_matched_iou"}


# ----------------------------------------------------------------------------- brute force on real masks


def brute_iou(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IoU matrix by an explicit loop over every object pair (slow, obviously right)."""
    tids = [int(v) for v in np.unique(gt) if v]
    pids = [int(v) for v in np.unique(pred) if v]
    iou = np.zeros((len(tids), len(pids)))
    for i, t in enumerate(tids):
        gm = gt == t
        for j, p in enumerate(pids):
            pm = pred == p
            inter = np.logical_and(gm, pm).sum()
            if inter:
                iou[i, j] = inter / np.logical_or(gm, pm).sum()
    return np.array(tids), np.array(pids), iou


def brute_tp(iou: np.ndarray, t: float) -> tuple[int, float]:
    """Number of matches (maximum bipartite matching) and their best summed IoU (dense assignment)."""
    if iou.size == 0:
        return 0, 0.0
    cand = iou >= t
    n = int((maximum_bipartite_matching(csr_matrix(cand.astype(np.int8)), perm_type="column") >= 0).sum())
    cost = np.where(cand, -1.0 - iou / (2 * min(iou.shape)), 0.0)
    r, c = linear_sum_assignment(cost)
    ok = cand[r, c]
    assert ok.sum() == n
    return n, float(iou[r[ok], c[ok]].sum())


def perturb(gt: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A plausible prediction: shifted, some objects eroded or dilated, dropped, merged, split, plus extras."""
    from scipy import ndimage as ndi

    pred = np.roll(gt, (2, -3), axis=(0, 1)).astype(np.int32)
    ids = [int(v) for v in np.unique(pred) if v]
    for k in rng.choice(ids, size=max(1, len(ids) // 4), replace=False):
        obj = pred == k
        pred[obj] = 0
        pred[ndi.binary_erosion(obj, iterations=int(rng.integers(1, 4)))] = k
    for k in rng.choice(ids, size=max(1, len(ids) // 8), replace=False):
        pred[pred == k] = 0
    if len(ids) > 3:
        a, b = ids[0], ids[1]
        pred[pred == b] = a  # merge
        rows, _ = np.nonzero(pred == ids[2])
        if rows.size:
            split = (pred == ids[2]) & (np.arange(gt.shape[0])[:, None] > np.median(rows))
            pred[split] = pred.max() + 1
    pred[:6, :6] = pred.max() + 1  # an extra object
    return pred


@pytest.mark.parametrize("index", [0, 1, 2, 3])
def test_matches_brute_force_on_real_masks(dsb_pairs, phase_pairs, index: int) -> None:
    pairs = dsb_pairs + phase_pairs
    gt = read_mask(pairs[index % len(pairs)][1])
    if index == 3:
        gt = read_mask(phase_pairs[0][1])
    rng = np.random.default_rng(index)
    pred = perturb(gt, rng)
    tids, pids, ref = brute_iou(gt, pred)
    ov = overlaps(gt, pred)
    np.testing.assert_array_equal(ov.true_ids, tids)
    np.testing.assert_array_equal(ov.pred_ids, pids)
    np.testing.assert_allclose(ov.dense(), ref, rtol=0, atol=1e-12)
    thresholds = (0.1, 0.3, 0.5, 0.75, 0.9)
    got = match_stats(gt, pred, thresholds)
    for t in thresholds:
        n, iou_sum = brute_tp(ref, t)
        s = got[t]
        assert (s.tp, s.fp, s.fn) == (n, len(pids) - n, len(tids) - n), t
        assert s.sum_matched_iou == pytest.approx(iou_sum, abs=1e-9), t


def test_matching_resolves_conflicts_optimally() -> None:
    # Two true objects, three predictions; greedy-by-IoU would match (A, p1) and leave B unmatched.
    ov_iou = np.array([[0.45, 0.40, 0.0], [0.42, 0.0, 0.0]])
    r, c = np.nonzero(ov_iou)
    from efficell_app.core.metrics import Overlaps

    ov = Overlaps(np.array([1, 2]), np.array([1, 2, 3]), r, c, np.ones(r.size, np.int64), ov_iou[r, c])
    mr, mc, mi = match(ov, 0.3)
    assert sorted(zip(mr.tolist(), mc.tolist())) == [(0, 1), (1, 0)]
    assert mi.sum() == pytest.approx(0.82)


# ----------------------------------------------------------------------------- speed


def test_2k_image_with_3000_cells_well_under_a_second() -> None:
    from skimage.segmentation import expand_labels

    rng = np.random.default_rng(0)
    gt = np.zeros((2048, 2048), np.int32)
    pts = rng.integers(0, 2048, (3000, 2))
    gt[pts[:, 0], pts[:, 1]] = np.arange(1, 3001)
    gt = expand_labels(gt, 18)
    pred = np.roll(gt, 3, axis=1)
    best = np.inf
    for _ in range(2):
        t0 = time.perf_counter()
        res = average_precision(gt, pred)
        best = min(best, time.perf_counter() - t0)
    assert res["pooled"][0.5].n_true == len(np.unique(gt)) - 1
    assert res["pooled"][0.5].tp > 2500
    assert best < 1.0, f"{best:.2f} s"
