"""The classical Otsu + distance-watershed baseline on real images."""

from __future__ import annotations

import numpy as np
import pytest

from efficell_app.core.classical import estimate_diameter, intensity_plane, otsu_watershed
from efficell_app.core.images import ImageData, read_image, read_mask
from efficell_app.core.metrics import average_precision, match_stats


def test_reaches_sane_ap_on_dsb_images(dsb_pairs) -> None:
    gts, preds = [], []
    for img_path, mask_path in dsb_pairs:
        img = read_image(img_path)
        labels = otsu_watershed(img)
        assert labels.dtype == np.int32 and labels.shape == img.shape
        n = int(labels.max())
        assert n > 0 and np.array_equal(np.unique(labels), np.arange(n + 1))  # 0..N, no gaps
        gts.append(read_mask(mask_path))
        preds.append(labels)
    res = average_precision(gts, preds)
    best = max(r[0.5].ap for r in res["per_image"])
    assert best > 0.5
    assert res["pooled"][0.5].ap > 0.4


def test_given_diameter_is_used(dsb_pairs) -> None:
    img_path, mask_path = dsb_pairs[0]
    img, gt = read_image(img_path), read_mask(mask_path)
    auto = otsu_watershed(img)
    tiny = otsu_watershed(img, diameter=4.0)  # seeds every few pixels: over-split
    assert tiny.max() > auto.max()
    assert match_stats(gt, otsu_watershed(img, diameter=12.0))[0.5].ap > 0.3


def test_deterministic_and_accepts_plain_arrays(dsb_pairs) -> None:
    img = read_image(dsb_pairs[2][0])
    a = otsu_watershed(img)
    b = otsu_watershed(img.data[0].astype(np.float64))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, otsu_watershed(img))


def test_dark_objects_found_by_automatic_polarity(dsb_pairs) -> None:
    img_path, mask_path = dsb_pairs[2]
    plane = read_image(img_path).data[0].astype(np.float32)
    gt = read_mask(mask_path)
    bright = match_stats(gt, otsu_watershed(plane))[0.5].ap
    dark_plane = plane.max() - plane  # brightfield-like: objects darker than the background
    auto = match_stats(gt, otsu_watershed(dark_plane))[0.5].ap
    wrong = match_stats(gt, otsu_watershed(dark_plane, invert=False))[0.5].ap
    assert auto == pytest.approx(bright, abs=0.05)
    assert auto > 0.3 and wrong < auto


def test_he_colour_image_uses_hematoxylin(dsb_pairs) -> None:
    from scipy import ndimage as ndi
    from skimage.color import hed2rgb

    gt = read_mask(dsb_pairs[0][1])
    # Synthetic H&E: nuclei stained by hematoxylin, everything by some eosin.
    h = ndi.gaussian_filter((gt > 0).astype(float), 1.0)
    hed = np.stack([h * 1.2, np.full_like(h, 0.15), np.zeros_like(h)], axis=-1)
    rgb = (np.clip(hed2rgb(hed), 0, 1) * 255).astype(np.uint8)
    img = ImageData(np.moveaxis(rgb, -1, 0), rgb=True)
    plane = intensity_plane(img)
    assert plane[gt > 0].mean() > plane[gt == 0].mean() + 0.3  # nuclei bright in the H channel
    assert match_stats(gt, otsu_watershed(img))[0.5].ap > 0.3
    np.testing.assert_array_equal(otsu_watershed(img), otsu_watershed(rgb))  # (H, W, 3) array too


def test_texture_chosen_for_phase_contrast_only(dsb_pairs, phase_pairs) -> None:
    phase = read_image(phase_pairs[0][0])
    np.testing.assert_array_equal(otsu_watershed(phase), otsu_watershed(phase, feature="texture"))
    assert otsu_watershed(phase).max() > 0
    fluo = read_image(dsb_pairs[0][0])
    np.testing.assert_array_equal(otsu_watershed(fluo), otsu_watershed(fluo, feature="intensity"))


def test_constant_and_empty_images_give_no_cells() -> None:
    assert otsu_watershed(np.full((32, 32), 5.0)).max() == 0
    assert otsu_watershed(np.zeros((32, 32), np.uint8)).max() == 0
    assert estimate_diameter(np.zeros((8, 8), bool)) is None
    disk = np.hypot(*np.mgrid[-20:21, -20:21]) <= 10
    assert estimate_diameter(disk) == pytest.approx(20, abs=1.5)


def test_bad_arguments_are_refused() -> None:
    img = np.random.default_rng(0).random((32, 32))
    with pytest.raises(ValueError, match="diameter"):
        otsu_watershed(img, diameter=-3)
    with pytest.raises(ValueError, match="feature"):
        otsu_watershed(img, feature="edges")
    with pytest.raises(ValueError, match="shape"):
        otsu_watershed(np.zeros((2, 3, 32, 32)))
    with pytest.raises(ValueError, match="pixel type"):
        otsu_watershed(img > 0.5)
