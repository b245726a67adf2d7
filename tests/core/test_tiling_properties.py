"""Property tests: tiling covers every pixel, tiled prediction equals untiled, strips stitch
to the same labels as the whole image, and the measurement table's areas add up."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import ndimage as ndi

from efficell_app.core.inference import DensePredictor, blend_window, plan_tiles
from efficell_app.core.instances import InstanceParams, dense_to_labels
from efficell_app.core.standins import PointwiseModel, same_partition
from efficell_app.core.strips import StripPlan, label_in_strips, stream_dense
from efficell_app.core.targets import make_targets

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ----------------------------------------------------------------------------- helpers


def disks(h: int, w: int, n: int, rmax: int, seed: int) -> np.ndarray:
    from skimage.draw import disk

    rng = np.random.default_rng(seed)
    lab = np.zeros((h, w), np.int32)
    for i in range(1, n + 1):
        rr, cc = disk((rng.integers(0, h), rng.integers(0, w)), int(rng.integers(2, rmax + 1)), shape=(h, w))
        lab[rr, cc] = i
    return lab


def dense_from_labels(lab: np.ndarray, seed: int, noise: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Plausible, slightly noisy model outputs for a label image: (prob (3,H,W), dist (H,W))."""
    rng = np.random.default_rng(seed)
    sem, geo = make_targets(lab)
    prob = np.eye(3, dtype=np.float32)[sem].transpose(2, 0, 1)
    prob = ndi.uniform_filter(prob, size=(1, 3, 3))
    prob = np.clip(prob + rng.normal(0, noise, prob.shape).astype(np.float32), 0, None) + 1e-6
    prob /= prob.sum(0, keepdims=True)
    # Real outputs are continuous; exact float ties between seed pixels are broken by the order of
    # skimage's heap, which depends on the whole image (the one case strips cannot reproduce).
    dist = geo[0] + rng.uniform(0, 1e-3, geo[0].shape).astype(np.float32)
    return prob.astype(np.float32), dist


# Semantic weights of the stand-in network these properties were written against.
TILING_SEM = {"sem_weight": (-8.0, 6.0, 1.0), "sem_bias": (3.0, -2.0, 0.0)}


def pointwise_model() -> PointwiseModel:
    """A fully-convolutional fake with a 1-pixel receptive field: tiling must not change its output."""
    return PointwiseModel(**TILING_SEM)


class SmoothingModel(PointwiseModel):
    """A fake with a 5x5 receptive field (zero padding at tile edges, like a real CNN)."""

    def __init__(self) -> None:
        super().__init__(**TILING_SEM)

    def __call__(self, x):  # noqa: ANN001, ANN204
        import torch.nn.functional as F

        y = F.avg_pool2d(x, 5, stride=1, padding=2, count_include_pad=True)
        return super().__call__(y)


# ----------------------------------------------------------------------------- tile plans


@SETTINGS
@given(h=st.integers(1, 3000), w=st.integers(1, 3000), tile_p=st.integers(1, 40), patch=st.sampled_from([8, 14, 16]),
       overlap_frac=st.floats(0.0, 0.5))
def test_plan_tiles_covers_every_pixel_with_positive_weight(h: int, w: int, tile_p: int, patch: int, overlap_frac: float) -> None:
    tile = tile_p * patch
    overlap = int(overlap_frac * tile)
    plan = plan_tiles(h, w, tile, patch, overlap)
    th, tw = plan.tile
    assert th % patch == 0 and tw % patch == 0 and th <= tile and tw <= tile
    ph, pw = max(h, th), max(w, tw)
    win = blend_window(th, tw, overlap if plan.n_tiles > 1 else 0)
    assert win.shape == (th, tw) and (win > 0).all()
    # The blend window is separable: check the weight sum one axis at a time.
    for starts, t, n, ramp in ((plan.starts_y, th, ph, win[:, tw // 2]), (plan.starts_x, tw, pw, win[th // 2, :])):
        assert list(starts) == sorted(set(starts)) and starts[0] == 0 and starts[-1] + t == n
        assert all(0 <= s and s + t <= n for s in starts)
        total = np.zeros(n, np.float64)
        for s in starts:
            total[s:s + t] += ramp
        assert (total > 0).all()


FAST = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(h=st.integers(8, 160), w=st.integers(8, 160), tile_p=st.integers(2, 8), overlap_frac=st.floats(0, 0.5), seed=st.integers(0, 999))
def test_tiled_prediction_equals_untiled(h: int, w: int, tile_p: int, overlap_frac: float, seed: int) -> None:
    x = np.random.default_rng(seed).random((3, h, w), dtype=np.float32)
    overlap = int(overlap_frac * tile_p) * 16
    tiled = DensePredictor(pointwise_model(), tile=16 * tile_p, patch=16, overlap=overlap).predict(x)
    whole = DensePredictor(pointwise_model(), tile=16 * 32, patch=16).predict(x)
    for a, b in zip(tiled, whole):
        assert a.shape == (3, h, w)
        np.testing.assert_allclose(a, b, atol=1e-5)


@FAST
@given(h=st.integers(8, 140), w=st.integers(8, 140), tile_p=st.integers(2, 6), seed=st.integers(0, 999))
def test_streamed_prediction_is_bit_identical(h: int, w: int, tile_p: int, seed: int) -> None:
    """stream_dense (used by the strips) gives exactly DensePredictor.predict, padding included."""
    x = np.random.default_rng(seed).random((3, h, w), dtype=np.float32)
    pred = DensePredictor(SmoothingModel(), tile=16 * tile_p, patch=16, overlap=16)
    prob, geo = pred.predict(x)
    blocks = list(stream_dense(pred, lambda a, b: x[:, a:b], h, w))
    assert [b[0] for b in blocks] == sorted(b[0] for b in blocks) and blocks[0][0] == 0
    assert np.array_equal(np.concatenate([b[1] for b in blocks], axis=1), prob)
    assert np.array_equal(np.concatenate([b[2] for b in blocks], axis=1), geo)


@pytest.mark.slow
def test_2000x3000_tiled_equals_untiled_within_tolerance() -> None:
    import torch

    torch.set_num_threads(1)
    coarse = np.random.default_rng(0).random((3, 250, 375), dtype=np.float32)
    x = np.ascontiguousarray(coarse.repeat(8, axis=1).repeat(8, axis=2))  # image-like: structure, not white noise
    tiled = DensePredictor(SmoothingModel(), tile=512, patch=16).predict(x)
    whole = DensePredictor(SmoothingModel(), tile=3008, patch=16).predict(x)
    for a, b in zip(tiled, whole):
        assert a.shape == (3, 2000, 3000)
        # Away from the image's own edge (padded differently: 3000 is not a multiple of 16), only the
        # zero padding of the model at tile edges differs, and the blend window fades it out.
        d = np.abs(a - b)[:, 8:-8, 8:-8]
        assert float(d.max()) < 0.02
        assert float(d.mean()) < 1e-4


@pytest.mark.parametrize("centre", [(64, 100), (100, 64), (64, 64), (112, 112)])
def test_object_on_a_tile_border_is_one_label(centre: tuple[int, int]) -> None:
    """A cell centred on tile seams (and corners) comes out as one label, as without tiles."""
    yy, xx = np.mgrid[0:256, 0:256]
    r = np.hypot(yy - centre[0], xx - centre[1])
    bump = np.clip(1.0 - r / 30.0, 0, 1).astype(np.float32)  # a cone: intensity ~ distance to its edge
    x = np.repeat(bump[None], 3, axis=0)
    prob, geo = DensePredictor(pointwise_model(), tile=64, patch=16, overlap=16).predict(x)
    lab = dense_to_labels(prob, geo[0], InstanceParams(marker_threshold=0.5, min_size=5))
    assert lab.max() == 1
    whole = dense_to_labels(*_split(DensePredictor(pointwise_model(), tile=256, patch=16).predict(x)),
                            InstanceParams(marker_threshold=0.5, min_size=5))
    assert same_partition(lab, whole)


def _split(pg: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    return pg[0], pg[1][0]


# ----------------------------------------------------------------------------- strips


@SETTINGS
@given(h=st.integers(20, 320), w=st.integers(10, 120), n=st.integers(0, 80), rmax=st.integers(2, 10),
       core=st.integers(1, 80), seed=st.integers(0, 10_000))
def test_strips_give_the_same_labels_as_the_whole_image(h: int, w: int, n: int, rmax: int, core: int, seed: int) -> None:
    lab = disks(h, w, n, rmax, seed)
    prob, dist = dense_from_labels(lab, seed)
    ref = dense_to_labels(prob, dist)
    # Exact whenever every foreground cluster is at most `margin` rows tall.
    sizes = [s[0].stop - s[0].start for s in ndi.find_objects(ndi.label((1 - prob[0]) > 0.5, np.ones((3, 3)))[0])]
    margin = max(sizes, default=1) + 1
    out = label_in_strips(prob, dist, plan=StripPlan(core_rows=core, margin=margin))
    assert out.dtype == np.int32 and out.max() == len(np.unique(out)) - (1 if (out == 0).any() else 0)
    assert same_partition(ref, out)


@SETTINGS
@given(seed=st.integers(0, 10_000), core=st.integers(4, 40))
def test_strips_without_seeds_match_the_whole_image_fallback(seed: int, core: int) -> None:
    """Strips whose windows have no seed must agree with the whole-image rule (seeds anywhere or none)."""
    lab = disks(160, 60, 12, 6, seed)
    prob, dist = dense_from_labels(lab, seed, noise=0.0)
    dist = dist.copy()
    rows = np.random.default_rng(seed).integers(0, 160, 2)
    dist[min(rows):max(rows) + 1] = np.minimum(dist[min(rows):max(rows) + 1], 0.3)  # no seeds in a band
    if seed % 3 == 0:
        dist[:] = np.minimum(dist, 0.3)  # no seeds at all: connected components everywhere
    ref = dense_to_labels(prob, dist)
    out = label_in_strips(prob, dist, plan=StripPlan(core_rows=core, margin=20))
    assert same_partition(ref, out)


def test_cells_taller_than_the_margin_stay_one_label() -> None:
    """Long cells crossing several strip borders are continued under one label."""
    from skimage.draw import ellipse

    lab = np.zeros((400, 120), np.int32)
    for i, cx in enumerate((20, 60, 100), start=1):
        rr, cc = ellipse(200, cx, 150, 12, shape=lab.shape)
        lab[rr, cc] = i
    prob, dist = dense_from_labels(lab, 0, noise=0.0)
    out = label_in_strips(prob, dist, InstanceParams(marker_threshold=0.3), plan=StripPlan(core_rows=40, margin=30))
    ref = dense_to_labels(prob, dist, InstanceParams(marker_threshold=0.3))
    assert ref.max() == 3
    assert out.max() == 3
    assert np.array_equal(out > 0, ref > 0)


# ----------------------------------------------------------------------------- measurements


@SETTINGS
@given(h=st.integers(1, 60), w=st.integers(1, 60), n=st.integers(0, 30), seed=st.integers(0, 10_000),
       gaps=st.booleans(), px=st.sampled_from([None, 0.5, 1.3]))
def test_measurement_areas_sum_to_the_foreground(h: int, w: int, n: int, seed: int, gaps: bool, px: float | None) -> None:
    from efficell_app.core.measure import area_column, measure_cells

    lab = disks(h, w, n, 8, seed)
    if gaps and lab.max() > 0:  # labels need not be consecutive
        lab = np.where(lab > 0, lab * 3 + 7, 0).astype(np.int32)
    df = measure_cells(lab, None, pixel_size_um=px)
    assert len(df) == len(np.unique(lab[lab > 0]))
    area = df[area_column(px)].to_numpy(dtype=float).sum()
    np.testing.assert_allclose(area, (lab > 0).sum() * (px or 1.0) ** 2, rtol=1e-9)
    assert set(df["cell_id"].astype(int)) == set(np.unique(lab[lab > 0]).tolist())
