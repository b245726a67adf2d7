"""The "segment + measure" use case: segment a project's images, record each result, measure it.

Three levels, each usable on its own:

* :func:`segment_image` is one self-contained unit of work: plain settings
  (:class:`SegmentSettings`) and one image (:class:`ImageJob`: a path and what the project
  recorded about it) in, labels and measurements (:class:`SegmentedImage`) out. It touches no
  project, so it can run in another process or on another machine (the arguments and the
  result pickle); there it loads the model once per process (:func:`cached_segmenter`).
* :func:`segment_project` runs the units of a project's images with one loaded segmenter,
  records each result under one run, and yields one :class:`BatchEvent` per image; a bad
  image is reported and the batch goes on.
* :func:`segment_images` is the use case the window and ``efficell segment --project`` run:
  load the model, announce the run and each image, segment, record and measure
  (``project.measuring``'s rule), yielding :class:`RunStarted`, :class:`ImageStarted`,
  :class:`ImageSegmented` and ``ImageFailed`` events.

All of them stop between images (or inside one, through the segmenter) once ``cancel`` is set,
raising :class:`~efficell_app.core.errors.Cancelled`.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ..core.cancel import CancelToken
from ..core.errors import AdapterError, Cancelled, EffiCellError, OutputError, WeightsError
from ..core.images import PlaneChoice
from ..project.images import read_recorded_image
from ..project.measuring import MeasuredImage, MeasureSettings, find_labels, measure_project_image
from .events import ImageFailed, Status
from .runtime import loading_heavy_libraries

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..core.batch import WithinImage
    from ..core.images import ImageData
    from ..core.measure import ImageMeasurement
    from ..core.segment_plan import SegmentationResult
    from ..project import ImageRecord, Project

log = logging.getLogger(__name__)


class SegmenterLike(Protocol):
    """What segmenting needs of ``efficell_app.core.pipeline.Segmenter``."""

    @property
    def identity(self) -> dict[str, Any]: ...

    def segment(self, img: ImageData, diameter: float | None = None, channels: tuple[int, ...] | None = None,
                cancel: CancelToken | None = None, progress: Any = None) -> Any: ...


# ----------------------------------------------------------------------------- settings and the unit of work


@dataclass(frozen=True)
class SegmentSettings:
    """Everything a segmentation run needs besides the images (plain values: picklable).

    ``measure``: how results are measured; ``None`` leaves them unmeasured.
    ``encoder_weights`` None means random encoder weights (tests only).
    """

    model: str | None = None  # None / "builtin": the built-in adapter; else an adapter file
    diameter: float | None = None  # typical cell diameter in pixels; None: estimated per image
    channels: tuple[int, ...] | None = None
    device: str = "auto"
    encoder_weights: str | None = "auto"
    measure: MeasureSettings | None = field(default_factory=MeasureSettings)

    @property
    def model_name(self) -> str:
        return "built-in" if self.model in (None, "builtin") else Path(str(self.model)).stem


@dataclass(frozen=True)
class ImageJob:
    """One image to segment: where it is and what the project recorded about it (picklable)."""

    path: Path
    name: str
    planes: PlaneChoice = field(default_factory=PlaneChoice)
    pixel_size_um: float | None = None  # as recorded
    channel_names: tuple[str, ...] = ()  # as recorded
    scene: int | None = None  # scene of a multi-scene file, as recorded

    @classmethod
    def of(cls, rec: ImageRecord) -> ImageJob:
        return cls(rec.path, rec.name, rec.planes, rec.pixel_size_um, tuple(rec.channel_names), rec.scene)


@dataclass
class SegmentedImage:
    """What :func:`segment_image` returns: the segmenter's result and, when asked, the measurements."""

    result: SegmentationResult  # labels, settings, notes, seconds
    measurement: ImageMeasurement | None = None
    image: ImageData | None = field(default=None, compare=False, repr=False)  # only with keep_image


def load_segmenter(model: str | None, device: str = "auto", encoder_weights: str | None = "auto") -> Any:
    """``Segmenter.load``; missing weights of the adapter's encoder are reported against the adapter file."""
    from ..core.pipeline import Segmenter, resolve_model

    with loading_heavy_libraries():
        try:
            return Segmenter.load(model, device=device, encoder_weights=encoder_weights)
        except WeightsError as exc:
            raise AdapterError(resolve_model(model), f"the encoder this adapter needs cannot be loaded: {exc}") from exc


@functools.lru_cache(maxsize=1)
def cached_segmenter(model: str | None, device: str, encoder_weights: str | None) -> Any:
    """The segmenter of a worker process, loaded by its first unit of work and kept for the next ones."""
    return load_segmenter(model, device, encoder_weights)


def segment_image(job: ImageJob, settings: SegmentSettings, segmenter: SegmenterLike | None = None, *,
                  cancel: CancelToken | None = None, keep_image: bool = False,
                  progress: Callable[[float], None] | None = None) -> SegmentedImage:
    """Segment one image and measure the result (THE unit of work: no project, picklable in and out).

    ``segmenter``: a loaded one (the window's run); ``None`` uses this process's
    :func:`cached_segmenter` for ``settings``. ``progress(fraction)`` follows the work within the
    image. Raises an ``EffiCellError`` naming the file when the image cannot be read or segmented.
    """
    from ..core.measure import measure_image

    seg = segmenter if segmenter is not None else cached_segmenter(settings.model, settings.device,
                                                                   settings.encoder_weights)
    img = read_recorded_image(Path(job.path), job.planes, job.scene)
    res = seg.segment(img, diameter=settings.diameter, channels=settings.channels, cancel=cancel, progress=progress)
    measurement = None
    if settings.measure is not None:
        cal = settings.measure.calibration(img.n_channels, job.pixel_size_um, job.channel_names, img)
        measurement = measure_image(res.labels, img, cal, job.name)
    return SegmentedImage(res, measurement, img if keep_image else None)


# ----------------------------------------------------------------------------- a project's images


@dataclass(frozen=True)
class BatchEvent:
    """One image done (``ok``) or failed (``error`` says why, naming the file).

    ``result`` (the segmenter's result, with ``labels``), ``measurement`` and ``image`` (the
    pixels it saw) are set on success for callers that go on with them; they are not part of
    the event's equality or repr.
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
    measurement: ImageMeasurement | None = field(default=None, compare=False, repr=False)

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


def images_to_segment(project: Project, set_name: str | None, image_ids: Sequence[int] | None,
                      only_new: bool) -> list[tuple[int, ImageRecord | None]]:
    """(id, record) of a run's images, in order: ``image_ids``, else every image of ``set_name``,
    else of the project; ``only_new`` leaves out those with a result or an annotation; an
    unknown id keeps ``None`` (reported as failed)."""
    todo = _records(project, set_name, image_ids)
    return [(i, r) for i, r in todo if r is None or r.status == "new"] if only_new else todo


def segment_project(project: Project, segmenter: SegmenterLike, set_name: str | None = None,
                    cancel: CancelToken | None = None, *, only_new: bool = False,
                    diameter: float | None = None, channels: tuple[int, ...] | None = None,
                    image_ids: Sequence[int] | None = None,
                    measure: MeasureSettings | None = None,
                    progress: WithinImage | None = None) -> Iterator[BatchEvent]:
    """Segment every image of ``set_name`` (all sets when ``None``); yields one event per image.

    ``image_ids`` segments only those images, in that order (``set_name`` then only names the
    run); an id not in the project is reported as a failed event. Exactly one event comes per
    image, in order, so a caller may announce image *k* before asking for its event.
    ``only_new`` skips images that already have a result or an annotation (status other than
    'new'). ``measure``: also measure each result (``BatchEvent.measurement``). Raises
    :class:`Cancelled` between images (or inside one, through the segmenter) once ``cancel`` is
    set; results already recorded stay in the project, the image in flight gets none, and a run
    cancelled before its first result leaves no run record. A result that cannot be saved (disk
    full) fails that image with "<image>: the result could not be saved ...".
    ``progress(index, total, name, fraction)`` follows the work within each image (as
    ``core.batch.segment_files``' does).
    """
    todo = images_to_segment(project, set_name, image_ids, only_new)
    if not todo:
        return
    if cancel is not None:
        cancel.raise_if_cancelled()
    settings = SegmentSettings(diameter=diameter, channels=channels, measure=measure)
    identity = dict(segmenter.identity)
    run_id = project.start_run({"diameter": diameter, "channels": list(channels) if channels else None,
                                "set": set_name, "only_new": only_new,
                                "device_info": getattr(segmenter, "device_info", None)}, identity, set_name)
    try:
        yield from _segment_all(project, segmenter, todo, run_id, identity, settings, cancel, progress)
    except Cancelled:
        project.discard_run_if_empty(run_id)
        raise


def _segment_all(project: Project, segmenter: SegmenterLike, todo: list[tuple[int, ImageRecord | None]],
                 run_id: int, identity: dict[str, Any], settings: SegmentSettings,
                 cancel: CancelToken | None, progress: WithinImage | None = None) -> Iterator[BatchEvent]:
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
            within = None if progress is None else \
                (lambda f, i=i, name=rec.name: progress(i, total, name, f))
            out = segment_image(ImageJob.of(rec), settings, segmenter, cancel=cancel, keep_image=True, progress=within)
            res = out.result
            seconds = float(getattr(res, "seconds", 0.0) or (time.perf_counter() - t0))
            path = record_result(project, rec, res, identity, run_id, seconds)
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
                         result_path=path, result=res, image=out.image, measurement=out.measurement)


def record_result(project: Project, rec: ImageRecord, res: Any, identity: dict[str, Any], run_id: int,
                  seconds: float) -> Path:
    """Record one image's result under ``run_id``; a result that cannot be saved fails that image."""
    try:
        return project.record_result(rec.id, res.labels, dict(res.settings), identity, run_id=run_id, seconds=seconds)
    except OutputError as exc:  # disk full, read-only project: name the image and the file
        raise OutputError(rec.path, f"the result could not be saved ({exc})") from exc


# ----------------------------------------------------------------------------- the use case


@dataclass(frozen=True)
class RunStarted:
    total: int
    model: str
    device: str


@dataclass(frozen=True)
class ImageStarted:
    index: int  # 1-based
    total: int
    image_id: int
    name: str


@dataclass(frozen=True)
class ImageSegmented:
    """One image segmented, its result recorded and (when asked) measured.

    ``measured`` is what the table and an export show: the labels that count
    (``project.measuring.find_labels``), so for an image with a saved annotation it measures
    the annotation (``annotation_kept``), not the new result, which stays in the history.
    ``status`` is the image's status in the project afterwards ("reviewed" stays "reviewed").
    """

    index: int  # 1-based
    total: int
    image_id: int
    path: Path
    labels: np.ndarray
    n_cells: int
    seconds: float
    notes: tuple[str, ...] = ()
    measured: MeasuredImage | None = None  # as the table and the export show it
    colours: np.ndarray | None = None  # RGBA per label (touching cells differ), made here, off the window's thread
    status: str = "segmented"
    annotation_kept: bool = False  # a saved annotation still counts for this image

    @property
    def counted_cells(self) -> int:
        """Cells of the labels that count, as measured (the table's row count), else of the result."""
        return len(self.measured.cells) if self.measured is not None else self.n_cells


def segment_images(project: Project, image_ids: Sequence[int] | None, settings: SegmentSettings, *,
                   set_name: str | None = None, only_new: bool = False, with_colours: bool = False,
                   segmenter: SegmenterLike | None = None, cancel: CancelToken | None = None,
                   progress: WithinImage | None = None,
                   ) -> Iterator[Status | RunStarted | ImageStarted | ImageSegmented | ImageFailed]:
    """Load the model once, then segment, record and measure each image (``image_ids`` in that
    order, else every image of ``set_name``, else of the project).

    ``with_colours`` adds overlay colours to each :class:`ImageSegmented` (the window draws them).
    ``segmenter``: an already loaded one (else loaded from ``settings``). ``progress(index, total,
    name, fraction)`` follows the work within each image (called from the thread that runs this).
    """
    if segmenter is None:
        yield Status("Loading the model…")
        segmenter = load_segmenter(settings.model, settings.device, settings.encoder_weights)
    device = str(getattr(segmenter, "device", settings.device))
    todo = images_to_segment(project, set_name, image_ids, only_new)
    ids = [i for i, _ in todo]
    total = len(ids)
    yield RunStarted(total, settings.model_name, device)
    events = segment_project(project, segmenter, set_name, cancel, diameter=settings.diameter,
                             channels=settings.channels, image_ids=ids, measure=settings.measure, progress=progress)
    for i, (image_id, rec) in enumerate(todo, start=1):
        if cancel is not None:
            cancel.raise_if_cancelled()
        yield ImageStarted(i, total, image_id, rec.name if rec is not None else f"image {image_id}")
        ev = next(events, None)  # one event per image, in order (segment_project's promise)
        if ev is None:
            return
        if not ev.ok:
            log.info("segmentation failed: %s", ev.error)
            yield ImageFailed(i, total, image_id, str(ev.path), ev.message)
            continue
        assert rec is not None  # segment_project fails unknown ids
        yield segmented_event(project, i, total, rec, ev.result, ev.measurement, ev.seconds, with_colours,
                              measure=settings.measure, image=ev.image)


def segmented_event(project: Project, index: int, total: int, rec: ImageRecord, res: Any,
                    measurement: ImageMeasurement | None, seconds: float, with_colours: bool, *,
                    measure: MeasureSettings | None = None, image: ImageData | None = None) -> ImageSegmented:
    """The :class:`ImageSegmented` of a recorded result, measured as the table shows it: the labels
    that count (``project.measuring.find_labels``), so a saved annotation stays in front of the new
    result and is measured instead (with ``measure``; ``image``: its pixels when at hand); else
    ``measurement``, named after the result's origin. Overlay colours when asked (not for a kept annotation)."""
    labels = res.labels
    found = find_labels(project, rec.id)  # the labels that count: a saved annotation stays in front
    kept = found is not None and found.kind == "annotation"
    measured = None
    if kept and measurement is not None:
        try:
            measured = measure_project_image(project, rec.id, measure, found=found, image=image)
        except (EffiCellError, OSError, ValueError) as exc:  # the table measures it again when shown
            log.warning("annotation of %s not measured: %s", rec.path, exc)
    elif measurement is not None and found is not None:  # the result just recorded
        measured = MeasuredImage.of(rec.id, rec.set_name, measurement, found)
    colours = None
    if with_colours and not kept:
        from ..core.overlay import label_colours

        colours = label_colours(labels)
    return ImageSegmented(index, total, rec.id, rec.path, labels, int(res.n_cells), seconds,
                          tuple(getattr(res, "notes", ()) or ()), measured, colours,
                          project.get_image(rec.id).status, kept)
