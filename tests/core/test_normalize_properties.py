"""Property tests for the whole-image per-channel percentile normalisation."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from efficell_app.core.images import normalize

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

shapes = st.tuples(st.integers(1, 3), st.integers(1, 24), st.integers(1, 24))
dtypes = st.sampled_from([np.uint8, np.uint16, np.int32, np.float32, np.float64])


@st.composite
def images(draw: st.DrawFn) -> np.ndarray:
    """(C, H, W) images of several dtypes: noise, few distinct values, or mostly constant."""
    shape = draw(shapes)
    dtype = draw(dtypes)
    kind = draw(st.sampled_from(["noise", "levels", "spike"]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    top = 255 if dtype == np.uint8 else 4095
    if kind == "noise":
        a = rng.integers(0, top + 1, shape)
    elif kind == "levels":
        a = rng.choice(rng.integers(0, top + 1, 3), size=shape)
    else:
        a = np.full(shape, draw(st.integers(0, top)))
        a.reshape(-1)[rng.integers(0, a.size)] = top  # one outlier pixel
    if np.dtype(dtype).kind == "f":
        return (a + rng.random(shape) * (kind == "noise")).astype(dtype)
    return a.astype(dtype)


@SETTINGS
@given(images())
def test_finite_float32_same_shape(img: np.ndarray) -> None:
    out = normalize(img)
    assert out.shape == img.shape
    assert out.dtype == np.float32
    assert np.isfinite(out).all()
    assert out.min() >= -0.5 and out.max() <= 1.5


@SETTINGS
@given(images())
def test_order_preserving_per_channel(img: np.ndarray) -> None:
    out = normalize(img)
    for c in range(img.shape[0]):
        order = np.argsort(img[c].ravel(), kind="stable")
        assert np.all(np.diff(out[c].ravel()[order]) >= 0)


@SETTINGS
@given(images(), st.one_of(st.sampled_from([0.01, 0.1]), st.floats(0.01, 100.0)),
       st.one_of(st.sampled_from([-1e7, 1e6, 1e7]), st.floats(-1e4, 1e4)))
def test_invariant_to_affine_rescaling(img: np.ndarray, a: float, b: float) -> None:
    x = img.astype(np.float64)
    out = normalize(x)
    out2 = normalize(a * x + b)
    np.testing.assert_allclose(out2, out, atol=2e-3, rtol=0)


@SETTINGS
@given(shapes, st.floats(-1e6, 1e6, allow_nan=False), dtypes)
def test_constant_channel_becomes_zeros(shape: tuple[int, int, int], value: float, dtype: type) -> None:
    if np.dtype(dtype).kind in "ui":
        info = np.iinfo(dtype)
        value = float(np.clip(round(value), info.min, info.max))
    img = np.full(shape, value, dtype=dtype)
    out = normalize(img)
    assert out.dtype == np.float32 and out.shape == shape
    assert (out == 0).all()


def test_constant_channel_next_to_a_varying_one() -> None:
    img = np.zeros((2, 16, 16), np.uint16)
    img[1] = np.arange(256).reshape(16, 16)
    out = normalize(img)
    assert (out[0] == 0).all()
    assert out[1].min() < 0.05 and out[1].max() > 0.95


def test_channels_are_normalised_independently() -> None:
    base = np.random.default_rng(1).random((16, 16))
    img = np.stack([base, base * 1000 + 7])
    out = normalize(img)
    np.testing.assert_allclose(out[0], out[1], atol=1e-5)


def test_large_offset_float64_keeps_precision() -> None:
    # float32 arithmetic would round 1e7 + x to steps of 1 and lose the signal.
    x = np.random.default_rng(0).integers(0, 4096, (1, 16, 16)).astype(np.float64)
    np.testing.assert_allclose(normalize(0.01 * x + 1e7), normalize(x), atol=1e-5)
