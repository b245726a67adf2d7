"""Background jobs of the window, as plain generators (no Qt): add images, segment, measure, export.

Each ``*_job`` returns a ``job(cancel) -> Iterator[event]`` for
:func:`efficell_app.gui.workers.start_worker`. They only chain the core and project
APIs and say what happened per image; a failing image is reported and the rest go on.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.cancel import CancelToken
from ..core.errors import EffiCellError
from .overlay import label_colours

if TYPE_CHECKING:
    import pandas as pd

    from ..project import Project

log = logging.getLogger(__name__)
Job = Callable[[CancelToken], Iterator[Any]]
_IMPORT_LOCK = threading.RLock()

FORMATS = {
    "xlsx": "Excel workbook (.xlsx)",
    "csv": "CSV tables (.csv)",
    "tiff": "Label images (.tif)",
    "png": "Overlay pictures (.png)",
    "roi": "ImageJ ROI sets (.zip)",
    "geojson": "GeoJSON (QuPath)",
}


# ----------------------------------------------------------------------------- events
@dataclass(frozen=True)
class Status:
    """A line for the status bar (loading the model, counting files ...)."""

    message: str


@dataclass(frozen=True)
class FolderAdded:
    report: Any  # project.AddReport
    set_name: str


@dataclass(frozen=True)
class RunStarted:
    total: int
    model: str
    device: str


@dataclass(frozen=True)
class ImageStarted:
    index: int
    total: int
    image_id: int
    name: str


@dataclass(frozen=True)
class ImageSegmented:
    index: int
    total: int
    image_id: int
    labels: np.ndarray
    cells: Any  # pandas.DataFrame of measurements
    seconds: float
    colours: np.ndarray | None = None  # RGBA per label (touching cells differ), made here, not in the GUI


@dataclass(frozen=True)
class ImageFailed:
    index: int
    total: int
    image_id: int
    path: str
    reason: str

    @property
    def message(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass(frozen=True)
class Measured:
    image_id: int
    cells: Any  # pandas.DataFrame


@dataclass(frozen=True)
class Thumbnail:
    image_id: int
    rgb: np.ndarray


@dataclass(frozen=True)
class ExportOptions:
    scope: str  # "image" | "set" | "project"
    formats: tuple[str, ...]
    destination: Path
    pixel_size_um: float | None = None
    channel_names: tuple[str, ...] = ()


@dataclass
class SegmentOptions:
    model: str | None = None
    diameter: float | None = None
    channels: tuple[int, ...] | None = None
    device: str = "auto"
    pixel_size_um: float | None = None  # default when the file has none
    encoder_weights: str | None = "auto"  # None: random encoder weights (tests only)


# ----------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def loading_heavy_libraries(preload: bool = True) -> Iterator[None]:
    """Import/load big libraries without full garbage collections, then freeze what they made.

    Loading torch and a model creates hundreds of thousands of objects; each full collection
    meanwhile holds the GIL for 0.2-0.5 s and the window stops. With collection off during
    the load and the results frozen afterwards (``gc.freeze``: never scanned again), later
    collections only look at the few objects a run creates per image.
    ``preload`` also imports the libraries used per image (pandas, scikit-image ...).
    Holds a lock: two threads importing numpy/scipy submodules at once can see half-initialised
    modules, so background imports happen one thread at a time.
    """
    with _IMPORT_LOCK:
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            yield
            if preload:
                import pandas  # noqa: F401
                import scipy.ndimage  # noqa: F401
                import skimage.measure
                import skimage.segmentation  # noqa: F401
                import tifffile  # noqa: F401

                from ..core import export, measure  # noqa: F401
        finally:
            gc.freeze()
            if was_enabled:
                gc.enable()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, EffiCellError) and getattr(exc, "reason", None):
        return str(exc.reason)  # type: ignore[attr-defined]
    if isinstance(exc, MemoryError):
        return "out of memory"
    return str(exc) or type(exc).__name__


def measure(project: Project, image_id: int, labels: np.ndarray, image: Any = None,
            pixel_size_um: float | None = None, channel_names: Sequence[str] | None = None) -> pd.DataFrame:
    """Per-cell measurements of one project image (``image_id`` column added)."""
    from ..core.measure import measure_cells

    rec = project.get_image(image_id)
    image = image if image is not None else project.read_image(image_id)
    px = image.pixel_size_um or pixel_size_um or None
    df = measure_cells(labels, image, pixel_size_um=px, channel_names=list(channel_names) if channel_names else None,
                       image_name=rec.name)
    df.insert(0, "image_id", np.full(len(df), int(image_id), dtype=np.int64))
    return df


# ----------------------------------------------------------------------------- jobs
def add_folder_job(project: Project, paths: Sequence[Path], set_name: str) -> Job:
    """Add dropped folders/files to one set; yields :class:`FolderAdded` with the report."""

    def job(cancel: CancelToken) -> Iterator[Any]:
        with loading_heavy_libraries(preload=False):
            import PIL.Image  # noqa: F401 - the readers, imported one thread at a time
            import tifffile  # noqa: F401
        folders = [p for p in paths if p.is_dir()]
        files = [p for p in paths if not p.is_dir()]
        yield Status(f"Adding images to '{set_name}'…")
        reports = []
        for folder in folders:
            reports.append(project.add_folder(folder, set_name, cancel=cancel))
        if files:
            reports.append(project.add_files(files, set_name, cancel=cancel))
        merged = reports[0]
        for r in reports[1:]:
            merged.added.extend(r.added)
            merged.skipped.extend(r.skipped)
            merged.duplicates += r.duplicates
            merged.cancelled = merged.cancelled or r.cancelled
        yield FolderAdded(merged, set_name)

    return job


def segment_job(project: Project, image_ids: Sequence[int], opts: SegmentOptions,
                set_name: str | None = None) -> Job:
    """Load the segmenter once, then segment and record each image (``project.segment_project``),
    measuring each result and making its overlay colours here, off the GUI thread."""
    ids = list(image_ids)

    def job(cancel: CancelToken) -> Iterator[Any]:
        from ..project import segment_project

        yield Status("Loading the model…")
        with loading_heavy_libraries():
            from ..core.pipeline import Segmenter

            seg = Segmenter.load(opts.model, device=opts.device, encoder_weights=opts.encoder_weights)
        device = str(getattr(seg, "device", opts.device))
        name = "built-in" if opts.model in (None, "builtin") else Path(str(opts.model)).stem
        total = len(ids)
        yield RunStarted(total, name, device)
        events = segment_project(project, seg, set_name, cancel, diameter=opts.diameter, channels=opts.channels,
                                 image_ids=ids)
        for i, image_id in enumerate(ids):
            cancel.raise_if_cancelled()
            try:
                image_name = project.get_image(image_id).name
            except KeyError:
                image_name = f"image {image_id}"
            yield ImageStarted(i, total, image_id, image_name)
            ev = next(events, None)  # one event per image, in order (segment_project's promise)
            if ev is None:
                return
            if not ev.ok:
                log.info("segmentation failed: %s", ev.error)
                yield ImageFailed(i, total, image_id, str(ev.path), ev.message)
                continue
            labels = ev.result.labels
            try:
                cells = measure(project, image_id, labels, ev.image, opts.pixel_size_um)
            except (EffiCellError, OSError, MemoryError, ValueError) as exc:
                log.info("measuring %s failed: %s", ev.path, exc)
                yield ImageFailed(i, total, image_id, str(ev.path), _reason(exc))
                continue
            yield ImageSegmented(i, total, image_id, labels, cells, ev.seconds, label_colours(labels))

    return job


def measure_job(project: Project, image_ids: Sequence[int], pixel_size_um: float | None = None) -> Job:
    """Measurements of images that already have labels (annotation or latest result)."""

    def job(cancel: CancelToken) -> Iterator[Any]:
        with loading_heavy_libraries(preload=True):
            pass
        for image_id in image_ids:
            cancel.raise_if_cancelled()
            try:
                found = project.labels_for(image_id)
                if found is None:
                    continue
                labels, _source = found
                yield Measured(image_id, measure(project, image_id, labels, None, pixel_size_um))
            except (EffiCellError, OSError, ValueError) as exc:
                rec_path = str(image_id)
                yield ImageFailed(0, 0, image_id, rec_path, _reason(exc))

    return job


def thumbnail_job(project: Project, image_ids: Sequence[int], size: int = 40) -> Job:
    """Small previews for the project panel (unreadable images are skipped silently)."""
    from .icons import thumbnail_array

    def job(cancel: CancelToken) -> Iterator[Any]:
        with loading_heavy_libraries(preload=False):
            import PIL.Image  # noqa: F401
            import tifffile  # noqa: F401
        for image_id in image_ids:
            if cancel.cancelled:
                return
            try:
                img = project.read_image(image_id)
            except (EffiCellError, OSError, ValueError, KeyError) as exc:
                log.debug("no thumbnail for %s: %s", image_id, exc)
                continue
            yield Thumbnail(image_id, thumbnail_array(img.data, size))

    return job


def device_description(device: str = "auto") -> str:
    """'GPU: NVIDIA H200 (139 GB)' or 'CPU (16 threads)' for the status bar (imports torch)."""
    import os

    with loading_heavy_libraries(preload=False):
        import torch

    want = device or "auto"
    if want != "cpu" and torch.cuda.is_available():
        idx = int(want.split(":")[1]) if want.startswith("cuda:") else 0
        if idx < torch.cuda.device_count():
            p = torch.cuda.get_device_properties(idx)
            return f"GPU: {p.name} ({p.total_memory / 2**30:.0f} GiB)"
    if want in ("auto", "mps") and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "GPU: Apple (MPS)"
    return f"CPU ({torch.get_num_threads()} threads, {os.cpu_count()} cores)"


def gpu_names() -> list[str]:
    import torch

    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def export_job(project: Project, image_ids: Sequence[int], opts: ExportOptions) -> Job:
    """Measure and write the chosen formats (``project.export.export_events``): one table for all
    images, per-image files for masks, all in ``opts.destination``.

    Images without labels or that cannot be read are reported (``ExportFailed``) and
    the others are still written. Every file is written atomically by ``core.export``.
    """
    ids = list(image_ids)

    def job(cancel: CancelToken) -> Iterator[Any]:
        with loading_heavy_libraries(preload=True):
            pass
        from ..project.export import TABLE_FORMATS, ExportFailed, export_events, file_stem

        if not ids:
            yield ExportFailed("nothing to export: no images in this scope")
            return
        dest = opts.destination
        try:
            dest.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            yield ExportFailed(f"{dest}: cannot create the folder ({exc.strerror or exc})")
            return
        base = file_stem(project.name) + ("" if opts.scope == "project" else f"_{opts.scope}")
        if opts.scope == "image" and len(ids) == 1:
            base = file_stem(project.get_image(ids[0]).name)
        tables = [dest / f"{base}_measurements.{fmt}" for fmt in opts.formats if fmt in TABLE_FORMATS]
        files = [fmt for fmt in opts.formats if fmt not in TABLE_FORMATS]
        yield from export_events(project, tables, files, dest, image_ids=ids, pixel_size_um=opts.pixel_size_um,
                                 channel_names=opts.channel_names or None, scope=opts.scope, write_empty=False,
                                 cancel=cancel)

    return job
