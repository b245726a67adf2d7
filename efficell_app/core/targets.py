"""Training targets from an instance label image (the supervision of both decoder branches)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def semantic_target(labels: np.ndarray) -> np.ndarray:
    """0 background, 1 interior, 2 boundary (inner boundary pixels, incl. between touching cells)."""
    from skimage.segmentation import find_boundaries

    sem = (labels > 0).astype(np.uint8)
    sem[find_boundaries(labels, mode="inner") & (labels > 0)] = 2
    return sem


def geometric_target(labels: np.ndarray) -> np.ndarray:
    """(3, H, W) float32: distance to the boundary / the instance's max (0..1), and y/x offsets to
    the instance centre divided by the instance's largest |offset| on that axis (HoVer-Net), -1..1."""
    h, w = labels.shape
    out = np.zeros((3, h, w), dtype=np.float32)
    if labels.max() == 0:
        return out
    dist = ndi.distance_transform_edt(np.pad(labels, 1, constant_values=0) > 0)[1:-1, 1:-1]
    # Touching cells: the EDT above sees them as one blob, so compute per object on its crop.
    for idx, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None:
            continue
        sl = (slice(max(sl[0].start - 1, 0), sl[0].stop + 1), slice(max(sl[1].start - 1, 0), sl[1].stop + 1))
        obj = labels[sl] == idx
        d = ndi.distance_transform_edt(np.pad(obj, 1))[1:-1, 1:-1]
        dmax = d.max()
        if dmax > 0:
            out[0][sl][obj] = (d / dmax)[obj]
        yy, xx = np.nonzero(obj)
        cy, cx = yy.mean(), xx.mean()
        dy, dx = cy - yy, cx - xx
        sy, sx = max(np.abs(dy).max(), 1.0), max(np.abs(dx).max(), 1.0)
        out[1][sl][obj] = dy / sy
        out[2][sl][obj] = dx / sx
    del dist
    return out


def make_targets(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(semantic uint8 (H,W), geometric float32 (3,H,W))."""
    return semantic_target(labels), geometric_target(labels)
