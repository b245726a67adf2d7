"""Automatic object-size estimation (core/size_estimate.py and Segmenter.estimate_diameter)."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest

from efficell_app.core.cancel import CancelToken
from efficell_app.core.errors import Cancelled
from efficell_app.core.images import ImageData, model_input
from efficell_app.core.size_estimate import (
    MIN_OBJECTS,
    PROBE_WINDOW,
    Probe,
    _best,
    _whole_objects,
    _window,
    estimate_diameter,
    probe_cost,
)


def disks(diameter: float, seed: int = 0) -> np.ndarray:
    """Bright disks (diameters within +-8 % of ``diameter``) on a dark noisy background, spaced 1.7 diameters apart."""
    rng = np.random.default_rng(seed)
    size = int(max(256, 7 * diameter))
    step = 1.7 * diameter
    img = np.zeros((size, size), np.float32)
    yy, xx = np.mgrid[0:size, 0:size]
    for cy in np.arange(step / 2, size - step / 4, step):
        for cx in np.arange(step / 2, size - step / 4, step):
            r = diameter / 2 * rng.uniform(0.92, 1.08)
            y, x = cy + rng.uniform(-0.15, 0.15) * diameter, cx + rng.uniform(-0.15, 0.15) * diameter
            inside = np.clip(r + 0.5 - np.hypot(yy - y, xx - x), 0, 1)  # anti-aliased edge
            np.maximum(img, inside * rng.uniform(0.6, 1.0), out=img)
    img += rng.normal(0, 0.03, img.shape).astype(np.float32)
    return (np.clip(img, 0, 1) * 200 + 10).astype(np.uint8)


class CountingPredict:
    """Wraps a DensePredictor: records every input shape (the model pixels the estimate costs)."""

    def __init__(self, predictor) -> None:  # noqa: ANN001
        self.predictor = predictor
        self.shapes: list[tuple[int, int]] = []

    def __call__(self, x: np.ndarray, progress=None):  # noqa: ANN001, ANN204
        self.shapes.append(x.shape[1:])
        return self.predictor.predict(x, None, progress)


@pytest.fixture(scope="module")
def builtin():  # noqa: ANN201
    import torch

    from efficell_app.core.pipeline import Segmenter

    torch.set_num_threads(1)
    return Segmenter.load(None, device="cpu")


@pytest.mark.slow
@pytest.mark.parametrize("diameter", [12, 24, 48, 96])
def test_builtin_model_estimates_disk_size_within_25_percent(builtin, diameter: int) -> None:  # noqa: ANN001
    img = ImageData(disks(diameter, seed=diameter)[None])
    d, _ = builtin.estimate_diameter(model_input(img, builtin.meta.channels), None, lambda f: None)
    assert d is not None
    assert abs(np.log(d / diameter)) <= np.log(1.25), f"estimated {d:.1f} px for disks of {diameter} px"


def test_cost_is_bounded_and_accounted(random_segmenter) -> None:  # noqa: ANN001
    import torch

    torch.set_num_threads(1)
    img = ImageData(disks(20, seed=1)[:, :300][None])  # not square
    x = model_input(img)
    predict = CountingPredict(random_segmenter.predictor)
    seen: list[float] = []
    est = estimate_diameter(predict, x, random_segmenter.scaled_params(1.0), report=seen.append)
    assert est.model_pixels == sum(h * w for h, w in predict.shapes)
    assert len(predict.shapes) == len(est.probes) <= 6
    assert est.passes(img.shape) <= probe_cost(img.shape) + 1e-9
    # Every probe but the coarse whole-image one stays within one window.
    assert all(h <= PROBE_WINDOW + 1 and w <= PROBE_WINDOW + 1 for h, w in predict.shapes[1:])
    for p in est.probes:
        y0, x0, wh, ww = p.window
        assert 0 <= y0 and 0 <= x0 and y0 + wh <= img.shape[0] and x0 + ww <= img.shape[1]
    assert seen and seen[-1] == pytest.approx(1.0) and all(b >= a - 1e-9 for a, b in pairwise(seen))
    assert est.diameter is None or est.diameter > 0


def test_probe_cost_for_a_1024_image_is_well_under_one_and_a_half_passes() -> None:
    assert probe_cost((1024, 1024)) <= 0.4
    assert probe_cost((512, 512)) <= 1.4
    assert probe_cost((4096, 4096)) < 0.1


def test_window_goes_where_the_foreground_is() -> None:
    density = np.zeros((64, 64), np.float32)
    density[50:60, 2:12] = 1.0  # objects only in the lower-left corner
    y0, x0, wh, ww = _window(256, 256, 2.0, 256, density)  # a 128 x 128 input-pixel window
    assert (wh, ww) == (128, 128)
    assert y0 <= 200 <= y0 + wh and x0 <= 28 <= x0 + ww
    # Uniform density: the central window; a window that covers the image: None.
    assert _window(256, 256, 2.0, 256, np.ones((64, 64), np.float32)) == (64, 64, 128, 128)
    assert _window(100, 80, 1.0, 256, None) is None


def test_objects_cut_by_the_window_are_left_out_when_enough_remain() -> None:
    labels = np.zeros((40, 40), np.int32)
    labels[0:5, 10:15] = 1  # touches the top edge
    for i, c in enumerate((5, 15, 25), start=2):
        labels[15:20, c:c + 5] = i
    keep = _whole_objects(labels, (True, True, True, True))
    assert keep.tolist() == [False, False, True, True, True]
    # Not cut (the window's top is the image's top): kept.
    assert _whole_objects(labels, (False, True, True, True))[1]
    # Too few whole objects: the cut ones count too.
    assert _whole_objects(labels[:, :22], (True, True, True, True)).sum() == MIN_OBJECTS


def test_blank_image_gives_no_diameter_and_segment_still_works(random_segmenter) -> None:  # noqa: ANN001
    img = ImageData(np.full((1, 96, 96), 7, np.uint16))
    d, _ = random_segmenter.estimate_diameter(model_input(img), None, lambda f: None)
    res = random_segmenter.segment(img)
    assert res.n_cells == 0 and res.settings["diameter_estimated"]
    assert d is None or d > 0


def test_native_pass_is_computed_only_when_unpacked(random_segmenter) -> None:  # noqa: ANN001
    seg = random_segmenter
    calls: list[tuple[int, ...]] = []
    real = seg.predictor.predict

    def spy(xs, cancel=None, progress=None):  # noqa: ANN001, ANN202
        calls.append(xs.shape)
        return real(xs, cancel, progress)

    seg.predictor.predict = spy
    try:
        # Larger than one probe window: the probe at scale 1 saw a window, so the native pass is extra.
        x = model_input(ImageData(disks(48, seed=2)[None]))  # 336 x 336
        _, native = seg.estimate_diameter(x, None, lambda f: None)
        n = len(calls)
        assert x.shape not in calls
        prob, geo, labels = native
        assert len(calls) == n + 1 and calls[-1] == x.shape
        assert prob.shape == geo.shape == x.shape and labels.shape == x.shape[1:]
        list(native)
        assert len(calls) == n + 1  # computed once
        # Small enough for the probe at scale 1 to cover it whole: that probe is the native pass.
        calls.clear()
        x = model_input(ImageData(disks(24, seed=2)[:200, :200][None]))
        _, native = seg.estimate_diameter(x, None, lambda f: None)
        assert calls.count(x.shape) == 1
        prob, geo, labels = native
        assert calls.count(x.shape) == 1 and labels.shape == x.shape[1:]
        assert np.array_equal(prob, real(x)[0])
    finally:
        seg.predictor.predict = real


def test_estimate_can_be_cancelled(random_segmenter) -> None:  # noqa: ANN001
    tok = CancelToken()
    tok.cancel()
    x = model_input(ImageData(disks(24, seed=3)[None]))
    with pytest.raises(Cancelled):
        random_segmenter.estimate_diameter(x, tok, lambda f: None)


def _p(scale: float, diameter: float, inconsistency: float, n: int = 10) -> Probe:
    return Probe(scale, (0, 0, 100, 100), 10_000, n, diameter, inconsistency)


def test_no_enlarging_probe_when_native_objects_are_already_target_sized() -> None:
    # The x2 probe is the most self-consistent, but at x1 the objects are already >= the target:
    # it must not be chosen (it would read 37 px cells as 7 px ones).
    probes = [_p(0.5, 20.0, 0.34), _p(1.0, 26.0, 0.38), _p(2.0, 14.0, 0.33), _p(2.83, 20.0, 0.31)]
    assert _best(probes, target=24.0).scale == 0.5
    assert _best(probes).scale == 2.83  # without the constraint (the old behaviour)


def test_enlarging_probe_still_chosen_for_small_native_objects() -> None:
    probes = [_p(0.5, 9.0, 0.50), _p(1.0, 18.0, 0.27), _p(2.0, 18.0, 0.22)]
    assert _best(probes, target=24.0).scale == 2.0
    # A native probe with too few objects says nothing about their size: no constraint.
    probes = [_p(1.0, 30.0, 0.27, n=2), _p(2.0, 20.0, 0.22)]
    assert _best(probes, target=24.0).scale == 2.0


def test_estimate_skips_enlarging_probes_for_target_sized_objects() -> None:
    """End to end with a stand-in predictor that always 'finds' 30 px objects at scale 1."""
    from efficell_app.core.instances import InstanceParams

    seen: list[float] = []

    def predict(xs: np.ndarray, progress=None):  # noqa: ANN001, ANN202
        seen.append(xs.shape[1])
        h, w = xs.shape[1:]
        yy, xx = np.mgrid[0:h, 0:w]
        inside = ((yy % 40) - 20) ** 2 + ((xx % 40) - 20) ** 2 < 15 ** 2
        prob = np.zeros((3, h, w), np.float32)
        prob[0] = ~inside
        prob[1] = inside
        geo = np.zeros((3, h, w), np.float32)
        geo[0] = inside * 0.9
        return prob, geo

    x = np.zeros((3, 200, 200), np.float32)
    est = estimate_diameter(predict, x, InstanceParams(), target=24.0)
    native = next(p for p in est.probes if p.scale == 1.0)
    assert native.diameter >= 24.0
    assert all(p.scale <= 1.0 for p in est.probes), [p.scale for p in est.probes]
    assert est.chosen.scale <= 1.0
    free = estimate_diameter(predict, x, InstanceParams())
    assert any(p.scale > 1.0 for p in free.probes)
