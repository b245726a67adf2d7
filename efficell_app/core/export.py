"""Exports labs open elsewhere: Excel, CSV, label TIFF, outline PNG, ImageJ ROIs, QuPath GeoJSON.

Every writer is atomic (a file is either the old one or the complete new one) and turns
OS failures into :class:`OutputError` with a plain reason. Nothing passed in is modified,
so after an error the caller can simply write again to another path. Every writer records
the ``settings`` it is given (app version, model and adapter hashes, parameters) inside or
beside the file.

Coordinates in ROI and GeoJSON files put the image's top-left corner at (0, 0), as Fiji
and QuPath do (the same convention as the centroids in :mod:`efficell_app.core.measure`).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import uuid
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import __version__
from .errors import OutputError
from .fileio import atomic_write_with

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from .images import ImageData

log = logging.getLogger(__name__)

EXCEL_MAX_DATA_ROWS = 1_048_575  # 1,048,576 rows per sheet, one of them the header
EXCEL_MAX_COL_WIDTH = 40
SETTINGS_TAG = 65000  # private TIFF tag holding the settings JSON of a uint32 label image


# ----------------------------------------------------------------------------- helpers


def _write(path: str | Path, writer: Callable[[Path], None]) -> Path:
    """Atomic write with a clearer message for a file held open by another program."""
    path = Path(path)
    try:
        atomic_write_with(path, writer)
    except OutputError as exc:
        cause = exc.__cause__
        if isinstance(cause, PermissionError) and path.exists() and path.parent.is_dir() and _dir_writable(path.parent):
            raise OutputError(path, "cannot replace the file: it is probably open in another program "
                              "(such as Excel); close it there or save under another name") from cause
        raise
    except OSError as exc:  # raised by a writer outside atomic_path's reach
        raise OutputError(path, f"cannot write the file ({exc.strerror or exc})") from exc
    return path


def _dir_writable(folder: Path) -> bool:
    import os

    return os.access(folder, os.W_OK)


def settings_record(settings: dict[str, Any] | None) -> dict[str, Any]:
    """The settings as recorded in exports: the caller's, plus app version and date if missing."""
    rec: dict[str, Any] = {"app_version": __version__}
    rec.update(settings or {})
    rec.setdefault("exported_at", _dt.datetime.now().astimezone().isoformat(timespec="seconds"))
    return rec


def model_name(identity: dict[str, Any]) -> str:
    """The model that made labels, as the tables name it ("encoder + adapter"); "" for none."""
    if not identity or not identity.get("encoder"):
        return ""
    return f"{identity['encoder']} + {identity.get('adapter') or 'built-in'}"


def models_record(models: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The settings entries naming each model whose labels a table measures, with its checksums
    (``model_1``, ``model_1_encoder_sha256``, ...), in name order."""
    rec: dict[str, Any] = {}
    for k, (name, ident) in enumerate(sorted(models.items()), start=1):
        rec[f"model_{k}"] = name
        for key in ("encoder_sha256", "adapter_sha256", "app_version"):
            if ident.get(key):
                rec[f"model_{k}_{key}"] = ident[key]
    return rec


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return None if not math.isfinite(float(obj)) else float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (Path, _dt.date)):
        return str(obj)
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    return str(obj)


def _finite(obj: Any) -> Any:
    """``obj`` with NaN/infinite floats replaced by None (JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def settings_json(settings: dict[str, Any] | None) -> str:
    """The settings record as JSON text."""
    return json.dumps(_finite(settings_record(settings)), indent=2, default=_json_default, ensure_ascii=False)


def _flatten(d: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _flatten(value, prefix=f"{name}.")
        else:
            yield name, value


def _cell_value(v: Any) -> Any:
    """A value openpyxl stores natively: numbers stay numbers, NaN becomes empty."""
    if v is None:
        return None
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return f if math.isfinite(f) else None
    if isinstance(v, (list, tuple, dict, set)):
        return _cell_text(json.dumps(v, default=_json_default, ensure_ascii=False))
    try:
        import pandas as pd

        if v is pd.NA or v is pd.NaT:
            return None
    except ImportError:  # pragma: no cover
        pass
    return _cell_text(str(v))


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # what makes a spreadsheet read a cell as a formula


def neutralise_formula(text: str) -> str:
    """Text a spreadsheet keeps as text: the OWASP escape against formula (CSV) injection.

    A text starting with ``= + - @``, a tab or a carriage return gets a leading apostrophe,
    so ``=HYPERLINK(...)`` in a set, image or channel name is shown, never run. Used for every
    text cell and header of the CSV and xlsx exports (numbers are written as numbers).
    """
    return "'" + text if text.startswith(FORMULA_START) else text


def _cell_text(text: str) -> str:
    """Text Excel keeps as text: escaped (:func:`neutralise_formula`), no control characters,
    at most 32,767 characters."""
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    return ILLEGAL_CHARACTERS_RE.sub("", neutralise_formula(text))[:32767]


def _csv_frame(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with every text cell and header escaped (:func:`neutralise_formula`); numbers untouched."""
    import pandas as pd

    out = df.rename(columns=lambda c: neutralise_formula(str(c)))
    for j, dt in enumerate(out.dtypes):
        if not pd.api.types.is_numeric_dtype(dt):  # text, object or category columns
            col = out.iloc[:, j].astype(object)
            out.isetitem(j, col.map(lambda v: neutralise_formula(v) if isinstance(v, str) else v))
    return out


# ----------------------------------------------------------------------------- tables


def write_xlsx(cells: pd.DataFrame, images: pd.DataFrame | None, settings: dict[str, Any] | None, path: str | Path) -> Path:
    """Excel workbook with sheets ``Cells``, ``Images`` and ``Settings``.

    Header rows are frozen, columns sized to their content, numbers stored as numbers.
    More cells than one sheet holds are split across ``Cells``, ``Cells_2``, ... and the
    Settings sheet says so.
    """
    rec = settings_record(settings)
    n = len(cells)
    n_sheets = max(1, math.ceil(n / EXCEL_MAX_DATA_ROWS))
    if n_sheets > 1:
        names = ", ".join(_cells_sheet(i) for i in range(n_sheets))
        note = (f"{n} cells exceed Excel's limit of {EXCEL_MAX_DATA_ROWS} rows per sheet; "
                f"they are split across sheets {names}")
        log.warning(note)
        rec["note_cells_split"] = note

    def writer(tmp: Path) -> None:
        from openpyxl import Workbook

        wb = Workbook(write_only=True)
        for i in range(n_sheets):
            part = cells.iloc[i * EXCEL_MAX_DATA_ROWS:(i + 1) * EXCEL_MAX_DATA_ROWS]
            _frame_sheet(wb, _cells_sheet(i), part)
        if images is not None:
            _frame_sheet(wb, "Images", images)
        else:
            wb.create_sheet("Images")
        ws = wb.create_sheet("Settings")
        rows = [(_cell_text(k), _cell_value(v)) for k, v in _flatten(rec)]
        _set_widths(ws, ["setting", "value"], [[r[0] for r in rows], [r[1] for r in rows]])
        ws.freeze_panes = "A2"
        ws.append(["setting", "value"])
        for r in rows:
            ws.append(list(r))
        _save_workbook(wb, tmp)

    return _write(path, writer)


def _save_workbook(wb: Any, path: Path) -> None:
    """``wb.save(path)``, except that the file is closed even when writing fails (disk full):
    openpyxl's own save leaves its zip archive open then, so the temporary file could not be
    removed on Windows and the archive would try to write again when garbage-collected."""
    from zipfile import ZIP_DEFLATED, ZipFile

    from openpyxl.writer.excel import ExcelWriter

    wb.properties.modified = _dt.datetime.now(tz=_dt.timezone.utc).replace(tzinfo=None)
    try:
        with ZipFile(path, "w", ZIP_DEFLATED, allowZip64=True) as archive:
            ExcelWriter(wb, archive).write_data()
    except BaseException:
        _discard_sheets(wb)
        raise


def _discard_sheets(wb: Any) -> None:
    """After a failed save, quietly end what openpyxl's write-only sheets still hold (row
    generators, temporary files): left to the garbage collector they print "Exception ignored
    ... Traceback" blocks on the user's terminal (a full disk, for one)."""
    import contextlib

    for ws in wb.worksheets:
        rows, writer = getattr(ws, "_rows", None), getattr(ws, "_writer", None)
        if rows is not None:
            with contextlib.suppress(Exception):
                rows.close()
            ws._rows = None
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.xf.close()
            with contextlib.suppress(Exception):
                writer.cleanup()


def _cells_sheet(i: int) -> str:
    return "Cells" if i == 0 else f"Cells_{i + 1}"


def _frame_sheet(wb: Any, name: str, df: pd.DataFrame) -> None:
    ws = wb.create_sheet(name)
    header = [_cell_text(str(c)) for c in df.columns]
    columns = [df[c].to_numpy() for c in df.columns]
    _set_widths(ws, header, [col[:200] for col in columns])
    ws.freeze_panes = "A2"
    ws.append(header)
    converted = [[_cell_value(v) for v in col.tolist()] for col in columns]
    for row in zip(*converted):
        ws.append(list(row))


def _set_widths(ws: Any, header: list[str], samples: list[Any]) -> None:
    from openpyxl.utils import get_column_letter

    for j, (h, col) in enumerate(zip(header, samples), start=1):
        width = len(h)
        for v in list(col)[:200]:
            v = _cell_value(v)
            text = f"{v:.6g}" if isinstance(v, float) else str(v) if v is not None else ""
            width = max(width, len(text))
        ws.column_dimensions[get_column_letter(j)].width = min(EXCEL_MAX_COL_WIDTH, width + 2)


def companion_paths(path: str | Path) -> tuple[Path, Path]:
    """Where :func:`write_csv` puts the per-image table and the settings for ``path``."""
    path = Path(path)
    return path.with_name(f"{path.stem}_images.csv"), path.with_name(f"{path.stem}_settings.json")


def write_csv(cells: pd.DataFrame, path: str | Path, settings: dict[str, Any] | None = None,
              images: pd.DataFrame | None = None) -> Path:
    """CSV with the same columns as the ``Cells`` sheet (UTF-8 with BOM so Excel reads it).

    With ``images`` the per-image table goes to ``<stem>_images.csv``; the settings always go
    to ``<stem>_settings.json`` beside it.
    """
    images_path, settings_path = companion_paths(path)
    # CRLF rows (RFC 4180): a carriage return inside a text cell is then quoted, so it can never
    # start a new row (and with it a formula) in the reader.
    safe = _csv_frame(cells)
    _write(path, lambda tmp: safe.to_csv(tmp, index=False, encoding="utf-8-sig", lineterminator="\r\n"))
    if images is not None:
        safe_images = _csv_frame(images)
        _write(images_path, lambda tmp: safe_images.to_csv(tmp, index=False, encoding="utf-8-sig",
                                                           lineterminator="\r\n"))
    text = settings_json(settings)
    _write(settings_path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return Path(path)


# ----------------------------------------------------------------------------- images


def write_label_tiff(labels: np.ndarray, path: str | Path, pixel_size_um: float | None = None,
                     settings: dict[str, Any] | None = None, *, metadata: dict[str, Any] | None = None) -> Path:
    """Label image as TIFF: uint16, or uint32 above 65,535 labels; pixel size readable by ImageJ.

    ``settings`` and any extra ``metadata`` (such as the source file) are recorded in the file:
    as ImageJ "Info" (Image > Show Info in Fiji), or for uint32 in private tag 65000.
    """
    import tifffile

    if metadata:
        settings = {**(settings or {}), **metadata}
    labels = np.asarray(labels)
    top = int(labels.max(initial=0))
    if labels.size and int(labels.min()) < 0:
        raise ValueError("labels must not be negative")
    info = settings_json(settings)
    kwargs: dict[str, Any] = {"compression": "zlib"}
    if pixel_size_um:
        kwargs["resolution"] = (1.0 / pixel_size_um, 1.0 / pixel_size_um)
    if top <= np.iinfo(np.uint16).max:
        data = labels.astype(np.uint16)

        def writer(tmp: Path) -> None:
            meta: dict[str, Any] = {"Info": info}
            if pixel_size_um:
                meta["unit"] = "micron"
            tifffile.imwrite(tmp, data, imagej=True, metadata=meta, **kwargs)
    else:
        # ImageJ hyperstacks cannot be uint32: write a plain TIFF with an ImageJ-style
        # description so Fiji still reads the calibration; settings go in a private tag.
        data = labels.astype(np.uint32)
        desc = "ImageJ=1.11a\n" + ("unit=micron\n" if pixel_size_um else "")

        def writer(tmp: Path) -> None:
            tifffile.imwrite(tmp, data, description=desc, metadata=None,
                             extratags=[(SETTINGS_TAG, "s", 0, info, True)], **kwargs)

    return _write(path, writer)


def read_label_settings(path: str | Path) -> dict[str, Any] | None:
    """The settings :func:`write_label_tiff` recorded in a label TIFF; None when it holds none
    (a file from another program) or cannot be read."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            tag = page.tags.get(SETTINGS_TAG)
            text = tag.value if tag is not None else (tif.imagej_metadata or {}).get("Info")
    except Exception:  # noqa: BLE001 - unreadable or not a TIFF: no record
        return None
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    try:
        record = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def write_overlay_png(image: ImageData, labels: np.ndarray, path: str | Path,
                      settings: dict[str, Any] | None = None, color: tuple[int, int, int] = (255, 255, 0)) -> Path:
    """The normalised image (RGB as is, otherwise its first channel) with cell outlines drawn on it."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo
    from skimage.segmentation import find_boundaries

    from .images import normalize

    if tuple(image.shape) != tuple(np.shape(labels)):
        raise ValueError(f"labels {np.shape(labels)} and image {image.shape} differ in size")
    chans = image.data[:3] if image.rgb and image.n_channels >= 3 else image.data[:1]
    norm = np.clip(normalize(chans), 0.0, 1.0)
    rgb = (np.moveaxis(norm, 0, -1) * 255 + 0.5).astype(np.uint8)
    if rgb.shape[-1] == 1:
        rgb = np.repeat(rgb, 3, axis=-1)
    edges = find_boundaries(np.asarray(labels), mode="inner")
    rgb[edges] = color
    meta = PngInfo()
    meta.add_itxt("efficell_settings", settings_json(settings))

    def writer(tmp: Path) -> None:
        Image.fromarray(rgb, mode="RGB").save(tmp, format="PNG", pnginfo=meta)

    return _write(path, writer)


# ----------------------------------------------------------------------------- polygons


def _signed_area(ring: np.ndarray) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def cell_polygons(labels: np.ndarray) -> Iterator[tuple[int, list[tuple[np.ndarray, list[np.ndarray]]]]]:
    """Outline polygons of each cell: ``(cell_id, [(outer ring, [hole rings]), ...])``.

    Rings are ``(N, 2)`` arrays of (x, y) in image coordinates (top-left corner at 0, 0),
    closed (first point repeated at the end). A cell in several pieces has several outer
    rings, largest first. Contours run along the 0.5 iso-line between cell and background
    pixels (scikit-image ``find_contours``).
    """
    from scipy import ndimage as ndi
    from skimage.measure import find_contours, points_in_poly

    labels = np.asarray(labels)
    fg = labels > 0
    ids = np.unique(labels[fg])
    # find_objects allocates a slot per value up to the largest label: run it on 1..n, not on ids up to 2e9
    dense = np.zeros(labels.shape, np.int32)
    dense[fg] = np.searchsorted(ids, labels[fg]) + 1
    for k, sl in enumerate(ndi.find_objects(dense), start=1):
        i = int(ids[k - 1])
        crop = np.pad(dense[sl] == k, 1).astype(np.uint8)
        r0, c0 = sl[0].start - 1, sl[1].start - 1
        outers: list[np.ndarray] = []
        holes: list[np.ndarray] = []
        for contour in find_contours(crop, 0.5, fully_connected="high"):
            ring = np.stack([contour[:, 1] + c0 + 0.5, contour[:, 0] + r0 + 0.5], axis=1)
            if not np.allclose(ring[0], ring[-1]):
                ring = np.vstack([ring, ring[:1]])
            # With scikit-image's default orientation an outline around the cell has positive
            # signed area in (x, y-down) coordinates, an outline around a hole negative.
            (outers if _signed_area(ring) > 0 else holes).append(ring)
        if not outers:
            continue
        outers.sort(key=lambda r: -abs(_signed_area(r)))
        parts: list[tuple[np.ndarray, list[np.ndarray]]] = [(o, []) for o in outers]
        for hole in holes:
            home = 0
            if len(parts) > 1:
                for k, (outer, _) in enumerate(parts):
                    if points_in_poly(hole[:1], outer)[0]:
                        home = k
                        break
            parts[home][1].append(hole)
        yield i, parts


def write_imagej_rois(labels: np.ndarray, path: str | Path, settings: dict[str, Any] | None = None) -> Path:
    """ImageJ/Fiji ROI set (.zip, one ROI per cell, named ``cell_<id>``).

    A cell of one piece without holes is a polygon ROI; a cell with holes or in several pieces is a
    composite ROI (ImageJ's ShapeRoi: every ring one closed sub-path, filled by the even-odd rule,
    as ImageJ builds it), so that Fiji measures exactly the cell's pixels. Always a new archive
    (never appended to an old one). Settings are stored as the archive comment.
    """
    from roifile import ImagejRoi

    labels = np.asarray(labels)
    width = len(str(int(labels.max(initial=0))))
    comment = settings_json(settings).encode("utf-8")[:65535]
    entries: list[tuple[str, bytes]] = []
    for cell_id, parts in cell_polygons(labels):
        name = f"cell_{cell_id:0{width}d}"
        rings = [ring[:-1] for outer, holes in parts for ring in (outer, *holes)]
        roi = ImagejRoi.frompoints(rings[0].astype(np.float32), name=name) if len(rings) == 1 else \
            _composite_roi(rings, name)
        entries.append((name + ".roi", roi.tobytes()))

    def writer(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name, data in entries:
                zf.writestr(name, data)
            zf.comment = comment

    return _write(path, writer)


def _composite_roi(rings: list[np.ndarray], name: str):  # noqa: ANN202 - roifile.ImagejRoi
    """An ImageJ composite ROI of closed rings ((N, 2) x, y in image coordinates): path data of
    MOVETO (0), LINETO (1) and CLOSE (4) segments, as ImageJ's ``ShapeRoi(float[])`` reads them."""
    from roifile import ROI_TYPE, ImagejRoi

    path: list[float] = []
    for ring in rings:
        path += [0.0, float(ring[0, 0]), float(ring[0, 1])]
        for x, y in ring[1:]:
            path += [1.0, float(x), float(y)]
        path.append(4.0)
    allpts = np.vstack(rings)
    lo, hi = np.floor(allpts.min(axis=0)).astype(int), np.ceil(allpts.max(axis=0)).astype(int)
    return ImagejRoi(roitype=ROI_TYPE.RECT, name=name, shape_roi_size=len(path),
                     multi_coordinates=np.asarray(path, np.float32),
                     left=int(lo[0]), top=int(lo[1]), right=int(hi[0]), bottom=int(hi[1]))


def write_geojson(labels: np.ndarray, cells_df: pd.DataFrame | None, path: str | Path,
                  settings: dict[str, Any] | None = None) -> Path:
    """QuPath-style GeoJSON FeatureCollection: one detection per cell, measurements as properties.

    Geometry is a Polygon (with holes) or a MultiPolygon for a cell in pieces, in pixel
    coordinates as QuPath expects. With ``cells_df`` (rows for this image, ``cell_id``
    column) its numeric columns become the feature's ``measurements``.
    """
    rows: dict[int, dict[str, Any]] = {}
    image_name = ""
    if cells_df is not None and len(cells_df) and "image" in cells_df:
        image_name = str(cells_df["image"].iloc[0])
    if cells_df is not None and len(cells_df):
        skip = {"image", "cell_id"}
        cols = [c for c in cells_df.columns if c not in skip]
        records = cells_df[cols].to_dict(orient="records")
        for cid, rec in zip(cells_df["cell_id"].tolist(), records):
            rows[int(cid)] = {k: v for k, v in ((k, _json_number(v)) for k, v in rec.items()) if v is not None}
    features = []
    for cell_id, parts in cell_polygons(labels):
        polys = [[_ring_coords(outer)] + [_ring_coords(h) for h in holes] for outer, holes in parts]
        geometry = ({"type": "Polygon", "coordinates": polys[0]} if len(polys) == 1
                    else {"type": "MultiPolygon", "coordinates": polys})
        props: dict[str, Any] = {"objectType": "detection", "name": f"cell {cell_id}", "cell_id": cell_id}
        if cell_id in rows:
            props["measurements"] = rows[cell_id]
        # QuPath reads "id" as a UUID; a name-based one keeps re-exports identical.
        fid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"efficell:{image_name}:{cell_id}"))
        features.append({"type": "Feature", "id": fid, "geometry": geometry, "properties": props})
    doc = {"type": "FeatureCollection", "features": features, "efficell": _finite(settings_record(settings))}
    text = json.dumps(doc, default=_json_default, ensure_ascii=False, allow_nan=False)
    return _write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _ring_coords(ring: np.ndarray) -> list[list[float]]:
    return np.round(ring, 3).tolist()


def _json_number(v: Any) -> float | int | None:
    if isinstance(v, (bool, np.bool_)):
        return int(bool(v))
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(float(v)) else None
    return None


__all__ = [
    "EXCEL_MAX_DATA_ROWS", "FORMULA_START", "cell_polygons", "companion_paths", "settings_record", "write_csv", "write_geojson",
    "write_imagej_rois", "write_label_tiff", "write_overlay_png", "write_xlsx", "neutralise_formula",
    "read_label_settings", "model_name", "models_record",
]
