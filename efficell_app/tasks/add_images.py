"""The "add images" use case: dropped folders and files into one image set, and their thumbnails."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..core.cancel import CancelToken
from ..core.errors import EffiCellError
from ..core.images import PlaneChoice
from .events import Status
from .runtime import loading_heavy_libraries

if TYPE_CHECKING:
    from ..project import AddReport, Project

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImagesAdded:
    """The images of one drop are in the project (``report.skipped`` says which were not, and why)."""

    report: AddReport
    set_name: str


@dataclass(frozen=True)
class Thumbnail:
    image_id: int
    rgb: np.ndarray  # (size, size, 3) uint8


def set_name_for(paths: Sequence[Path]) -> str:
    """The set a drop goes into: named after the first folder (or the folder of the first file)."""
    first = Path(paths[0])
    return first.name if first.is_dir() else first.parent.name or "images"


def add_images(project: Project, paths: Sequence[str | Path], set_name: str, *, planes: PlaneChoice | None = None,
               cancel: CancelToken | None = None) -> Iterator[Status | ImagesAdded]:
    """Add folders (recursively) and files to ``set_name``; one :class:`ImagesAdded` with the merged report.

    ``planes``: the plane (or projection) of z-stacks and time series to use; without it they
    are skipped and listed in ``report.stacks`` with the planes they hold, to be added again
    with a choice.
    """
    with loading_heavy_libraries(preload=False):
        import PIL.Image  # noqa: F401 - the readers, imported one thread at a time
        import tifffile  # noqa: F401
    paths = [Path(p) for p in paths]
    folders = [p for p in paths if p.is_dir()]
    files = [p for p in paths if not p.is_dir()]
    yield Status(f"Adding images to '{set_name}'…")
    reports = [project.add_folder(folder, set_name, planes=planes, cancel=cancel) for folder in folders]
    if files:
        reports.append(project.add_files(files, set_name, planes=planes, cancel=cancel))
    merged = reports[0]
    for r in reports[1:]:
        merged.added.extend(r.added)
        merged.skipped.extend(r.skipped)
        merged.duplicates += r.duplicates
        merged.stacks.update(r.stacks)
        merged.stack_entries |= r.stack_entries
        merged.cancelled = merged.cancelled or r.cancelled
    yield ImagesAdded(merged, set_name)


def thumbnails(project: Project, image_ids: Sequence[int], size: int = 40, *,
               cancel: CancelToken | None = None) -> Iterator[Thumbnail]:
    """Small previews of images (an unreadable image gets none; it is reported where it is opened)."""
    from ..core.overlay import thumbnail_array

    with loading_heavy_libraries(preload=False):
        import PIL.Image  # noqa: F401
        import tifffile  # noqa: F401
    for image_id in image_ids:
        if cancel is not None and cancel.cancelled:
            return
        try:
            img = project.read_image(image_id)
        except (EffiCellError, OSError, ValueError, KeyError) as exc:
            log.debug("no thumbnail for %s: %s", image_id, exc)
            continue
        yield Thumbnail(image_id, thumbnail_array(img.data, size))
