"""The built-in recipe's uneven-brightness augmentation (phase 3 of the shipped model)."""

from __future__ import annotations

import numpy as np
import pytest

from efficell_app.core.training_data import uneven_brightness


@pytest.mark.parametrize("shape", [(3, 256, 256), (3, 200, 173), (3, 31, 256), (1, 64, 64)])
def test_grayscale_crop_is_scaled_by_a_smooth_field_within_bounds(shape: tuple[int, int, int]) -> None:
    rng = np.random.default_rng(0)
    img = np.ones(shape, np.float32)
    out = uneven_brightness(img, rng, low=0.2)
    assert out.shape == shape and out.dtype == np.float32
    assert out.min() >= 0.2 - 1e-6 and out.max() <= 1.0 + 1e-6
    assert np.allclose(out, out[0:1])  # one field for all (identical) channels
    # Smooth: neighbouring pixels differ far less than the field's range.
    assert np.abs(np.diff(out[0], axis=1)).max() < 0.5 * (out.max() - out.min()) + 1e-6


def test_field_varies_between_draws_and_is_reproducible_with_a_seed() -> None:
    img = np.ones((3, 128, 128), np.float32)
    a = uneven_brightness(img, np.random.default_rng(1))
    b = uneven_brightness(img, np.random.default_rng(1))
    c = uneven_brightness(img, np.random.default_rng(2))
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)


def test_colour_images_are_left_alone() -> None:
    rng = np.random.default_rng(0)
    he = rng.random((3, 64, 64)).astype(np.float32)  # channels differ: H&E-like colour
    assert uneven_brightness(he, rng) is he
