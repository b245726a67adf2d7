"""Which labels of a project image count, and how the image is measured: one home for each rule.

*Which labels count* (:func:`find_labels`, i.e. :meth:`Project.labels_for`): the user's saved
annotation when there is one, else the latest model result (``source="auto"``);
``"annotation"`` or ``"result"`` restricts to one kind.

*How it is measured* (:func:`measure_project_image`): ``core.measure.measure_image`` with the
calibration of ``core.measure.choose_calibration`` (the user's override, then the image's
record, then the file, then the window's default pixel size). The window's table and plot,
the exports and ``efficell measure`` all come through ``core.measure.measure_image``, so they
agree by construction; an export reuses the table's measurements when they were made from
the same labels with the same calibration (:meth:`MeasuredImage.reusable_for`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.measure import MIN_OBJECT_PX, Calibration, ImageMeasurement, choose_calibration, measure_image
from .labelfile import read_labels

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from ..core.images import ImageData
    from .images import ImageRecord
    from .project import Project

SOURCES = ("auto", "annotation", "result")


@dataclass(frozen=True)
class FoundLabels:
    """The labels that count for an image: where they are, what they are, whose they are.

    ``labels`` reads the label file on first use (a caller that only needs to know *which*
    labels count, such as an export reusing the table's measurements, reads nothing).
    """

    kind: str  # "annotation" | "result"
    origin: str  # "annotation v3" | "result 12": names the exact version
    path: Path
    identity: dict[str, Any] = field(default_factory=dict)  # the model's, for a result
    settings: dict[str, Any] = field(default_factory=dict)  # the run's, for a result

    @cached_property
    def labels(self) -> np.ndarray:
        return read_labels(self.path)

    @property
    def diameter_px(self) -> float:
        """The cell diameter a result was segmented at (typed in, or estimated for the image);
        NaN (an empty cell) for an annotation, which was drawn, not segmented."""
        value = self.settings.get("diameter_px")
        return float(value) if value else math.nan

    @property
    def model(self) -> str:
        """The model that made a result ("encoder + adapter"), "" for an annotation."""
        from ..core.export import model_name

        return model_name(self.identity)


def check_source(source: str) -> None:
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}, not '{source}'")


def find_labels(project: Project, image_id: int, source: str = "auto") -> FoundLabels | None:
    """The labels of ``source`` for an image (see the module docstring), or ``None``."""
    check_source(source)
    if source in ("auto", "annotation"):
        hist = project.annotation_history(image_id)
        if hist:
            return FoundLabels("annotation", f"annotation v{hist[0].version}", hist[0].path)
        if source == "annotation":
            return None
    res = project.latest_result(image_id)
    if res is None:
        return None
    return FoundLabels("result", f"result {res.id}", res.path, dict(res.identity), dict(res.settings))


@dataclass(frozen=True)
class MeasureSettings:
    """What the user chose about measuring (plain values: picklable, comparable).

    ``pixel_size_um`` / ``channel_names`` override every image's own; ``default_pixel_size_um``
    is used only for an image whose record and file give none. Objects smaller than
    ``min_object_px`` pixels are not measured.
    """

    pixel_size_um: float | None = None
    channel_names: tuple[str, ...] = ()
    default_pixel_size_um: float | None = None
    min_object_px: int = MIN_OBJECT_PX

    def calibration(self, n_channels: int, recorded_pixel_size: float | None = None,
                    recorded_channel_names: tuple[str, ...] = (), img: ImageData | None = None) -> Calibration:
        """``core.measure.choose_calibration`` with these choices, an image's record and (when read) its file."""
        return choose_calibration(
            img.n_channels if img is not None else n_channels,
            file_pixel_size=img.pixel_size_um if img is not None else None,
            file_channel_names=img.channel_names if img is not None else (),
            override_pixel_size=self.pixel_size_um, override_channel_names=self.channel_names or None,
            recorded_pixel_size=recorded_pixel_size, recorded_channel_names=recorded_channel_names,
            default_pixel_size=self.default_pixel_size_um, min_object_px=self.min_object_px)


def record_calibration(rec: ImageRecord, settings: MeasureSettings, img: ImageData | None = None) -> Calibration:
    """The calibration of a project image (``img``: its pixels, for the file's own metadata, when read)."""
    return settings.calibration(rec.channels, rec.pixel_size_um, rec.channel_names, img)


@dataclass(frozen=True)
class MeasuredImage:
    """One project image measured: a row per cell, its row of the per-image table, and what it came from.

    ``cells`` has :func:`core.measure.measure_cells`' columns; ``summary`` is
    ``{"set", **summarize_image(...), "labels", "model"}``.
    """

    image_id: int
    cells: pd.DataFrame
    summary: dict[str, Any]
    calibration: Calibration
    origin: str  # FoundLabels.origin of the labels measured
    identity: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, image_id: int, set_name: str, measured: ImageMeasurement, found: FoundLabels) -> MeasuredImage:
        """A measurement of ``found`` (``core.measure.measure_image``'s) as the table and the export show it."""
        summary = {"set": set_name, **measured.summary, "labels": found.origin, "model": found.model,
                   "diameter_px": found.diameter_px}
        return cls(int(image_id), measured.cells, summary, measured.calibration, found.origin, dict(found.identity))

    def reusable_for(self, found: FoundLabels | None, calibration: Calibration) -> bool:
        """Measured from these very labels with the same pixel size, channel names and minimum object size."""
        return (found is not None and found.origin == self.origin
                and calibration.pixel_size_um == self.calibration.pixel_size_um
                and calibration.min_object_px == self.calibration.min_object_px
                and (not calibration.channel_names or calibration.channel_names == self.calibration.channel_names))


def measure_project_image(project: Project, image_id: int, settings: MeasureSettings | None = None, *,
                          found: FoundLabels | None = None, image: ImageData | None = None,
                          source: str = "auto") -> MeasuredImage | None:
    """Measure an image's labels (``found``, else :func:`find_labels` of ``source``); ``None``
    when it has none. ``image``: its pixels when the caller has them already."""
    settings = settings or MeasureSettings()
    found = found or find_labels(project, image_id, source)
    if found is None:
        return None
    rec = project.get_image(image_id)
    img = image if image is not None else project.read_image(image_id)
    measured = measure_image(found.labels, img, record_calibration(rec, settings, img), rec.name)
    return MeasuredImage.of(image_id, rec.set_name, measured, found)
