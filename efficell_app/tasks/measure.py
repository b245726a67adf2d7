"""Measuring images that already have labels (the window's table, when an image is shown or its set is).

The measuring itself is ``project.measuring.measure_project_image`` (the one path, the one
pixel-size rule), as for the results of a segmentation run and for an export.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from ..core.cancel import CancelToken
from ..core.errors import EffiCellError
from ..project.measuring import MeasuredImage, MeasureSettings, measure_project_image
from .events import ImageFailed
from .runtime import failure_reason, loading_heavy_libraries

if TYPE_CHECKING:
    from ..project import Project


def measure_images(project: Project, image_ids: Sequence[int], settings: MeasureSettings | None = None, *,
                   cancel: CancelToken | None = None) -> Iterator[MeasuredImage | ImageFailed]:
    """One :class:`MeasuredImage` per image with labels (the ones that count); images without are skipped."""
    with loading_heavy_libraries(preload=True):
        pass
    total = len(image_ids)
    for k, image_id in enumerate(image_ids, start=1):
        if cancel is not None:
            cancel.raise_if_cancelled()
        try:
            measured = measure_project_image(project, image_id, settings)
        except (EffiCellError, OSError, ValueError) as exc:
            try:
                where = str(project.get_image(image_id).path)
            except KeyError:
                where = f"image {image_id}"
            yield ImageFailed(k, total, image_id, where, failure_reason(exc))
            continue
        if measured is not None:
            yield measured
