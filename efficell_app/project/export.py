"""Measure a project's labelled images and write one spreadsheet (used by CLI and GUI).

For each image the labels measured are the user's annotation when there is one, else the
latest model result (``source="auto"``); ``"annotation"`` or ``"result"`` restricts to one
kind. Images without labels are listed as not measured; unreadable images are reported and
the rest of the export completes.
"""

from __future__ import annotations

import datetime as _dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..core.cancel import CancelToken
from ..core.errors import EffiCellError
from .labelfile import read_labels

if TYPE_CHECKING:
    import pandas as pd

    from .images import ImageRecord
    from .project import Project

log = logging.getLogger(__name__)

SOURCES = ("auto", "annotation", "result")


@dataclass
class ExportReport:
    path: Path
    n_images: int = 0  # images measured
    n_cells: int = 0
    not_labelled: list[Path] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # "path: reason"


def _labels(project: Project, image_id: int, source: str) -> tuple[Any, str, dict[str, Any]] | None:
    """(labels, "annotation"|"result", identity) for an image, or None."""
    if source in ("auto", "annotation"):
        hist = project.annotation_history(image_id)
        if hist:
            return read_labels(hist[0].path), f"annotation v{hist[0].version}", {}
        if source == "annotation":
            return None
    res = project.latest_result(image_id)
    if res is None:
        return None
    return read_labels(res.path), f"result {res.id}", res.identity


def _model_name(identity: dict[str, Any]) -> str:
    if not identity:
        return ""
    adapter = identity.get("adapter") or "built-in"
    return f"{identity.get('encoder', '?')} + {adapter}"


def measure_image(project: Project, rec: ImageRecord, source: str = "auto",
                  labels_found: tuple[Any, str, dict[str, Any]] | None = None) -> tuple[pd.DataFrame, str] | None:
    """Measure one image's labels (see module docstring); ``None`` when it has none of ``source``."""
    from ..core.measure import measure_cells

    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}, not '{source}'")
    found = labels_found or _labels(project, rec.id, source)
    if found is None:
        return None
    labels, origin, _ = found
    img = project.read_image(rec.id)
    names = list(rec.channel_names) if len(rec.channel_names) == img.n_channels else None
    return measure_cells(labels, img, rec.pixel_size_um, names, rec.name), origin


def export_project(project: Project, out: str | Path, set_name: str | None = None, source: str = "auto",
                   progress: Callable[[int, int], None] | None = None,
                   cancel: CancelToken | None = None) -> ExportReport:
    """Measure every labelled image (of ``set_name`` or all sets) and write ``out`` (.xlsx)."""
    import pandas as pd

    from ..core.export import write_xlsx
    from ..core.measure import summarize_image

    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}, not '{source}'")
    out = Path(out)
    report = ExportReport(path=out)
    records = project.list_images(set_name)
    cells: list[pd.DataFrame] = []
    rows: list[dict[str, Any]] = []
    models: dict[str, dict[str, Any]] = {}
    for i, rec in enumerate(records, start=1):
        if cancel is not None:
            cancel.raise_if_cancelled()
        try:
            found = _labels(project, rec.id, source)
            if found is None:
                report.not_labelled.append(rec.path)
                continue
            measured = measure_image(project, rec, source, found)
        except EffiCellError as exc:
            report.errors.append(str(exc))
            log.warning("export: %s", exc)
            continue
        assert measured is not None
        df, origin = measured
        identity = found[2]
        names = list(rec.channel_names)
        df.insert(0, "set", rec.set_name)
        row = {"set": rec.set_name, **summarize_image(df, len(df), rec.pixel_size_um, names, rec.name)}
        row.update({"labels": origin, "model": _model_name(identity), "status": rec.status, "path": str(rec.path)})
        if identity:
            models[_model_name(identity)] = identity
        cells.append(df)
        rows.append(row)
        report.n_images += 1
        report.n_cells += len(df)
        if progress is not None:
            progress(i, len(records))
    cells_df = pd.concat(cells, ignore_index=True) if cells else pd.DataFrame({"set": [], "image": []})
    images_df = pd.DataFrame(rows)
    settings: dict[str, Any] = {
        "project": project.name,
        "project_folder": str(project.root),
        "set": set_name or "(all sets)",
        "labels": {"auto": "annotation when saved, else latest result"}.get(source, source),
        "exported": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "efficell_version": __version__,
        "images_measured": report.n_images,
        "images_without_labels": len(report.not_labelled),
    }
    for k, (name, ident) in enumerate(sorted(models.items()), start=1):
        settings[f"model_{k}"] = name
        for key in ("encoder_sha256", "adapter_sha256", "app_version"):
            if ident.get(key):
                settings[f"model_{k}_{key}"] = ident[key]
    write_xlsx(cells_df, images_df, settings, out)
    return report
