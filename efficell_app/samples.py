"""The first-run sample project: the bundled sample images, ready to segment, measure and train on.

    from efficell_app.samples import create_sample_project, default_sample_project_dir
    root = create_sample_project(default_sample_project_dir())   # then Project.open(root)

The images (``resources/samples/images/``, see the README there for sources and licences)
are copied into the project, grouped into one image set per kind of microscopy. Their human
annotations (``resources/samples/masks/``) are saved as annotations, so the project is also
a worked example of training data: train an adapter on it, or compare the model with them.
With a ``segmenter`` the images are segmented too, so the first window already shows results.
No Qt here; the GUI calls this from a worker (segmenting takes a few seconds on a CPU).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SAMPLE_PROJECT_NAME = "EffiCell sample project"
# file-name prefix -> image set (the README in resources/samples/ describes each image)
SAMPLE_SETS: tuple[tuple[str, str], ...] = (("nuclei_fluo_", "Fluorescent nuclei"), ("cells_phase_", "Phase-contrast cells"))
ANNOTATION_NOTE = "human annotation shipped with the sample (see resources/samples/README.md)"


def default_sample_project_dir() -> Path:
    """Where the first-run sample project goes: ``$EFFICELL_HOME/Sample project`` or the user's data folder."""
    home = os.environ.get("EFFICELL_HOME")
    if home:
        return Path(home).expanduser() / "Sample project"
    import platformdirs

    return Path(platformdirs.user_data_dir("EffiCell", appauthor=False)) / "Sample project"


def sample_images(samples: Path | None = None) -> list[tuple[Path, Path | None, str]]:
    """``(image, annotation or None, set name)`` of every bundled sample image."""
    from .core.resources import samples_dir

    root = Path(samples) if samples is not None else samples_dir()
    out = []
    for img in sorted((root / "images").glob("*.tif")):
        set_name = next((s for prefix, s in SAMPLE_SETS if img.name.startswith(prefix)), "Samples")
        mask = root / "masks" / img.name
        out.append((img, mask if mask.is_file() else None, set_name))
    return out


def create_sample_project(dest: str | Path, segmenter: Any | None = None, annotations: bool = True,
                          samples: Path | None = None, progress: Callable[[str], None] | None = None,
                          diameter: float | None = None) -> Path:
    """Build the sample project in the folder ``dest`` and return its root.

    An existing project at ``dest`` is returned untouched (safe to call on every start).
    ``segmenter``: a loaded :class:`~efficell_app.core.pipeline.Segmenter` to segment the
    images with (None: leave them unsegmented). ``annotations``: also save the human
    annotations. ``samples``: the samples folder (None: the bundled one). ``progress``
    receives one line per step. ``diameter``: cell diameter in pixels for segmenting (None:
    estimated per image, as the GUI does). If anything fails, a folder this call created is removed
    again, so no half-built project is left behind; the error is raised.
    """
    from .core.errors import InputError
    from .core.images import read_mask
    from .project import Project

    dest = Path(dest).expanduser().absolute()
    if Project.is_project(dest):
        log.info("sample project already at %s", dest)
        return dest
    items = sample_images(samples)
    if not items:
        raise InputError(Path(samples) if samples is not None else None, "no sample images found (reinstall EffiCell)")
    created = not dest.exists()
    say = progress or (lambda msg: log.info("%s", msg))
    try:
        with Project.create(dest, name=SAMPLE_PROJECT_NAME) as project:
            for set_name in dict.fromkeys(s for _, _, s in items):
                files = [img for img, _, s in items if s == set_name]
                report = project.add_files(files, set_name, copy=True)
                if report.skipped:
                    path, reason = report.skipped[0]
                    raise InputError(path, reason)
                say(f"added {len(report.added)} image(s) to '{set_name}'")
                if annotations:
                    by_name = {img.name: mask for img, mask, s in items if s == set_name}
                    for image_id in report.added:
                        rec = project.get_image(image_id)
                        mask = by_name.get(rec.path.name)
                        if mask is not None:
                            project.save_annotation(image_id, read_mask(mask, (rec.height, rec.width)), note=ANNOTATION_NOTE)
            if segmenter is not None:
                from .tasks.segment import segment_project

                for event in segment_project(project, segmenter, diameter=diameter):
                    say(f"segmented {event.path.name}: {event.n_cells} cells" if event.ok else f"error: {event.error}")
    except BaseException:
        if created and dest.exists():
            shutil.rmtree(dest, ignore_errors=True)
        raise
    return dest
