"""The "evaluate" use case: how good or how sure a model is.

* :func:`score_folders` scores predicted label images against ground truth (``efficell eval``);
* :func:`rank_uncertainty` ranks a project's images by how unsure the model is ("annotate next");
* :func:`cell_uncertainty` colours the cells of one image by the model's confidence;
* :func:`compare_models` segments one image with two adapters (before / after training).
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.cancel import CancelToken
from ..core.errors import Cancelled, EffiCellError
from .segment import SegmentSettings, cached_segmenter, load_segmenter

if TYPE_CHECKING:
    from ..core.metrics import MatchStats
    from ..core.uncertainty import ImageUncertainty
    from ..project import Project


# ----------------------------------------------------------------------------- masks against ground truth


@dataclass(frozen=True)
class Scored:
    """One ground-truth / prediction pair scored at each IoU threshold."""

    stem: str
    gt: Path
    pred: Path
    scores: dict[float, MatchStats]


@dataclass(frozen=True)
class NotScored:
    """A file left out: no partner, two files for one stem, or unreadable."""

    path: Path
    reason: str


def collect_masks(folder: Path) -> tuple[dict[str, Path], list[tuple[Path, str]]]:
    """Mask files directly in ``folder`` by stem; duplicates of a stem are reported, not guessed."""
    from ..core.pairing import mask_files_by_stem, shared_stems

    found = mask_files_by_stem(folder)
    files = {stem: paths[0] for stem, paths in found.items() if len(paths) == 1}
    return files, list(shared_stems(found))


def score_folders(gt_dir: Path, pred_dir: Path, thresholds: Sequence[float], *,
                  cancel: CancelToken | None = None) -> Generator[Scored | NotScored, None, dict[float, MatchStats] | None]:
    """Pair the label images of two folders by stem and score each pair; returns the pooled
    scores (``None`` when no pair could be scored). Files without a partner and unreadable ones
    are yielded as :class:`NotScored` first / as they come; the rest are still scored."""
    from ..core.errors import InputError
    from ..core.images import read_mask
    from ..core.metrics import match_stats, pool

    gt_files, problems = collect_masks(gt_dir)
    pred_files, pred_problems = collect_masks(pred_dir)
    problems += pred_problems
    problems += [(path, f"no prediction for '{stem}' in {pred_dir}") for stem, path in gt_files.items()
                 if stem not in pred_files]
    problems += [(path, f"no ground truth for '{stem}' in {gt_dir}") for stem, path in pred_files.items()
                 if stem not in gt_files]
    for path, reason in problems:
        yield NotScored(Path(path), reason)
    per_image = []
    for stem in sorted(set(gt_files) & set(pred_files)):
        if cancel is not None:
            cancel.raise_if_cancelled()
        try:
            gt = read_mask(gt_files[stem])
            pred = read_mask(pred_files[stem], shape=gt.shape)
        except InputError as exc:
            yield NotScored(Path(exc.path or gt_files[stem]), exc.reason)
            continue
        scores = match_stats(gt, pred, tuple(thresholds))
        per_image.append(scores)
        yield Scored(stem, gt_files[stem], pred_files[stem], scores)
    return pool(per_image) if per_image else None


# ----------------------------------------------------------------------------- how sure the model is


def rank_uncertainty(project: Project, image_ids: Sequence[int], settings: SegmentSettings, *,
                     cancel: CancelToken | None = None) -> Iterator[ImageUncertainty]:
    """Segment each image and yield its ``ImageUncertainty`` (``key`` = image id; ``error`` set
    for an image that could not be scored)."""
    from ..core.uncertainty import rank_images

    seg = load_segmenter(settings.model, settings.device, settings.encoder_weights)
    loads = [(i, (lambda i=i: project.read_image(i))) for i in image_ids]
    yield from rank_images(seg, loads, settings.diameter, settings.channels, cancel)


@dataclass(frozen=True)
class CellUncertainty:
    image_id: int
    rgba: np.ndarray  # (H, W, 4) uint8: cells from yellow (sure) to red (unsure)


def cell_uncertainty(project: Project, image_id: int, settings: SegmentSettings, *,
                     cancel: CancelToken | None = None) -> Iterator[CellUncertainty]:
    """The model's per-cell confidence on one image, as an overlay (the model stays loaded for the next image)."""
    from ..core.overlay import uncertainty_rgba

    seg = cached_segmenter(settings.model, settings.device, settings.encoder_weights)
    res = seg.segment(project.read_image(image_id), diameter=settings.diameter, channels=settings.channels,
                      cancel=cancel)
    yield CellUncertainty(image_id, uncertainty_rgba(res.labels, res.cell_confidence))


@dataclass(frozen=True)
class Compared:
    side: int  # position in ``models``: 0 = previous, 1 = new
    labels: np.ndarray | None
    text: str


def compare_models(project: Project, image_id: int, models: Sequence[str | None], encoder_weights: str | None = "auto",
                   device: str = "auto", *, cancel: CancelToken | None = None) -> Iterator[Compared]:
    """Segment one image with each model in turn (a model that cannot load is reported, the next goes on)."""
    img = project.read_image(image_id)
    for side, model in enumerate(models):
        if cancel is not None:
            cancel.raise_if_cancelled()
        name = "built-in model" if model is None else Path(model).stem
        try:
            seg = load_segmenter(model, device, encoder_weights)
            res = seg.segment(img, cancel=cancel)
        except Cancelled:
            raise
        except (EffiCellError, ValueError, OSError) as exc:
            yield Compared(side, None, f"{name}: {exc}")
            continue
        ident: dict[str, Any] = seg.identity
        yield Compared(side, res.labels, f"{ident.get('adapter') or name}: {res.n_cells} cells")
