"""The window's state, apart from any widget: the open project, per-image measurements, runs.

``Session`` owns the :class:`~efficell_app.project.Project`, keeps each image's measurements
(``project.measuring.MeasuredImage``: what the table and the plot show, and what an export
reuses), and runs the use cases of :mod:`efficell_app.tasks` in workers (one segmentation run
at a time, plus light helpers such as thumbnails). Panels and the viewer subscribe to its
signals; ``main_window`` only wires.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, Signal

from .. import tasks
from ..core.images import PlaneChoice
from ..core.progress import EtaTracker
from ..project.measuring import MeasuredImage, MeasureSettings
from .settings import Preferences, add_recent_project
from .workers import TaskWorker, start_task

if TYPE_CHECKING:
    import pandas as pd

    from ..project import Project

log = logging.getLogger(__name__)


def default_project_folder() -> Path:
    """A fresh folder for a project created by dropping images on an empty window."""
    home = os.environ.get("EFFICELL_HOME")
    if home:
        base = Path(home) / "projects"
    else:
        import platformdirs

        base = Path(platformdirs.user_documents_dir()) / "EffiCell projects"
    stamp = time.strftime("%Y-%m-%d")
    for i in range(1, 1000):
        cand = base / (f"Project {stamp}" + (f" ({i})" if i > 1 else ""))
        if not cand.exists():
            return cand
    raise RuntimeError(f"no free project folder name under {base}")


class Session(QObject):
    """State and background work of one window."""

    project_changed = Signal(object)  # Project | None
    adapters_changed = Signal(object)  # list[AdapterInfo]: the open project's library, after any change
    labels_changed = Signal(int)  # image id: the labels that count changed (annotation saved); measure again
    about_to_close = Signal(object)  # the open Project, just before it closes: save what you hold for it
    images_added = Signal(object)  # AddReport
    stacks_found = Signal(object, str)  # {file: {"Z": n, "T": m}} skipped for want of a plane choice, set name
    image_status = Signal(int, str, str)  # image id, status, detail
    thumbnail = Signal(int, object)  # image id, (h, w, 3) uint8
    labels_ready = Signal(int, object)  # image id, labels (H, W) -- a new result
    cells_ready = Signal(int, object)  # image id, MeasuredImage
    measuring_done = Signal()  # a batch of measuring ended (images without labels give no cells_ready)
    run_started = Signal(int, str)  # total images, description
    run_progress = Signal(int, int, str)  # done, total, text (with ETA)
    run_within = Signal(int, int, str, float, str)  # index, total, image name, fraction of it done, time left
    _within_reported = Signal(int, int, str, float)  # the same from the worker thread (before the time left)
    run_finished = Signal(str)  # summary
    problem = Signal(str)  # one line naming a file and what is wrong
    message = Signal(str)  # transient status-bar text

    def __init__(self, prefs: Preferences, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.prefs = prefs
        self.project: Project | None = None
        self.measured: dict[int, MeasuredImage] = {}  # what the table shows, per image
        self.measuring: set[int] = set()  # images being measured now (asked once, not again meanwhile)
        self._run: TaskWorker | None = None
        self._run_ids: list[int] = []
        self._helpers: list[TaskWorker] = []
        self._eta: EtaTracker | None = None
        self._run_stats = {"ok": 0, "failed": 0}
        self.pending_segment: list[int] = []
        self.label_colours: dict[int, Any] = {}  # overlay colours computed by the worker, per image
        self._within_reported.connect(self._within_event)  # queued: emitted in the worker thread

    # ------------------------------------------------------------------ projects
    def create_project(self, folder: str | Path, name: str | None = None) -> Project:
        from ..project import Project

        project = Project.create(folder, name=name)
        self._set_project(project)
        return project

    def open_project(self, folder: str | Path) -> Project:
        """Open the project in ``folder``; the one already open here is shown again, read afresh."""
        from ..project import Project

        if self.project is not None and _same_folder(self.project.root, folder):
            self.about_to_close.emit(self.project)  # listeners save what they hold (an annotation being edited)
            self.measured.clear()
            self.measuring.clear()
            self.label_colours.clear()
            self.project_changed.emit(self.project)
            self.reload_adapters()
            self.load_thumbnails([r.id for r in self.project.list_images()])
            return self.project
        project = Project.open(folder)
        self._set_project(project)
        return project

    def _set_project(self, project: Project | None) -> None:
        self.close_project(emit=False)
        self.project = project
        if project is not None:
            add_recent_project(project.root)
        self.project_changed.emit(project)
        self.reload_adapters()
        if project is not None:
            ids = [r.id for r in project.list_images()]
            self.load_thumbnails(ids)

    def reload_adapters(self) -> list[Any]:
        """Read the open project's adapter library again and tell every list that shows it
        (after training, import, rename or delete)."""
        adapters = self.project.list_adapters() if self.project is not None else []
        self.adapters_changed.emit(adapters)
        return adapters

    def close_project(self, emit: bool = True) -> None:
        """Close the open project (also when another one opens): ``about_to_close`` first, so
        listeners save into it, then stop its runs and helpers."""
        if self.project is not None:
            self.about_to_close.emit(self.project)
        self.cancel_run(wait=True)
        for h in list(self._helpers):
            h.cancel()
            h.wait(5000)
        self._helpers.clear()
        if self.project is not None:
            self.project.close()
        self.project = None
        self.measured.clear()
        self.measuring.clear()
        self.label_colours.clear()
        if emit:
            self.project_changed.emit(None)
            self.adapters_changed.emit([])

    def ensure_project(self) -> Project:
        """The open project, or a new one in the default folder (drop on an empty window)."""
        if self.project is None:
            folder = default_project_folder()
            folder.parent.mkdir(parents=True, exist_ok=True)
            self.create_project(folder)
            self.message.emit(f"Created a new project in {folder}")
        assert self.project is not None
        return self.project

    # ------------------------------------------------------------------ adding images
    def add_paths(self, paths: Sequence[str | Path], set_name: str | None = None,
                  segment: bool | None = None, planes: PlaneChoice | None = None) -> TaskWorker:
        """Add dropped files/folders as one set (named after the first folder) in the background.

        z-stacks and time series need a plane choice: without ``planes`` they are not added and
        ``stacks_found`` asks for one (the window shows a dialog, then adds them again with it).
        """
        paths = [Path(p) for p in paths]
        project = self.ensure_project()
        set_name = set_name or tasks.set_name_for(paths)
        segment = self.prefs.auto_segment if segment is None else segment

        def on_added(ev: Any) -> None:
            if not isinstance(ev, tasks.ImagesAdded):
                return
            report = ev.report
            for path, reason in report.problems():  # a stack is no problem yet: the user is asked for a plane
                self.problem.emit(f"{path}: {reason}")
            self.images_added.emit(report)
            self.load_thumbnails(report.added)
            self.message.emit(report.summary())
            if segment and report.added:
                self.segment(report.added, set_name=ev.set_name)
            if report.stacks:
                self.stacks_found.emit(dict(report.stacks), ev.set_name)

        return self._helper(tasks.add_images, project, paths, set_name, planes=planes, on_event=on_added)

    def load_thumbnails(self, image_ids: Sequence[int]) -> None:
        if self.project is None or not image_ids:
            return
        self._helper(tasks.thumbnails, self.project, list(image_ids),
                     on_event=lambda ev: self.thumbnail.emit(ev.image_id, ev.rgb))

    def _helper(self, task: Any, *args: Any, on_event: Any = None, on_done: Any = None, **kwargs: Any) -> TaskWorker:
        """Run a light use case; its status lines, failures and measurements reach the window."""
        def event(ev: Any) -> None:
            self._helper_event(ev)
            if on_event is not None:
                on_event(ev)

        def done() -> None:
            self._helper_done(holder[0])
            if on_done is not None:
                on_done()

        holder: list[TaskWorker] = []
        w = start_task(task, *args, on_event=event, on_error=lambda exc: self.problem.emit(tasks.describe_error(exc)),
                       on_finished=done, **kwargs)
        holder.append(w)
        self._helpers.append(w)
        return w

    def _helper_event(self, ev: Any) -> None:
        if isinstance(ev, tasks.Status):
            self.message.emit(ev.message)
        elif isinstance(ev, tasks.ImageFailed):
            self.problem.emit(ev.message)
        elif isinstance(ev, MeasuredImage):
            found = self.project.labels_for(ev.image_id) if self.project is not None else None
            if found is None or found.origin != ev.origin or ev.calibration.min_object_px != self.prefs.min_object_px:
                return  # measured just before an annotation was saved (or the settings changed): measured again
            self.measured[ev.image_id] = ev
            self.cells_ready.emit(ev.image_id, ev)

    def _helper_done(self, w: TaskWorker) -> None:
        if w in self._helpers:
            self._helpers.remove(w)

    def helpers_running(self) -> bool:
        return bool(self._helpers)

    # ------------------------------------------------------------------ measurements
    def measure_settings(self) -> MeasureSettings:
        """How the window measures: each image's own pixel size, else the default of the preferences;
        objects smaller than the preferences' minimum are left out."""
        return MeasureSettings(default_pixel_size_um=self.prefs.pixel_size_um or None,
                               min_object_px=self.prefs.min_object_px)

    def set_preferences(self, prefs: Preferences) -> None:
        """New preferences; measurements made with another minimum object size or default pixel size
        are dropped (measured again when shown)."""
        old = self.measure_settings()
        self.prefs.__dict__.update(prefs.__dict__)
        if self.measure_settings() != old:
            self.measured.clear()
            self.measuring.clear()

    def forget_measurements(self, image_id: int) -> None:
        """The image's labels changed (annotation saved, image removed): measure again when asked."""
        self.measured.pop(image_id, None)
        self.measuring.discard(image_id)  # a measurement in flight is of the old labels

    def status_changed(self, image_id: int, status: str) -> None:
        """Show an image's new status with the cell count the table shows (when measured)."""
        m = self.measured.get(image_id)
        self.image_status.emit(int(image_id), status, cells_text(len(m.cells)) if m is not None else "")

    def annotation_saved(self, image_id: int) -> None:
        """A new annotation version now counts for this image: what the table showed is stale."""
        self.forget_measurements(image_id)
        self.labels_changed.emit(int(image_id))

    def request_cells(self, image_ids: Sequence[int]) -> None:
        """Make sure measurements of these images are (or will be) in ``measured``."""
        if self.project is None:
            return
        todo = [i for i in image_ids if i not in self.measured and i not in self.measuring]
        if todo:
            self.measuring.update(todo)
            self._helper(tasks.measure_images, self.project, todo, self.measure_settings(),
                         on_done=lambda: (self.measuring.difference_update(todo), self.measuring_done.emit()))

    def pending(self, image_ids: Sequence[int]) -> int:
        """How many of these images are being measured now (the table says so meanwhile)."""
        return sum(1 for i in image_ids if i in self.measuring and i not in self.measured)

    def cells_of(self, image_ids: Sequence[int]) -> pd.DataFrame | None:
        """The per-cell table of these images, as shown (an ``image_id`` column first)."""
        frames = [_with_image_id(self.measured[i].cells, i) for i in image_ids if i in self.measured]
        if not frames:
            return None
        if len(frames) == 1:
            return frames[0]
        import pandas as pd

        return pd.concat(frames, ignore_index=True)

    def summary_of(self, image_ids: Sequence[int]) -> pd.DataFrame | None:
        """One row per image, as shown (the export's per-image sheet holds the same rows)."""
        rows = [{"image_id": i, **self.measured[i].summary} for i in image_ids if i in self.measured]
        if not rows:
            return None
        import pandas as pd

        return pd.DataFrame(rows)

    # ------------------------------------------------------------------ segmentation runs
    def is_running(self) -> bool:
        return self._run is not None

    def segment(self, image_ids: Sequence[int], options: tasks.SegmentSettings | None = None,
                set_name: str | None = None) -> TaskWorker | None:
        """Start a run, or queue the images when one is already going."""
        if self.project is None or not image_ids:
            return None
        if self._run is not None:
            self.pending_segment.extend(i for i in image_ids if i not in self.pending_segment)
            self.message.emit(f"{len(image_ids)} image(s) queued after the current run")
            return None
        settings = options or self.segment_options()
        ids = list(dict.fromkeys(image_ids))
        for i in ids:
            self.image_status.emit(i, "queued", "")
        self._run_ids = ids
        self._run_stats = {"ok": 0, "failed": 0}
        self._eta = EtaTracker(len(ids))
        self.run_started.emit(len(ids), "Starting…")
        use_case, where = tasks.segment_images, {"progress": WithinImageSignal(self._within_reported)}
        if self.prefs.run_on:  # Settings > Run on: a Dask cluster (the same events; no progress within an image)
            use_case, where = tasks.segment_images_on_cluster, {"cluster": self.prefs.run_on}
        self._run = start_task(use_case, self.project, ids, settings, set_name=set_name, with_colours=True, **where,
                               threads=self.prefs.effective_threads(), on_event=self._run_event,
                               on_returned=lambda _v: self._run_done("finished"),
                               on_aborted=lambda: self._run_done("cancelled"),
                               on_error=lambda exc: self._run_done(f"stopped: {tasks.describe_error(exc)}"))
        return self._run

    #: options for the next run; the main window points this at the settings panel
    segment_options_provider: Any = None
    #: encoder weights for runs: "auto" (the installed ones); None = random (tests)
    encoder_weights: str | None = "auto"

    def segment_options(self) -> tasks.SegmentSettings:
        base: dict[str, Any] = self.segment_options_provider() if self.segment_options_provider else {}
        return tasks.SegmentSettings(model=base.get("model"), diameter=base.get("diameter"),
                                     channels=base.get("channels"), device=self.prefs.device,
                                     encoder_weights=self.encoder_weights, measure=self.measure_settings())

    def cancel_run(self, wait: bool = False) -> None:
        self.pending_segment.clear()
        if self._run is not None:
            self._run.cancel()
            if wait:
                self._run.wait(60_000)

    def _within_event(self, index: int, total: int, name: str, fraction: float) -> None:
        """Progress within an image: the time left counts the part of it done (one long image has one too)."""
        eta = self._eta
        if eta is not None and 0.0 < fraction < 1.0:
            eta.update(index - 1 + fraction)
        self.run_within.emit(index, total, name, fraction, eta.text() if eta is not None else "")

    def _run_event(self, ev: Any) -> None:
        eta = self._eta
        if isinstance(ev, tasks.Status):
            self.run_progress.emit(0, len(self._run_ids), ev.message)
        elif isinstance(ev, tasks.RunStarted):
            self.message.emit(f"Segmenting {ev.total} image(s) with the {ev.model} model on {ev.device}")
            if eta is not None:
                eta.t0 = time.monotonic()
        elif isinstance(ev, tasks.ImageStarted):
            self.image_status.emit(ev.image_id, "running", "")
            self.run_progress.emit(ev.index - 1, ev.total, f"Segmenting {ev.name} ({ev.index}/{ev.total}) "
                                   + (eta.text() if eta else ""))
        elif isinstance(ev, tasks.ImageSegmented):
            self._run_stats["ok"] += 1
            if ev.measured is not None:
                self.measured[ev.image_id] = ev.measured
            else:
                self.measured.pop(ev.image_id, None)  # measured again when shown
            self.image_status.emit(ev.image_id, ev.status, cells_text(ev.counted_cells))
            if not ev.annotation_kept:  # the annotation stays what the viewer shows and what counts
                if ev.colours is not None:
                    self.label_colours[ev.image_id] = ev.colours
                self.labels_ready.emit(ev.image_id, ev.labels)
            if ev.measured is not None:
                self.cells_ready.emit(ev.image_id, ev.measured)
            if eta is not None:
                eta.update(ev.index)
            self.run_progress.emit(ev.index, ev.total, eta.text() if eta else "")
        elif isinstance(ev, tasks.ImageFailed):
            self._run_stats["failed"] += 1
            self.image_status.emit(ev.image_id, "failed", "")
            self.problem.emit(ev.message)
            if eta is not None:
                eta.update(ev.index)
            self.run_progress.emit(ev.index, ev.total, eta.text() if eta else "")

    def _run_done(self, how: str) -> None:
        self._run = None
        # images queued but never reached go back to their recorded status
        if self.project is not None:
            for i in self._run_ids:
                try:
                    rec = self.project.get_image(i)
                except KeyError:
                    continue
                if i not in self.measured or how != "finished":
                    m = self.measured.get(i)
                    self.image_status.emit(i, rec.status, cells_text(len(m.cells)) if m is not None else "")
        ok, failed = self._run_stats["ok"], self._run_stats["failed"]
        text = f"Segmentation {how}: {ok} image(s) done" + (f", {failed} failed (see Problems)" if failed else "")
        self.run_finished.emit(text)
        if self.pending_segment and how == "finished":
            todo, self.pending_segment = self.pending_segment, []
            self.segment(todo)

    # ------------------------------------------------------------------ export
    def export_task(self, options: tasks.ExportOptions, image_ids: Sequence[int]) -> tuple[Any, ...]:
        """The export use case and its arguments for ``options``: reuses what the table shows."""
        assert self.project is not None
        from dataclasses import replace

        measure = self.measure_settings()
        opts = replace(options, default_pixel_size_um=options.default_pixel_size_um or measure.default_pixel_size_um,
                       min_object_px=measure.min_object_px)
        return tasks.export_images, self.project, list(image_ids), opts, dict(self.measured)


class WithinImageSignal:
    """A run's ``progress(index, total, name, fraction)`` (called in the worker thread) as ``signal``:
    a large slide takes minutes, so the window says how far it is. Emitted at most every 0.2 s and
    for every whole percent, so the queue to the window stays short."""

    def __init__(self, signal: Any, every_s: float = 0.2) -> None:
        self.signal, self.every_s = signal, every_s
        self._last: tuple[int, int] = (0, -1)  # (index, percent) last emitted
        self._at = 0.0

    def __call__(self, index: int, total: int, name: str, fraction: float) -> None:
        percent = int(100 * min(max(fraction, 0.0), 1.0))
        now = time.monotonic()
        if (index, percent) == self._last or (index == self._last[0] and now - self._at < self.every_s):
            return
        self._last, self._at = (index, percent), now
        self.signal.emit(index, total, name, percent / 100)


def cells_text(n: int) -> str:
    """An image's cell count as the project panel shows it (the rows of the table)."""
    return f"{n} cell{'s' if n != 1 else ''}"


def _same_folder(a: str | Path, b: str | Path) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def _with_image_id(cells: pd.DataFrame, image_id: int) -> pd.DataFrame:
    import numpy as np

    df = cells.copy()
    df.insert(0, "image_id", np.full(len(df), int(image_id), dtype=np.int64))
    return df

