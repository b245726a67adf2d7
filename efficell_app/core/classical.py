"""The classical baseline: Gaussian smoothing, Otsu threshold, distance-transform watershed.

This is the pipeline a lab would write in a few lines of scikit-image (or click together
in Fiji), used as the reference point that the learned model must beat. It is
deterministic: the same image and settings always give the same labels.
"""

from __future__ import annotations

import logging

import numpy as np

from .images import ImageData, normalize

log = logging.getLogger(__name__)


def intensity_plane(image: np.ndarray | ImageData) -> np.ndarray:
    """The one float32 ``(H, W)`` plane the baseline thresholds, normalised to about [0, 1].

    Colour (H&E) images use the hematoxylin channel of a colour deconvolution
    (``skimage.color.rgb2hed``), which stains nuclei; other multi-channel images use their
    first channel; a plain ``(H, W)`` array is used as it is.
    """
    if isinstance(image, ImageData):
        data, rgb = image.data, image.rgb and image.n_channels >= 3
    else:
        arr = np.asarray(image)
        if arr.ndim == 3 and arr.shape[-1] in (3, 4) and arr.shape[0] > 4:
            data, rgb = np.moveaxis(arr[..., :3], -1, 0), True
        elif arr.ndim == 2:
            data, rgb = arr[None], False
        else:
            raise ValueError(f"expected an (H, W) image or (H, W, 3) RGB image, got shape {arr.shape}")
    if data.dtype == bool or np.iscomplexobj(data) or data.dtype.kind not in "uif":
        raise ValueError(f"unsupported pixel type {data.dtype}")
    if rgb:
        from skimage.color import rgb2hed

        rgb01 = np.moveaxis(data[:3], 0, -1).astype(np.float32)
        top = float(np.iinfo(data.dtype).max) if data.dtype.kind in "ui" else max(float(rgb01.max()), 1.0)
        plane = rgb2hed(np.clip(rgb01 / top, 0.0, 1.0))[..., 0]
    else:
        plane = data[0]
    plane = np.nan_to_num(np.asarray(plane, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    return normalize(plane[None])[0]


def otsu_separability(values: np.ndarray) -> float:
    """Otsu's effectiveness: between-class variance over total variance at the Otsu threshold (0..1)."""
    from skimage.filters import threshold_otsu

    x = values.ravel()
    if x.size > 1_000_000:
        x = x[:: x.size // 1_000_000]
    var = float(x.var())
    if var <= 0:
        return 0.0
    above = x > threshold_otsu(x)
    w = float(above.mean())
    if w in (0.0, 1.0):
        return 0.0
    return w * (1 - w) * (float(x[above].mean()) - float(x[~above].mean())) ** 2 / var


def local_std(plane: np.ndarray, size: int) -> np.ndarray:
    """Standard deviation in a ``size`` x ``size`` window around each pixel."""
    from scipy import ndimage as ndi

    plane = plane.astype(np.float32, copy=False)
    mean = ndi.uniform_filter(plane, size)
    sq = ndi.uniform_filter(plane * plane, size)
    return np.sqrt(np.maximum(sq - mean * mean, 0.0))


def estimate_diameter(foreground: np.ndarray) -> float | None:
    """Median equivalent diameter of the connected foreground objects (None if there are none)."""
    from scipy import ndimage as ndi

    lab, n = ndi.label(foreground)
    if n == 0:
        return None
    areas = np.bincount(lab.ravel())[1:]
    areas = areas[areas >= 9]  # specks say nothing about the cell size
    if areas.size == 0:
        return None
    return float(2.0 * np.sqrt(np.median(areas) / np.pi))


def otsu_watershed(image: np.ndarray | ImageData, diameter: float | None = None, invert: bool | None = None,
                   feature: str = "auto") -> np.ndarray:
    """Label cells with Otsu thresholding and a distance-transform watershed.

    ``diameter`` is the typical cell diameter in pixels (estimated from the thresholded
    objects when ``None``); it sets the smoothing, the minimum distance between seeds and
    the smallest object kept. ``invert`` says whether objects are darker than the
    background (brightfield, some phase contrast); ``None`` decides automatically by
    taking the minority side of the threshold as the objects.

    ``feature`` is what is thresholded: ``"intensity"``; ``"texture"``, the local standard
    deviation, for label-free images (phase contrast) whose cells are as bright as the
    background on average but far more textured; or ``"auto"``, which takes texture only
    when intensity is not bimodal (Otsu's separability below 0.6) and texture separates
    better. Returns int32 labels ``(H, W)``, 0 = background, objects numbered 1..N.
    """
    from scipy import ndimage as ndi
    from skimage.feature import peak_local_max
    from skimage.filters import threshold_otsu
    from skimage.segmentation import relabel_sequential, watershed

    plane = intensity_plane(image)
    h, w = plane.shape
    if plane.max() - plane.min() < 1e-6:
        return np.zeros((h, w), dtype=np.int32)
    if diameter is not None and not diameter > 0:
        raise ValueError(f"diameter must be positive, not {diameter}")

    sigma = 1.0 if diameter is None else float(np.clip(diameter / 15.0, 0.5, 8.0))
    smooth = ndi.gaussian_filter(plane, sigma)
    if feature not in ("auto", "intensity", "texture"):
        raise ValueError(f"feature must be 'auto', 'intensity' or 'texture', not {feature!r}")
    if feature != "intensity":
        texture = local_std(smooth, 21 if diameter is None else max(5, int(diameter / 3) | 1))
        if feature == "texture" or (otsu_separability(smooth) < 0.6 and otsu_separability(texture) > otsu_separability(smooth)):
            feature, smooth, invert = "texture", texture, False
    thr = float(threshold_otsu(smooth))
    above = smooth > thr
    if invert is None:
        invert = bool(above.mean() > 0.5)
    fg = ~above if invert else above
    fg = ndi.binary_fill_holes(ndi.binary_opening(fg, structure=np.ones((3, 3), bool)))

    if diameter is None:
        diameter = estimate_diameter(fg)
        if diameter is None:
            return np.zeros((h, w), dtype=np.int32)
        log.debug("otsu_watershed: estimated diameter %.1f px", diameter)
    min_area = max(9, int(0.1 * np.pi * (diameter / 2.0) ** 2))
    fg = _remove_small(fg, min_area)
    if not fg.any():
        return np.zeros((h, w), dtype=np.int32)

    dist = ndi.distance_transform_edt(fg)
    dist = ndi.gaussian_filter(dist, max(1.0, diameter / 12.0))
    components, _ = ndi.label(fg)
    min_distance = max(2, int(round(diameter * 0.35)))
    peaks = peak_local_max(dist, min_distance=min_distance, labels=components, exclude_border=False)
    markers = np.zeros((h, w), dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1, dtype=np.int32)
    # A component without a peak (flat, tiny) still becomes one object.
    missing = np.setdiff1d(np.unique(components[fg]), np.unique(components[markers > 0]))
    if missing.size:
        seeds = ndi.maximum_position(dist, components, missing)
        for k, (r, c) in enumerate(seeds, start=len(peaks) + 1):
            markers[int(r), int(c)] = k
    labels = watershed(-dist, markers, mask=fg)
    labels = _remove_small_labels(labels, min_area)
    return relabel_sequential(labels)[0].astype(np.int32)


def _remove_small(mask: np.ndarray, min_area: int) -> np.ndarray:
    from scipy import ndimage as ndi

    lab, n = ndi.label(mask)
    if n == 0:
        return mask
    areas = np.bincount(lab.ravel())
    keep = areas >= min_area
    keep[0] = False
    return keep[lab]


def _remove_small_labels(labels: np.ndarray, min_area: int) -> np.ndarray:
    areas = np.bincount(labels.ravel())
    small = areas < min_area
    small[0] = False
    if small.any():
        labels = labels.copy()
        labels[small[labels]] = 0
    return labels
