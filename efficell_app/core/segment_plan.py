"""What the whole-image and the strip paths of a segmentation share, written once.

:meth:`pipeline.Segmenter.segment` segments an image whole; :func:`strips.segment_in_strips`
streams a large one in strips. Both follow the same plan, which lives here:

* the diameter check (a given diameter must be positive);
* the scale plan (:func:`plan_scale`): model-scale / input-scale from the adapter's target
  diameter, clipped to :data:`GIVEN_SCALE_RANGE` for a given diameter and to the narrower
  :data:`AUTO_SCALE_RANGE` for an estimated one, reduced so the model-scale image stays
  under :data:`MAX_MODEL_PIXELS`, and snapped to 1 when an estimate is within
  :data:`NATIVE_TOLERANCE` of the native scale;
* the image-level uncertainty (:func:`disagreement`): where the two decoder branches see
  foreground, how much they disagree;
* the blank-image rule (:func:`is_blank`): a constant image has no cells;
* the result type (:class:`SegmentationResult`).

``pipeline`` imports ``strips`` and both import this module; neither imports the other's
private names (the segmenter's public methods are named in :class:`PlannedSegmenter`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from .cancel import CancelToken
    from .images import ImageData
    from .inference import DensePredictor
    from .instances import InstanceParams

MAX_MODEL_PIXELS = 16_000 * 16_000  # refuse rescales that would not fit any machine
# An estimated diameter is trusted less than a given one: it may rescale only this much.
AUTO_SCALE_RANGE = (0.2, 4.0)
GIVEN_SCALE_RANGE = (0.1, 8.0)
# An estimate this close to the native scale is not worth a second pass at another scale.
NATIVE_TOLERANCE = 1.15
FOREGROUND_LEVEL = 0.2  # a pixel counts for the uncertainty where either branch sees this much foreground
GEOMETRY_GAIN = 6.0  # the distance branch's output times this is its foreground belief (0..1)


@dataclass(frozen=True)
class ScalePlan:
    """How an image is rescaled for the model (see :func:`plan_scale`)."""

    scale: float  # model-scale / input-scale
    diameter: float | None  # object diameter in input pixels, given or estimated (None: unknown)
    estimated: bool  # the diameter came from an estimate
    native: bool  # an estimate snapped to scale 1 (the estimation pass at scale 1 can be reused)
    notes: tuple[str, ...] = ()


def check_diameter(diameter: float | None) -> None:
    """A given diameter must be a positive number of pixels."""
    if diameter is not None and diameter <= 0:
        raise ValueError("diameter must be positive")


def plan_scale(height: int, width: int, target_diameter: float, diameter: float | None, estimated: bool) -> ScalePlan:
    """The scale at which the model sees an ``height`` x ``width`` image whose cells are ``diameter`` pixels wide."""
    lo, hi = AUTO_SCALE_RANGE if estimated else GIVEN_SCALE_RANGE
    scale = float(np.clip(target_diameter / diameter, lo, hi)) if diameter else 1.0
    notes: list[str] = []
    if height * width * scale * scale > MAX_MODEL_PIXELS:
        scale = float(np.sqrt(MAX_MODEL_PIXELS / (height * width)))
        notes.append(f"cells are very small for this image size; rescaled by {scale:.2f} only")
    native = estimated and abs(np.log(scale)) < np.log(NATIVE_TOLERANCE)
    if native:
        scale = 1.0
    return ScalePlan(scale=scale, diameter=diameter, estimated=estimated, native=bool(native), notes=tuple(notes))


def disagreement(prob_background: np.ndarray, distance: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(foreground, disagreement, region)`` of dense maps: the semantic branch's foreground
    probability, how far the geometric branch's foreground belief is from it, and the pixels
    where either branch sees foreground (the image's uncertainty is the mean disagreement there)."""
    fg_sem = 1.0 - prob_background
    fg_geo = np.clip(distance * GEOMETRY_GAIN, 0.0, 1.0)
    region = (fg_sem > FOREGROUND_LEVEL) | (fg_geo > FOREGROUND_LEVEL)
    return fg_sem, np.abs(fg_sem - fg_geo), region


def is_blank(img: ImageData) -> bool:
    """A constant image: whatever the network says, it has no cells."""
    return bool(img.data.min() == img.data.max())


def fit_shape(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``a`` cropped or zero-padded (bottom, right) to ``shape``."""
    out = np.zeros(shape, a.dtype)
    h, w = min(shape[0], a.shape[0]), min(shape[1], a.shape[1])
    out[:h, :w] = a[:h, :w]
    return out


@dataclass
class SegmentationResult:
    labels: np.ndarray  # (H, W) int32, 0 = background
    diameter: float  # object diameter in input pixels (given or estimated)
    scale: float  # model-scale / input-scale
    settings: dict[str, Any]  # everything needed to reproduce the result
    seconds: float
    notes: list[str] = field(default_factory=list)
    uncertainty: float = 0.0  # image-level: how much the two decoder branches disagree (0..1)
    cell_confidence: np.ndarray | None = None  # (n_cells,) mean foreground probability per cell
    uncertainty_map: np.ndarray | None = None  # (H, W) float16 when asked for

    @property
    def n_cells(self) -> int:
        return int(self.labels.max()) if self.labels.size else 0


class PlannedSegmenter(Protocol):
    """What the strip path needs of :class:`pipeline.Segmenter` (its public methods only)."""

    predictor: DensePredictor
    meta: Any

    @property
    def target_diameter(self) -> float: ...

    def scaled_params(self, scale: float) -> InstanceParams: ...

    def estimate_diameter(self, x: np.ndarray, cancel: CancelToken | None,
                          report: Callable[[float], None]) -> tuple[float | None, Any]: ...

    def result_settings(self, diameter: float | None, estimated: bool, scale: float,
                        channels: tuple[int, ...] | None) -> dict[str, Any]: ...
