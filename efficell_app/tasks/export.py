"""The export use case: measure a project's labelled images and write tables and per-image files.

For each image the labels measured are the ones that count (``Project.labels_for``: the
user's annotation when there is one, else the latest model result; ``source`` "annotation"
or "result" restricts to one kind), measured by the one measuring path
(``project.measuring.measure_project_image``) with the one pixel-size / channel-name rule.
Measurements the window already shows are reused when they were made from the same labels
with the same calibration, so the workbook holds exactly what the table showed. Images
without labels are listed as not measured; unreadable images are reported and the rest of
the export completes. :func:`export_events` is the generator (the window runs it in a
worker through :func:`export_images`); :func:`export_project` runs it to the end
(``efficell export``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..core.cancel import CancelToken
from ..core.errors import Cancelled, EffiCellError, OutputError
from ..core.measure import MIN_OBJECT_PX
from ..core.pairing import image_stem
from ..project.measuring import (
    FoundLabels,
    MeasuredImage,
    MeasureSettings,
    check_source,
    find_labels,
    measure_project_image,
    record_calibration,
)

if TYPE_CHECKING:
    import pandas as pd

    from ..core.images import ImageData
    from ..project import Project

log = logging.getLogger(__name__)

TABLE_FORMATS = ("xlsx", "csv")
#: per-image files: format -> what is added to the image's stem
FILE_FORMATS = {"tiff": "_labels.tif", "png": "_overlay.png", "roi": "_rois.zip", "geojson": ".geojson"}
#: every format the export dialog offers, with the words it shows
FORMATS = {
    "xlsx": "Excel workbook (.xlsx)",
    "csv": "CSV tables (.csv)",
    "tiff": "Label images (.tif)",
    "png": "Overlay pictures (.png)",
    "roi": "ImageJ ROI sets (.zip)",
    "geojson": "GeoJSON (QuPath)",
}


@dataclass
class ExportReport:
    path: Path  # the first table (or the folder of the per-image files)
    n_images: int = 0  # images measured
    n_cells: int = 0
    not_labelled: list[Path] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # "path: reason"
    files: list[Path] = field(default_factory=list)  # everything written, tables last


@dataclass(frozen=True)
class ExportProgress:
    """``done`` of ``total`` steps (one per image, one per table); ``path`` when a file was written."""

    done: int
    total: int
    message: str
    path: Path | None = None


class ExportWouldReplace(OutputError):
    """An export would replace files already there (and was not told it may): nothing was written."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)
        more = f" and {len(self.paths) - 1} more file(s) this export writes" if len(self.paths) > 1 else ""
        super().__init__(self.paths[0], f"already exists{more}; nothing was replaced")


@dataclass(frozen=True)
class ExportFailed:
    """One line for the user: an image not exported (``"path: reason"``) or nothing written at all."""

    message: str


def file_stem(name: str) -> str:
    """A file-system-safe stem for files named after an image or project (``"a b.ome.tif"`` -> ``"a b"``;
    one scene of a multi-scene file, ``"plate.czi [A1]"`` -> ``"plate_A1"``, so scenes never share a file)."""
    base, bracket, scene = name.partition(" [")
    stem = image_stem(base) + (f"_{scene.removesuffix(']')}" if bracket and name.endswith("]") else "")
    return "".join(ch if ch.isalnum() or ch in "-_. " else "_" for ch in stem).strip() or "image"


def file_stems(records: Sequence[Any]) -> dict[int, str]:
    """The stem of each image's per-image files (:func:`file_stem` of its name), by image id; images
    of one name (in two sets, or two folders of one set) get their set's name, then their id,
    appended, so that one export never writes two images into one file (case ignored)."""
    def key(stem: str) -> str:
        return stem.casefold()

    stems = {r.id: file_stem(r.name) for r in records}
    for tail in (lambda r: file_stem(r.set_name), lambda r: str(r.id)):
        counts: dict[str, int] = {}
        for st in stems.values():
            counts[key(st)] = counts.get(key(st), 0) + 1
        stems = {r.id: f"{stems[r.id]}_{tail(r)}" if counts[key(stems[r.id])] > 1 else stems[r.id] for r in records}
    return stems


def export_targets(records: Sequence[Any], tables: Sequence[Path], files: Sequence[str], folder: Path) -> list[Path]:
    """Every file an export of ``records`` writes: the tables (a CSV table with its companions), then
    each image's ``files``."""
    from ..core.export import companion_paths

    stems = file_stems(records)
    written = [p for t in tables for p in (t, *(companion_paths(t) if t.suffix.lower() == ".csv" else ()))]
    return [*written, *(folder / f"{stems[r.id]}{FILE_FORMATS[fmt]}" for r in records for fmt in files)]


def _write_file(fmt: str, folder: Path, stem: str, found: FoundLabels, img: ImageData, cells: pd.DataFrame,
                px: float | None, settings: dict[str, Any]) -> Path:
    """One per-image file (``fmt`` in :data:`FILE_FORMATS`); returns its path."""
    from ..core import export as ex

    path = folder / f"{stem}{FILE_FORMATS[fmt]}"
    if fmt == "tiff":
        return ex.write_label_tiff(found.labels, path, px, settings)
    if fmt == "png":
        return ex.write_overlay_png(img, found.labels, path, settings)
    if fmt == "roi":
        return ex.write_imagej_rois(found.labels, path, settings)
    return ex.write_geojson(found.labels, cells, path, settings)


def export_events(project: Project, tables: Sequence[str | Path], files: Sequence[str] = (),
                  files_dir: str | Path | None = None, *, image_ids: Sequence[int] | None = None,
                  set_name: str | None = None, source: str = "auto", pixel_size_um: float | None = None,
                  channel_names: Sequence[str] | None = None, default_pixel_size_um: float | None = None,
                  measured: Mapping[int, MeasuredImage] | None = None, scope: str | None = None,
                  write_empty: bool = True, min_object_px: int = MIN_OBJECT_PX, overwrite: bool = False,
                  cancel: CancelToken | None = None) -> Generator[ExportProgress | ExportFailed, None, ExportReport]:
    """Measure the labelled images and write ``tables`` (.xlsx / .csv: all cells, one row per image,
    the settings) and, per image, ``files`` (:data:`FILE_FORMATS` keys) into ``files_dir``.

    The images are ``image_ids`` in that order, else those of ``set_name`` (all sets when
    ``None``). ``pixel_size_um`` / ``channel_names`` override what each image records;
    ``default_pixel_size_um`` is for images that record none (see ``core.measure.choose_calibration``);
    objects smaller than ``min_object_px`` pixels are not measured.
    ``measured``: measurements already made (the window's table), reused for an image when
    they come from the labels that count with the same calibration. Yields progress and one
    :class:`ExportFailed` per image left out (no labels, unreadable); returns the report.
    With ``write_empty=False`` nothing is written when no image has labels. Raises
    :class:`Cancelled` between images and between tables. Every file is written atomically
    (``core.export``), so a cancelled export leaves only complete files: the per-image files
    of the images finished before the cancel, and no table unless every image was measured
    (tables come last); never a temporary file. A full disk fails the image being written
    (``ExportFailed`` naming the file) or, for a table, raises ``OutputError``. Files already there
    are replaced only with ``overwrite``: else :class:`ExportWouldReplace` is raised before anything
    is measured or written.
    """
    import pandas as pd

    from ..core.export import write_csv, write_xlsx

    check_source(source)
    tables = [Path(t) for t in tables]
    bad = [t.name for t in tables if t.suffix.lower().lstrip(".") not in TABLE_FORMATS]
    bad += [f for f in files if f not in FILE_FORMATS]
    if bad:
        raise ValueError(f"cannot export {', '.join(bad)}: tables are .xlsx / .csv, files one of {', '.join(FILE_FORMATS)}")
    folder = Path(files_dir) if files_dir is not None else (tables[0].parent if tables else Path.cwd())
    report = ExportReport(path=tables[0] if tables else folder)
    settings = MeasureSettings(pixel_size_um or None, tuple(channel_names or ()), default_pixel_size_um or None,
                               min_object_px)
    cache = measured or {}
    records = project.list_images(set_name) if image_ids is None else [project.get_image(i) for i in image_ids]
    existing = [p for p in export_targets(records, tables, files, folder) if os.path.lexists(p)]
    if existing and not overwrite:
        raise ExportWouldReplace(existing)
    stems = file_stems(records)
    total = len(records) + len(tables)
    cells: list[pd.DataFrame] = []
    rows: list[dict[str, Any]] = []
    models: dict[str, dict[str, Any]] = {}
    done = 0
    for rec in records:
        if cancel is not None:
            cancel.raise_if_cancelled()
        try:
            found = find_labels(project, rec.id, source)
            if found is None:
                report.not_labelled.append(rec.path)
                what = "no saved annotation" if source == "annotation" else "not segmented yet (no labels to export)"
                yield ExportFailed(f"{rec.path}: {what}")
                done += 1
                continue
            img = project.read_image(rec.id) if files else None
            m = cache.get(rec.id)
            if m is None or not m.reusable_for(found, record_calibration(rec, settings, img)):
                m = measure_project_image(project, rec.id, settings, found=found, image=img)
            assert m is not None
            planes = {"planes": rec.planes.describe()} if rec.planes.describe() else {}  # a stack's plane or projection
            file_settings = {"image": str(rec.path), **planes, "labels": found.origin, "efficell_version": __version__,
                             **found.settings}
            for fmt in files:
                assert img is not None
                path = _write_file(fmt, folder, stems[rec.id], found, img, m.cells, m.calibration.pixel_size_um,
                                   file_settings)
                report.files.append(path)
                yield ExportProgress(done, total, f"Wrote {path.name}", path)
        except Cancelled:
            raise
        except (EffiCellError, OSError, ValueError) as exc:
            msg = str(exc) if isinstance(exc, EffiCellError) else f"{rec.path}: {exc}"
            report.errors.append(msg)
            log.warning("export: %s", msg)
            yield ExportFailed(msg)
        else:
            df = m.cells.copy()
            df.insert(0, "set", rec.set_name)
            cells.append(df)
            rows.append({**m.summary, **planes, "status": rec.status, "path": str(rec.path)})
            if found.identity:
                models[found.model] = found.identity
            report.n_images += 1
            report.n_cells += len(df)
        done += 1
        yield ExportProgress(done, total, f"Measured {rec.name} ({done}/{len(records)})")
    if not cells and not write_empty:
        yield ExportFailed("no image has labels: nothing was written")
        return report
    cells_df = pd.concat(cells, ignore_index=True) if cells else pd.DataFrame({"set": [], "image": []})
    images_df = pd.DataFrame(rows)
    meta = _settings(project, report, set_name if image_ids is None else None, source, scope, settings, models)
    for path in tables:
        if cancel is not None:
            cancel.raise_if_cancelled()
        if path.suffix.lower() == ".xlsx":
            write_xlsx(cells_df, images_df, meta, path)
        else:
            write_csv(cells_df, path, meta, images_df)
        report.files.append(path)
        done += 1
        yield ExportProgress(done, total, f"Wrote {path.name}", path)
    return report


def _settings(project: Project, report: ExportReport, set_name: str | None, source: str, scope: str | None,
              measure: MeasureSettings, models: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The settings sheet: project, scope, labels, measuring choices, counts and each model with
    its checksums (``core.export.settings_record`` adds ``app_version`` and ``exported_at``)."""
    from ..core import export as ex

    settings: dict[str, Any] = {
        "project": project.name,
        "project_folder": str(project.root),
        **({"scope": scope} if scope else {"set": set_name or "(all sets)"}),
        "labels": {"auto": "annotation when saved, else latest result"}.get(source, source),
        "pixel_size_um": measure.pixel_size_um or "from each image (Images sheet; 'unknown': lengths in pixels)",
        **({"default_pixel_size_um": measure.default_pixel_size_um} if measure.default_pixel_size_um else {}),
        "min_object_px": measure.min_object_px,
        "images_measured": report.n_images,
        "images_without_labels": len(report.not_labelled),
    }
    return settings | ex.models_record(models)


def export_project(project: Project, out: str | Path, set_name: str | None = None, source: str = "auto",
                   progress: Callable[[int, int], None] | None = None,
                   cancel: CancelToken | None = None, *, files: Sequence[str] = (), overwrite: bool = False) -> ExportReport:
    """Measure every labelled image (of ``set_name`` or all sets) and write ``out`` (.xlsx or .csv);
    ``files`` (:data:`FILE_FORMATS` keys) also writes those per-image files beside it. Files
    already there are replaced only with ``overwrite`` (else :class:`ExportWouldReplace`).

    ``progress(done, total)`` is called as steps complete (see :func:`export_events`).
    """
    events = export_events(project, [out], files, set_name=set_name, source=source, overwrite=overwrite, cancel=cancel)
    while True:
        try:
            ev = next(events)
        except StopIteration as stop:
            return stop.value
        if progress is not None and isinstance(ev, ExportProgress):
            progress(ev.done, ev.total)


# ----------------------------------------------------------------------------- the window's export


@dataclass(frozen=True)
class ExportOptions:
    """What the export dialog asks: which images, which formats, where, and any override."""

    scope: str  # "image" | "set" | "project"
    formats: tuple[str, ...]
    destination: Path
    pixel_size_um: float | None = None  # None: each image's own (the same rule as the table)
    channel_names: tuple[str, ...] = ()  # (): each image's own
    default_pixel_size_um: float | None = None  # for images that record none (the window's preference)
    min_object_px: int = MIN_OBJECT_PX  # smaller objects are not measured (the window's preference)
    overwrite: bool = False  # replace files of an earlier export (the dialog asks first)


def export_images(project: Project, image_ids: Sequence[int], opts: ExportOptions,
                  measured: Mapping[int, MeasuredImage] | None = None, *,
                  cancel: CancelToken | None = None) -> Iterator[ExportProgress | ExportFailed]:
    """Measure and write the chosen formats into ``opts.destination``: one table for all
    images, per-image files for masks (:func:`export_events`), named after the project, the
    scope or (one image) the image. ``measured``: the window's measurements, reused when valid."""
    from .runtime import loading_heavy_libraries

    ids = list(image_ids)
    with loading_heavy_libraries(preload=True):
        pass
    if not ids:
        yield ExportFailed("nothing to export: no images in this scope")
        return
    dest = opts.destination
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        yield ExportFailed(f"{dest}: cannot create the folder ({exc.strerror or exc})")
        return
    tables, files = _window_outputs(project, ids, opts)
    yield from export_events(project, tables, files, dest, image_ids=ids, pixel_size_um=opts.pixel_size_um,
                             channel_names=opts.channel_names or None,
                             default_pixel_size_um=opts.default_pixel_size_um, measured=measured,
                             scope=opts.scope, write_empty=False, min_object_px=opts.min_object_px,
                             overwrite=opts.overwrite, cancel=cancel)


def _window_outputs(project: Project, ids: Sequence[int], opts: ExportOptions) -> tuple[list[Path], list[str]]:
    """The window's tables (named after the project, the scope or the one image) and per-image formats."""
    base = file_stem(project.name) + ("" if opts.scope == "project" else f"_{opts.scope}")
    if opts.scope == "image" and len(ids) == 1:
        base = file_stem(project.get_image(ids[0]).name)
    tables = [opts.destination / f"{base}_measurements.{fmt}" for fmt in opts.formats if fmt in TABLE_FORMATS]
    return tables, [fmt for fmt in opts.formats if fmt not in TABLE_FORMATS]


def existing_exports(project: Project, image_ids: Sequence[int], opts: ExportOptions) -> list[Path]:
    """The files an export with ``opts`` would replace (the dialog asks before it does)."""
    tables, files = _window_outputs(project, list(image_ids), opts)
    records = [project.get_image(i) for i in image_ids]
    return [p for p in export_targets(records, tables, files, opts.destination) if os.path.lexists(p)]
