"""Which image to annotate next: rank images by how unsure the model is about them.

The segmenter reports, per image, how much its semantic and geometric branches disagree
(``SegmentationResult.uncertainty``, 0..1) and, per cell, the mean foreground probability
(``cell_confidence``). An image is worth annotating when the branches disagree and many of
its cells are doubtful: correcting it teaches the adapter the most. The score is

    score = 0.5 * disagreement + 0.5 * share of cells with confidence < ``LOW_CONFIDENCE``

(an image with no cells at all scores its disagreement plus 0.5: the model found nothing,
which on a picture of cells is the most doubtful outcome). Scores are comparable across
images of one project segmented by one model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from .cancel import CancelToken
from .errors import EffiCellError
from .images import ImageData

LOW_CONFIDENCE = 0.6


@dataclass(frozen=True)
class ImageUncertainty:
    """How unsure the model is about one image (``error`` set when it could not be scored)."""

    key: object  # the caller's id for the image (project image id, path ...)
    score: float = 0.0
    disagreement: float = 0.0
    low_confidence_share: float = 0.0
    mean_confidence: float = 0.0
    n_cells: int = 0
    error: str = ""


def image_score(disagreement: float, cell_confidence: np.ndarray | None) -> tuple[float, float, float]:
    """``(score, low-confidence share, mean confidence)`` of one segmentation (see module doc)."""
    conf = np.asarray(cell_confidence if cell_confidence is not None else [], dtype=np.float64)
    if conf.size == 0:
        return float(disagreement) * 0.5 + 0.5, 1.0, 0.0
    low = float((conf < LOW_CONFIDENCE).mean())
    return 0.5 * float(disagreement) + 0.5 * low, low, float(conf.mean())


def rank_images(segmenter, images: Iterable[tuple[object, Callable[[], ImageData]]],
                diameter: float | None = None, channels: tuple[int, ...] | None = None,
                cancel: CancelToken | None = None) -> Iterator[ImageUncertainty]:
    """Segment each image and yield its :class:`ImageUncertainty` (in the given order).

    ``images`` gives ``(key, load)`` pairs; ``load()`` reads the image only when its turn
    comes. A failing image yields an entry with ``error`` set and the rest go on.
    """
    for key, load in images:
        if cancel is not None:
            cancel.raise_if_cancelled()
        try:
            img = load()
            res = segmenter.segment(img, diameter=diameter, channels=channels, cancel=cancel)
        except (EffiCellError, OSError, ValueError, MemoryError) as exc:
            yield ImageUncertainty(key, error=str(exc))
            continue
        score, low, mean = image_score(res.uncertainty, res.cell_confidence)
        yield ImageUncertainty(key, score=score, disagreement=float(res.uncertainty), low_confidence_share=low,
                               mean_confidence=mean, n_cells=res.n_cells)


def suggest(scores: Iterable[ImageUncertainty], k: int = 5) -> list[ImageUncertainty]:
    """The ``k`` most uncertain images, most uncertain first (failed ones left out)."""
    ok = [s for s in scores if not s.error]
    return sorted(ok, key=lambda s: (-s.score, str(s.key)))[: max(0, int(k))]


def cell_uncertainty_image(labels: np.ndarray, cell_confidence: np.ndarray) -> np.ndarray:
    """``(H, W)`` float32: ``1 - confidence`` of the cell under each pixel (0 on background).

    ``cell_confidence[i]`` belongs to label ``i + 1`` (as ``Segmenter.segment`` returns it).
    """
    conf = np.asarray(cell_confidence, dtype=np.float32)
    n = int(labels.max()) if labels.size else 0
    lut = np.zeros(n + 1, dtype=np.float32)
    m = min(n, conf.size)
    lut[1 : m + 1] = 1.0 - np.clip(conf[:m], 0.0, 1.0)
    return lut[labels]
