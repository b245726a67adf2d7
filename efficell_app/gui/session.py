"""The window's state, apart from any widget: the open project, per-image measurements, runs.

``Session`` owns the :class:`~efficell_app.project.Project`, caches measurement tables, and
runs the background jobs (one segmentation run at a time, plus light helper jobs such as
thumbnails). Panels and the viewer subscribe to its signals; ``main_window`` only wires.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, Signal

from . import jobs
from .settings import Preferences, add_recent_project
from .workers import EtaTracker, Job, WorkerHandle, launch, start_worker

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
    about_to_close = Signal(object)  # the open Project, just before it closes: save what you hold for it
    images_added = Signal(object)  # AddReport
    image_status = Signal(int, str, str)  # image id, status, detail
    thumbnail = Signal(int, object)  # image id, (h, w, 3) uint8
    labels_ready = Signal(int, object)  # image id, labels (H, W) -- a new result
    cells_ready = Signal(int, object)  # image id, DataFrame
    run_started = Signal(int, str)  # total images, description
    run_progress = Signal(int, int, str)  # done, total, text (with ETA)
    run_finished = Signal(str)  # summary
    problem = Signal(str)  # one line naming a file and what is wrong
    message = Signal(str)  # transient status-bar text

    def __init__(self, prefs: Preferences, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.prefs = prefs
        self.project: Project | None = None
        self.cells: dict[int, pd.DataFrame] = {}
        self._run: WorkerHandle | None = None
        self._helpers: list[WorkerHandle] = []
        self._eta: EtaTracker | None = None
        self._run_stats = {"ok": 0, "failed": 0}
        self.pending_segment: list[int] = []
        self.label_colours: dict[int, Any] = {}  # overlay colours computed by the worker, per image

    # ------------------------------------------------------------------ projects
    def create_project(self, folder: str | Path, name: str | None = None) -> Project:
        from ..project import Project

        project = Project.create(folder, name=name)
        self._set_project(project)
        return project

    def open_project(self, folder: str | Path) -> Project:
        from ..project import Project

        project = Project.open(folder)
        self._set_project(project)
        return project

    def _set_project(self, project: Project | None) -> None:
        self.close_project(emit=False)
        self.project = project
        if project is not None:
            add_recent_project(project.root)
        self.project_changed.emit(project)
        if project is not None:
            ids = [r.id for r in project.list_images()]
            self.load_thumbnails(ids)

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
        self.cells.clear()
        self.label_colours.clear()
        if emit:
            self.project_changed.emit(None)

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
                  segment: bool | None = None) -> WorkerHandle:
        """Add dropped files/folders as one set (named after the first folder) in the background."""
        paths = [Path(p) for p in paths]
        project = self.ensure_project()
        if set_name is None:
            first = paths[0]
            set_name = first.name if first.is_dir() else first.parent.name or "images"
        segment = self.prefs.auto_segment if segment is None else segment
        handle = self._helper(jobs.add_folder_job(project, paths, set_name))

        def on_added(ev: Any) -> None:
            if not isinstance(ev, jobs.FolderAdded):
                return
            report = ev.report
            for path, reason in report.skipped:
                self.problem.emit(f"{path}: {reason}")
            self.images_added.emit(report)
            self.load_thumbnails(report.added)
            self.message.emit(report.summary() if hasattr(report, "summary") else f"added {len(report.added)} images")
            if segment and report.added:
                self.segment(report.added, set_name=ev.set_name)

        handle.yielded.connect(on_added)
        launch(handle)
        return handle

    def load_thumbnails(self, image_ids: Sequence[int]) -> None:
        if self.project is None or not image_ids:
            return
        h = self._helper(jobs.thumbnail_job(self.project, list(image_ids)))
        h.yielded.connect(lambda ev: self.thumbnail.emit(ev.image_id, ev.rgb))
        launch(h)

    def _helper(self, job: Job) -> WorkerHandle:
        h = start_worker(job, parent=self, on_event=self._helper_event)
        h.failed.connect(self.problem)
        h.done.connect(lambda: self._helper_done(h))
        self._helpers.append(h)
        return h

    def _helper_event(self, ev: Any) -> None:
        if isinstance(ev, jobs.Status):
            self.message.emit(ev.message)
        elif isinstance(ev, jobs.ImageFailed):
            self.problem.emit(ev.message)
        elif isinstance(ev, jobs.Measured):
            self.cells[ev.image_id] = ev.cells
            self.cells_ready.emit(ev.image_id, ev.cells)

    def _helper_done(self, h: WorkerHandle) -> None:
        h.wait(2000)
        if h in self._helpers:
            self._helpers.remove(h)

    def helpers_running(self) -> bool:
        return bool(self._helpers)

    # ------------------------------------------------------------------ measurements
    def request_cells(self, image_ids: Sequence[int]) -> None:
        """Make sure measurements of these images are (or will be) in ``cells``."""
        if self.project is None:
            return
        todo = [i for i in image_ids if i not in self.cells]
        if todo:
            launch(self._helper(jobs.measure_job(self.project, todo, self.prefs.pixel_size_um or None)))

    def cells_of(self, image_ids: Sequence[int]) -> pd.DataFrame | None:
        frames = [self.cells[i] for i in image_ids if i in self.cells]
        if not frames:
            return None
        if len(frames) == 1:
            return frames[0]
        import pandas as pd

        return pd.concat(frames, ignore_index=True)

    def summary_of(self, image_ids: Sequence[int]) -> pd.DataFrame | None:
        if self.project is None:
            return None
        import pandas as pd

        from ..core.measure import summarize_image

        rows = []
        for i in image_ids:
            df = self.cells.get(i)
            if df is None:
                continue
            rec = self.project.get_image(i)
            names = list(rec.channel_names) or [f"ch{c}" for c in range(rec.channels)]
            px = rec.pixel_size_um or self.prefs.pixel_size_um or None
            row = {"image_id": i, "set": rec.set_name}
            row.update(summarize_image(df, len(df), px, names, rec.name))
            rows.append(row)
        return pd.DataFrame(rows) if rows else None

    # ------------------------------------------------------------------ segmentation runs
    def is_running(self) -> bool:
        return self._run is not None

    def segment(self, image_ids: Sequence[int], options: jobs.SegmentOptions | None = None,
                set_name: str | None = None) -> WorkerHandle | None:
        """Start a run, or queue the images when one is already going."""
        if self.project is None or not image_ids:
            return None
        if self._run is not None:
            self.pending_segment.extend(i for i in image_ids if i not in self.pending_segment)
            self.message.emit(f"{len(image_ids)} image(s) queued after the current run")
            return None
        opts = options or self.segment_options()
        ids = list(dict.fromkeys(image_ids))
        for i in ids:
            self.image_status.emit(i, "queued", "")
        handle = start_worker(jobs.segment_job(self.project, ids, opts, set_name), parent=self,
                              threads=self.prefs.effective_threads(), on_event=self._run_event)
        handle.finished.connect(lambda: self._run_done("finished"))
        handle.cancelled.connect(lambda: self._run_done("cancelled"))
        handle.failed.connect(lambda msg: self._run_done(f"stopped: {msg}"))
        self._run = handle
        self._run_ids = ids
        self._run_stats = {"ok": 0, "failed": 0}
        self._eta = EtaTracker(len(ids))
        self.run_started.emit(len(ids), "Starting…")
        launch(handle)
        return handle

    #: options for the next run; the main window points this at the settings panel
    segment_options_provider: Any = None
    #: encoder weights for runs: "auto" (the installed ones); None = random (tests)
    encoder_weights: str | None = "auto"

    def segment_options(self) -> jobs.SegmentOptions:
        base: dict[str, Any] = self.segment_options_provider() if self.segment_options_provider else {}
        return jobs.SegmentOptions(model=base.get("model"), diameter=base.get("diameter"),
                                   channels=base.get("channels"), device=self.prefs.device,
                                   pixel_size_um=self.prefs.pixel_size_um or None,
                                   encoder_weights=self.encoder_weights)

    def cancel_run(self, wait: bool = False) -> None:
        self.pending_segment.clear()
        if self._run is not None:
            self._run.cancel()
            if wait:
                self._run.wait(60_000)

    def _run_event(self, ev: Any) -> None:
        eta = self._eta
        if isinstance(ev, jobs.Status):
            self.run_progress.emit(0, len(self._run_ids), ev.message)
        elif isinstance(ev, jobs.RunStarted):
            self.message.emit(f"Segmenting {ev.total} image(s) with the {ev.model} model on {ev.device}")
            if eta is not None:
                eta.t0 = time.monotonic()
        elif isinstance(ev, jobs.ImageStarted):
            self.image_status.emit(ev.image_id, "running", "")
            self.run_progress.emit(ev.index, ev.total, f"Segmenting {ev.name} ({ev.index + 1}/{ev.total}) "
                                   + (eta.text() if eta else ""))
        elif isinstance(ev, jobs.ImageSegmented):
            self._run_stats["ok"] += 1
            self.cells[ev.image_id] = ev.cells
            if ev.colours is not None:
                self.label_colours[ev.image_id] = ev.colours
            self.image_status.emit(ev.image_id, "segmented", f"{len(ev.cells)} cells")
            self.labels_ready.emit(ev.image_id, ev.labels)
            self.cells_ready.emit(ev.image_id, ev.cells)
            if eta is not None:
                eta.update(ev.index + 1)
            self.run_progress.emit(ev.index + 1, ev.total, eta.text() if eta else "")
        elif isinstance(ev, jobs.ImageFailed):
            self._run_stats["failed"] += 1
            self.image_status.emit(ev.image_id, "failed", "")
            self.problem.emit(ev.message)
            if eta is not None:
                eta.update(ev.index + 1)
            self.run_progress.emit(ev.index + 1, ev.total, eta.text() if eta else "")

    def _run_done(self, how: str) -> None:
        handle = self._run
        self._run = None
        if handle is not None:
            handle.wait(10_000)
        # images queued but never reached go back to their recorded status
        if self.project is not None:
            for i in self._run_ids:
                try:
                    rec = self.project.get_image(i)
                except KeyError:
                    continue
                if i not in self.cells or how != "finished":
                    detail = f"{len(self.cells[i])} cells" if i in self.cells else ""
                    self.image_status.emit(i, rec.status, detail)
        ok, failed = self._run_stats["ok"], self._run_stats["failed"]
        text = f"Segmentation {how}: {ok} image(s) done" + (f", {failed} failed (see Problems)" if failed else "")
        self.run_finished.emit(text)
        if self.pending_segment and how == "finished":
            todo, self.pending_segment = self.pending_segment, []
            self.segment(todo)

    # ------------------------------------------------------------------ export
    def export_job(self, options: jobs.ExportOptions, image_ids: Sequence[int]) -> Job:
        assert self.project is not None
        return jobs.export_job(self.project, list(image_ids), options)
