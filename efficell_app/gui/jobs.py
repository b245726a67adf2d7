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
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.cancel import CancelToken
from ..core.errors import Cancelled, EffiCellError
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


@dataclass(frozen=True)
class ExportProgress:
    done: int
    total: int
    message: str
    path: Path | None = None


@dataclass(frozen=True)
class ExportFailed:
    message: str


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
    """Load the segmenter once, then segment, record and measure each image in turn."""
    ids = list(image_ids)

    def job(cancel: CancelToken) -> Iterator[Any]:
        yield Status("Loading the model…")
        with loading_heavy_libraries():
            from ..core.pipeline import Segmenter

            seg = Segmenter.load(opts.model, device=opts.device, encoder_weights=opts.encoder_weights)
        device = str(getattr(seg, "device", opts.device))
        name = "built-in" if opts.model in (None, "builtin") else Path(str(opts.model)).stem
        total = len(ids)
        yield RunStarted(total, name, device)
        run_id: int | None = None
        for i, image_id in enumerate(ids):
            cancel.raise_if_cancelled()
            path = f"image {image_id}"
            try:
                rec = project.get_image(image_id)
                path = str(rec.path)
                yield ImageStarted(i, total, image_id, rec.name)
                img = project.read_image(image_id)
                t0 = time.perf_counter()
                res = seg.segment(img, diameter=opts.diameter, channels=opts.channels, cancel=cancel)
                if run_id is None:
                    run_id = project.start_run(res.settings, seg.identity, set_name=set_name)
                project.record_result(image_id, res.labels, res.settings, seg.identity, run_id=run_id,
                                      seconds=getattr(res, "seconds", None))
                cells = measure(project, image_id, res.labels, img, opts.pixel_size_um)
                colours = label_colours(res.labels)
                yield ImageSegmented(i, total, image_id, res.labels, cells, time.perf_counter() - t0, colours)
            except Cancelled:
                raise
            except (EffiCellError, OSError, MemoryError, ValueError) as exc:
                log.info("segmentation failed for %s: %s", path, exc)
                yield ImageFailed(i, total, image_id, path, _reason(exc))

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


def _safe_stem(name: str) -> str:
    stem = name
    for suffix in (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".png", ".jpg", ".jpeg", ".bmp"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return "".join(ch if ch.isalnum() or ch in "-_. " else "_" for ch in stem).strip() or "image"


def _write_image_file(fmt: str, dest: Path, stem: str, labels: np.ndarray, img: Any, cells: Any,
                      px: float | None, settings: dict[str, Any]) -> Path:
    """One per-image export file (``fmt`` in tiff, png, roi, geojson); returns its path."""
    from ..core import export as ex

    if fmt == "tiff":
        return ex.write_label_tiff(labels, dest / f"{stem}_labels.tif", px, settings)
    if fmt == "png":
        return ex.write_overlay_png(img, labels, dest / f"{stem}_overlay.png", settings)
    if fmt == "roi":
        return ex.write_imagej_rois(labels, dest / f"{stem}_rois.zip", settings)
    if fmt == "geojson":
        return ex.write_geojson(labels, cells, dest / f"{stem}.geojson", settings)
    raise ValueError(f"unknown per-image format '{fmt}'")


def export_job(project: Project, image_ids: Sequence[int], opts: ExportOptions) -> Job:
    """Measure and write the chosen formats; one table for all images, per-image files for masks.

    Images without labels or that cannot be read are reported (:class:`ExportFailed`) and
    the others are still written. Every file is written atomically by ``core.export``.
    """
    ids = list(image_ids)

    def job(cancel: CancelToken) -> Iterator[Any]:
        import datetime as dt

        with loading_heavy_libraries(preload=True):
            import pandas as pd

        from .. import __version__
        from ..core import export as ex
        from ..core.measure import measure_cells, summarize_image

        if not ids:
            yield ExportFailed("nothing to export: no images in this scope")
            return
        dest = opts.destination
        try:
            dest.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            yield ExportFailed(f"{dest}: cannot create the folder ({exc.strerror or exc})")
            return
        per_image = [f for f in opts.formats if f in ("tiff", "png", "roi", "geojson")]
        tables = [f for f in opts.formats if f in ("xlsx", "csv")]
        total = len(ids) + len(tables)
        frames: list[pd.DataFrame] = []
        rows: list[dict[str, Any]] = []
        models: dict[str, str] = {}
        done = 0
        for image_id in ids:
            cancel.raise_if_cancelled()
            rec = project.get_image(image_id)
            try:
                found = project.labels_for(image_id)
                if found is None:
                    yield ExportFailed(f"{rec.path}: not segmented yet (no labels to export)")
                    done += 1
                    continue
                labels, source = found
                img = project.read_image(image_id)
                px = opts.pixel_size_um or rec.pixel_size_um or None
                names = list(opts.channel_names) if opts.channel_names else None
                cells = measure_cells(labels, img, px, names, rec.name)
                latest = project.latest_result(image_id) if source == "result" else None
                settings = {"image": str(rec.path), "labels": source, "efficell_version": __version__,
                            **(latest.settings if latest is not None else {})}
                if latest is not None and latest.identity.get("adapter"):
                    models[str(latest.identity.get("adapter"))] = str(latest.identity.get("adapter_sha256", ""))
                for fmt in per_image:
                    path = _write_image_file(fmt, dest, _safe_stem(rec.name), labels, img, cells, px, settings)
                    yield ExportProgress(done, total, f"Wrote {path.name}", path)
                cells.insert(0, "set", rec.set_name)
                frames.append(cells)
                row = {"set": rec.set_name, **summarize_image(cells, len(cells), px, names or img.channel_names, rec.name)}
                row.update({"labels": source, "status": rec.status, "path": str(rec.path)})
                rows.append(row)
            except Cancelled:
                raise
            except (EffiCellError, OSError, ValueError) as exc:
                yield ExportFailed(str(exc) if isinstance(exc, EffiCellError) else f"{rec.path}: {_reason(exc)}")
            done += 1
            yield ExportProgress(done, total, f"Measured {rec.name} ({done}/{len(ids)})")
        if not frames:
            yield ExportFailed("no image in this scope has labels: nothing was written")
            return
        cells_df = pd.concat(frames, ignore_index=True)
        images_df = pd.DataFrame(rows)
        meta = {"project": project.name, "project_folder": str(project.root), "scope": opts.scope,
                "exported": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                "efficell_version": __version__, "images_measured": len(frames),
                "pixel_size_um": opts.pixel_size_um or "from each image file",
                **{f"adapter_{k}": v for k, v in models.items()}}
        base = _safe_stem(project.name) + ("" if opts.scope == "project" else f"_{opts.scope}")
        if opts.scope == "image" and len(ids) == 1:
            base = _safe_stem(project.get_image(ids[0]).name)
        for fmt in tables:
            cancel.raise_if_cancelled()
            path = dest / f"{base}_measurements.{fmt}"
            if fmt == "xlsx":
                ex.write_xlsx(cells_df, images_df, meta, path)
            else:
                ex.write_csv(cells_df, path, meta, images_df)
            done += 1
            yield ExportProgress(done, total, f"Wrote {path.name}", path)

    return job
