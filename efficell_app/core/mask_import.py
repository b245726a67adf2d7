"""Read existing annotations made elsewhere into a label image.

* ``*_masks.tif`` / ``.png`` label images (``images.read_mask``);
* Cellpose ``*_seg.npy`` files, read with a restricted unpickler (see :func:`read_cellpose_seg`);
* ImageJ / Fiji ROI sets (``.zip`` of ``.roi`` files, or one ``.roi``), rasterised polygon by polygon.

:func:`import_masks` picks the reader from the file name.
"""

from __future__ import annotations

import ast
import io
import logging
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ImageReadError, InputError

log = logging.getLogger(__name__)

MASK_IMPORT_FILTER = "Masks (*.tif *.tiff *.png *_seg.npy *.zip *.roi);;All files (*)"

# Everything a Cellpose _seg.npy legitimately needs to rebuild its dict of arrays, numbers,
# strings and lists. Anything else in the pickle stream is refused.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("builtins", "slice"),
    ("builtins", "complex"),
    ("collections", "OrderedDict"),
}


class _SafeUnpickler(pickle.Unpickler):
    """An unpickler that can only rebuild numpy arrays, numpy scalars and plain containers."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS or (module == "numpy.dtypes" and name.endswith("DType")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load '{module}.{name}' (only arrays and plain values are allowed)")


def _npy_payload(path: Path) -> tuple[dict[str, Any], bytes]:
    """The header of a .npy file and the bytes after it."""
    raw = path.read_bytes()
    if not raw.startswith(b"\x93NUMPY"):
        raise InputError(path, "not a NumPy .npy file")
    major = raw[6]
    if major == 1:
        n, start = int.from_bytes(raw[8:10], "little"), 10
    elif major in (2, 3):
        n, start = int.from_bytes(raw[8:12], "little"), 12
    else:
        raise InputError(path, f"unsupported .npy format version {major}")
    try:
        header = ast.literal_eval(raw[start : start + n].decode("latin1"))
    except (ValueError, SyntaxError) as exc:
        raise InputError(path, "damaged .npy header") from exc
    if not isinstance(header, dict):
        raise InputError(path, "damaged .npy header")
    return header, raw[start + n :]


def read_cellpose_seg(path: str | Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """The ``masks`` array of a Cellpose ``_seg.npy`` file as int32 ``(H, W)``.

    Cellpose saves a Python dict with ``np.save``, i.e. a *pickle*. ``np.load(...,
    allow_pickle=True)`` would run whatever code a crafted file contains (a pickle can call
    any function), and ``allow_pickle=False`` cannot read a dict at all. So the pickle stream
    is read here with an unpickler whose ``find_class`` only admits numpy's array/scalar
    reconstructors and plain containers: a file that names any other class or function is
    refused with a reason, and nothing from it is executed. A plain (non-object) ``.npy``
    label array is read with ``allow_pickle=False``.
    """
    from skimage.segmentation import relabel_sequential

    path = Path(path)
    if not path.is_file():
        raise ImageReadError(path, "file not found")
    try:
        header, payload = _npy_payload(path)
    except OSError as exc:
        raise ImageReadError(path, f"cannot be read ({exc.strerror or exc})") from exc
    descr = header.get("descr")
    if descr != "|O":
        try:
            masks = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise InputError(path, f"cannot be read as a label array ({exc})") from exc
    else:
        try:
            obj = _SafeUnpickler(io.BytesIO(payload)).load()
        except pickle.UnpicklingError as exc:
            raise InputError(path, f"not loaded for safety: {exc}") from exc
        except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
            raise InputError(path, f"damaged Cellpose file ({type(exc).__name__})") from exc
        if isinstance(obj, np.ndarray) and obj.dtype == object and obj.size == 1:
            obj = obj.item()
        if not isinstance(obj, dict) or "masks" not in obj:
            raise InputError(path, "not a Cellpose _seg.npy file (no 'masks' entry)")
        masks = obj["masks"]
    masks = np.squeeze(np.asarray(masks))
    if masks.ndim != 2:
        raise InputError(path, f"masks must be 2-D, this file holds shape {tuple(masks.shape)} (3-D stacks are not supported)")
    if masks.dtype.kind not in "uib":
        raise InputError(path, f"masks have unsupported type {masks.dtype}")
    if masks.size and int(masks.min()) < 0:
        raise InputError(path, "masks have negative labels")
    if shape is not None and tuple(masks.shape) != tuple(shape):
        raise InputError(path, f"masks are {masks.shape[0]}x{masks.shape[1]} but the image is {shape[0]}x{shape[1]}")
    return relabel_sequential(masks.astype(np.int64))[0].astype(np.int32)


def read_imagej_rois(path: str | Path, shape: tuple[int, int]) -> np.ndarray:
    """Rasterise an ImageJ ROI set (``.zip``) or one ``.roi`` into an int32 label image.

    Each area ROI (polygon, freehand, traced, rectangle, oval ...) becomes one cell, in the
    file's order; a later ROI does not overwrite an earlier one. Lines and points are skipped.
    """
    from roifile import ImagejRoi, roiread
    from skimage.draw import polygon

    path = Path(path)
    if not path.is_file():
        raise ImageReadError(path, "file not found")
    try:
        rois = roiread(path)
    except (ValueError, OSError, zipfile.BadZipFile, IndexError) as exc:
        raise InputError(path, f"not an ImageJ ROI file ({exc})") from exc
    if isinstance(rois, ImagejRoi):
        rois = [rois]
    h, w = shape
    out = np.zeros((h, w), dtype=np.int32)
    skipped = 0
    n = 0
    for roi in rois:
        try:
            coords = roi.coordinates()
        except (ValueError, IndexError):
            coords = None
        if coords is None or len(coords) < 3:
            skipped += 1
            continue
        coords = np.asarray(coords, dtype=np.float64)
        rr, cc = polygon(coords[:, 1], coords[:, 0], (h, w))
        if rr.size == 0:
            skipped += 1
            continue
        free = out[rr, cc] == 0
        if not free.any():
            skipped += 1
            continue
        n += 1
        out[rr[free], cc[free]] = n
    if n == 0:
        raise InputError(path, "no area ROIs inside the image (lines, points or ROIs outside are not cells)")
    if skipped:
        log.info("%s: %d ROI(s) skipped (not an area, or outside the image)", path, skipped)
    return out


def import_masks(path: str | Path, shape: tuple[int, int]) -> np.ndarray:
    """Read annotations from ``path`` (label image, Cellpose ``_seg.npy``, ImageJ ROIs) for an image of ``shape``."""
    from .images import read_mask

    path = Path(path)
    name = path.name.lower()
    if name.endswith(".npy"):
        return read_cellpose_seg(path, shape)
    if name.endswith((".zip", ".roi")):
        return read_imagej_rois(path, shape)
    from skimage.segmentation import relabel_sequential

    labels = read_mask(path, shape)
    return relabel_sequential(labels)[0].astype(np.int32)
