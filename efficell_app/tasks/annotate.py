"""The "annotate" use case: where an annotation starts from, saving it as a new version, marking it done."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..core.cancel import CancelToken

if TYPE_CHECKING:
    from ..project import Project

START_SOURCES = ("saved", "prediction", "empty", "import")


@dataclass(frozen=True)
class StartingLabels:
    labels: np.ndarray  # (H, W) int32
    source: str  # the source actually used ("saved" falls back to "prediction", that to "empty")
    note: str  # one line for the user


@dataclass(frozen=True)
class AnnotationSaved:
    image_id: int
    version: int
    n_cells: int
    status: str  # the image's status after the save


def starting_labels(project: Project, image_id: int, source: str = "saved",
                    path: str | Path | None = None) -> StartingLabels:
    """The labels an annotation of ``image_id`` starts from: the saved annotation ("saved", else the
    prediction), the latest "prediction" (else empty), "empty", or masks imported from ``path``
    ("import"). Raises an ``EffiCellError`` / ``ValueError`` / ``OSError`` naming a bad mask file."""
    if source not in START_SOURCES:
        raise ValueError(f"an annotation starts from one of {', '.join(START_SOURCES)}, not '{source}'")
    rec = project.get_image(image_id)
    shape = (rec.height, rec.width)
    if source == "import":
        if path is None:
            raise ValueError("choose a mask file to import")
        from ..core.mask_import import import_masks

        labels = import_masks(path, shape)
        return StartingLabels(labels, "import", f"imported {Path(path).name}: {int(labels.max())} cells")
    if source == "saved":
        saved = project.labels_for(image_id, "annotation")
        if saved is not None:
            return StartingLabels(saved.labels, "saved", "continuing the saved annotation")
        source = "prediction"
    if source == "prediction":
        found = project.labels_for(image_id, "result")
        if found is not None:
            return StartingLabels(found.labels, "prediction", "starting from the prediction")
        return StartingLabels(np.zeros(shape, np.int32), "empty", "no prediction for this image yet: starting empty")
    return StartingLabels(np.zeros(shape, np.int32), "empty", "starting empty")


def save_annotation(project: Project, image_id: int, labels: np.ndarray, note: str = "annotation", *,
                    cancel: CancelToken | None = None) -> Iterator[AnnotationSaved]:
    """Write ``labels`` as the image's next annotation version (atomic; the last 10 are kept)."""
    if cancel is not None:
        cancel.raise_if_cancelled()  # before writing: a save is never half done
    v = project.save_annotation(image_id, labels, note)
    yield AnnotationSaved(int(image_id), v.version, v.n_cells, project.get_image(image_id).status)


def mark_annotated(project: Project, image_id: int) -> str:
    """The image's annotation is finished: it goes into the training set ("reviewed"); returns the status."""
    project.set_status(image_id, "reviewed")
    return "reviewed"
