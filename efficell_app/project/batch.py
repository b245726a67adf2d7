"""Segment the images of a project (one set or all), recording each result.

``segment_project`` is a generator, as the rest of EffiCell's long work: the CLI prints its
events, the GUI wraps it in a worker and can cancel between images (and inside one, through
the segmenter's ``cancel``). A bad image is reported as a failed event and the batch goes on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..core.cancel import CancelToken
from ..core.errors import Cancelled, EffiCellError, OutputError

if TYPE_CHECKING:
    from ..core.images import ImageData
    from .images import ImageRecord
    from .project import Project

log = logging.getLogger(__name__)


class SegmenterLike(Protocol):
    """What ``segment_project`` needs of ``efficell_app.core.pipeline.Segmenter``."""

    @property
    def identity(self) -> dict[str, Any]: ...

    def segment(self, img: ImageData, diameter: float | None = None, channels: tuple[int, ...] | None = None,
                cancel: CancelToken | None = None, progress: Any = None) -> Any: ...


@dataclass(frozen=True)
class BatchEvent:
    """One image done (``ok``) or failed (``error`` says why, naming the file).

    ``result`` (the segmenter's result, with ``labels``) and ``image`` (the pixels it saw) are
    set on success for callers that go on with them (the GUI measures and draws them); they
    are not part of the event's equality or repr.
    """

    index: int  # 1-based position in the batch
    total: int
    image_id: int
    path: Path
    ok: bool
    n_cells: int = 0
    seconds: float = 0.0
    result_path: Path | None = None
    error: str = ""  # "path: reason", as a batch reports it ("error: <path>: <reason>")
    result: Any = field(default=None, compare=False, repr=False)
    image: ImageData | None = field(default=None, compare=False, repr=False)

    @property
    def message(self) -> str:
        """The reason alone (``error`` without the leading ``"<path>: "``)."""
        prefix = f"{self.path}: "
        return self.error[len(prefix):] if self.error.startswith(prefix) else self.error


def _records(project: Project, set_name: str | None,
             image_ids: Sequence[int] | None) -> list[tuple[int, ImageRecord | None]]:
    """(id, record) of the images to segment; an unknown id keeps ``None`` (reported as failed)."""
    if image_ids is None:
        return [(r.id, r) for r in project.list_images(set_name)]
    out: list[tuple[int, ImageRecord | None]] = []
    for image_id in image_ids:
        try:
            out.append((int(image_id), project.get_image(image_id)))
        except KeyError:
            out.append((int(image_id), None))
    return out


def segment_project(project: Project, segmenter: SegmenterLike, set_name: str | None = None,
                    cancel: CancelToken | None = None, *, only_new: bool = False,
                    diameter: float | None = None, channels: tuple[int, ...] | None = None,
                    image_ids: Sequence[int] | None = None) -> Iterator[BatchEvent]:
    """Segment every image of ``set_name`` (all sets when ``None``); yields one event per image.

    ``image_ids`` segments only those images, in that order (``set_name`` then only names the
    run); an id not in the project is reported as a failed event. Exactly one event comes per
    image, in order, so a caller may announce image *k* before asking for its event.
    ``only_new`` skips images that already have a result or an annotation (status other than
    'new'). Raises :class:`Cancelled` between images (or inside one, through the segmenter)
    once ``cancel`` is set; results already recorded stay in the project, the image in flight
    gets none, and a run cancelled before its first result leaves no run record. A result that
    cannot be saved (disk full) fails that image with "<image>: the result could not be saved ...".
    """
    todo = _records(project, set_name, image_ids)
    if only_new:
        todo = [(i, r) for i, r in todo if r is None or r.status == "new"]
    total = len(todo)
    if total == 0:
        return
    if cancel is not None:
        cancel.raise_if_cancelled()
    identity = dict(segmenter.identity)
    run_id = project.start_run({"diameter": diameter, "channels": list(channels) if channels else None,
                                "set": set_name, "only_new": only_new,
                                "device_info": getattr(segmenter, "device_info", None)}, identity, set_name)
    try:
        yield from _segment_all(project, segmenter, todo, run_id, identity, cancel, diameter, channels)
    except Cancelled:
        project.discard_run_if_empty(run_id)
        raise


def _segment_all(project: Project, segmenter: SegmenterLike, todo: list[tuple[int, ImageRecord | None]], run_id: int,
                 identity: dict[str, Any], cancel: CancelToken | None, diameter: float | None,
                 channels: tuple[int, ...] | None) -> Iterator[BatchEvent]:
    """The loop of :func:`segment_project`: one event per image of ``todo``, results recorded under ``run_id``."""
    total = len(todo)
    for i, (image_id, rec) in enumerate(todo, start=1):
        if cancel is not None:
            cancel.raise_if_cancelled()
        if rec is None:
            where = Path(f"image {image_id}")
            yield BatchEvent(i, total, image_id, where, False, error=f"{where}: not in the project (removed?)")
            continue
        t0 = time.perf_counter()
        try:
            img = project.read_image(rec.id)
            res = segmenter.segment(img, diameter=diameter, channels=channels, cancel=cancel)
            seconds = float(getattr(res, "seconds", 0.0) or (time.perf_counter() - t0))
            try:
                path = project.record_result(rec.id, res.labels, dict(res.settings), identity, run_id=run_id,
                                             seconds=seconds)
            except OutputError as exc:  # disk full, read-only project: name the image and the file
                raise OutputError(rec.path, f"the result could not be saved ({exc})") from exc
        except Cancelled:
            raise
        except EffiCellError as exc:
            yield BatchEvent(i, total, rec.id, rec.path, False, error=str(exc))
            continue
        except MemoryError:
            yield BatchEvent(i, total, rec.id, rec.path, False,
                             error=f"{rec.path}: not enough memory to segment this image")
            continue
        except Exception as exc:  # noqa: BLE001 - one broken image must not end the batch
            log.exception("segmenting %s failed", rec.path)
            yield BatchEvent(i, total, rec.id, rec.path, False, error=f"{rec.path}: {type(exc).__name__}: {exc}")
            continue
        yield BatchEvent(i, total, rec.id, rec.path, True, n_cells=int(res.n_cells), seconds=seconds,
                         result_path=path, result=res, image=img)
