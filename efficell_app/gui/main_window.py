"""The main window: builds the panels, menus and status bar, and wires them to the session.

Wiring only: state and background work live in :class:`~efficell_app.gui.session.Session`,
drawing in the viewer and panels, annotation in :class:`~efficell_app.gui.annotation.AnnotationTools`,
long work in the use cases of :mod:`efficell_app.tasks`.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from PySide6.QtCore import QByteArray, Qt, QTimer, Signal
from PySide6.QtGui import (
    QAction,
    QCloseEvent,
    QDragEnterEvent,
    QDropEvent,
    QKeySequence,
)
from PySide6.QtWidgets import (
    QDockWidget,
    QFileDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QWidget,
)

from .. import __version__, tasks
from ..core.device import quick_device_text
from ..core.errors import EffiCellError
from .annotation import AnnotationTools
from .dialogs.welcome_dialog import SampleProjectMaker
from .panels.measurements_panel import MeasurementsPanel
from .panels.problems_panel import ProblemsPanel
from .panels.project_panel import ProjectPanel
from .panels.settings_panel import SegmentationPanel
from .session import Session, cells_text, default_project_folder
from .screen import fit_to_screen
from .settings import Preferences, apply_environment, qsettings, recent_projects
from .viewer import ImageViewer
from .workers import TaskWorker, start_task, stop_all

log = logging.getLogger(__name__)
SUMMARY_TAB = 2  # index of "Per image" in the measurements panel


class MainWindow(QMainWindow):
    """EffiCell's window. ``session`` holds the project; widgets only show and forward."""

    closed = Signal()  # after the window closed and its background work stopped

    def __init__(self, prefs: Preferences | None = None, restore_state: bool = True) -> None:
        super().__init__()
        # Hand the GIL back to the GUI thread quickly while a worker computes (default 5 ms):
        # keeps the window fluid when torch/numpy in the worker run many short Python steps.
        sys.setswitchinterval(0.001)
        self.setWindowTitle("EffiCell")
        self.setAcceptDrops(True)
        self.prefs = prefs or Preferences.load()
        self.session = Session(self.prefs, self)
        self.current_image: int | None = None
        self._refresh_pending = False
        self._summary_ids: list[int] = []
        self._gpus: tuple[str, ...] = ()
        self._device_worker: TaskWorker | None = None
        self.selftest_dialog: Any = None
        self.planes_dialog: Any = None

        self.viewer = ImageViewer()
        self.setCentralWidget(self.viewer)
        self.project_panel = ProjectPanel()
        self.seg_panel = SegmentationPanel()
        self.seg_panel.auto_segment.setChecked(self.prefs.auto_segment)
        self.measurements = MeasurementsPanel()
        self.problems = ProblemsPanel(lambda: self.session.project)
        self.docks: dict[str, QDockWidget] = {}
        self._dock("Project", self.project_panel, Qt.DockWidgetArea.LeftDockWidgetArea)
        self._dock("Segmentation", self.seg_panel, Qt.DockWidgetArea.RightDockWidgetArea)
        self._dock("Measurements", self.measurements, Qt.DockWidgetArea.BottomDockWidgetArea)
        self._dock("Problems", self.problems, Qt.DockWidgetArea.BottomDockWidgetArea)
        self.tabifyDockWidget(self.docks["Measurements"], self.docks["Problems"])
        self.docks["Measurements"].raise_()
        # side panels run the full height; the table sits under the image only
        self.setCorner(Qt.Corner.BottomLeftCorner, Qt.DockWidgetArea.LeftDockWidgetArea)
        self.setCorner(Qt.Corner.BottomRightCorner, Qt.DockWidgetArea.RightDockWidgetArea)

        self.annotation = AnnotationTools(self.viewer, self.session, lambda: self.current_image, parent=self)
        self._dock("Annotate", self.annotation.panel, Qt.DockWidgetArea.RightDockWidgetArea)
        self._dock("Adapters", self.annotation.adapters_panel, Qt.DockWidgetArea.LeftDockWidgetArea)
        self.splitDockWidget(self.docks["Project"], self.docks["Adapters"], Qt.Orientation.Vertical)
        self.samples = SampleProjectMaker(self)

        self._build_status_bar()
        self._build_menus()
        self._wire()
        fit_to_screen(self, 1400, 900)
        self.resizeDocks([self.docks["Project"], self.docks["Segmentation"]], [300, 290], Qt.Orientation.Horizontal)
        self.resizeDocks([self.docks["Measurements"]], [270], Qt.Orientation.Vertical)
        # Tabified once the window is up: tabifying before show() leaves a stray tab bar (Qt 6.11 offscreen).
        # Until then the Annotate dock is hidden: stacked under the Segmentation dock it would make
        # the window taller than its default size when it first shows.
        self.docks["Annotate"].hide()
        self._show_annotate = True
        QTimer.singleShot(0, self._tabify_annotation)
        if restore_state:
            self._restore_state()
        QTimer.singleShot(0, self._detect_device)
        self.welcome_dialog: Any = None
        QTimer.singleShot(0, self.show_welcome_if_first_run)

    # ------------------------------------------------------------------ construction
    def _dock(self, title: str, widget: QWidget, area: Qt.DockWidgetArea) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(f"dock_{title.lower()}")
        dock.setWidget(widget)
        self.addDockWidget(area, dock)
        self.docks[title] = dock
        return dock

    def _tabify_annotation(self) -> None:
        self.tabifyDockWidget(self.docks["Segmentation"], self.docks["Annotate"])
        if self._show_annotate:
            self.docks["Annotate"].show()
        self.docks["Segmentation"].raise_()
        self.resizeDocks([self.docks["Project"], self.docks["Adapters"]], [3, 1], Qt.Orientation.Vertical)

    def _build_status_bar(self) -> None:
        sb = self.statusBar()
        self.progress = QProgressBar()
        self.progress.setFixedWidth(220)
        self.progress.setVisible(False)
        self.progress_text = QLabel("")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the running segmentation (results so far are kept)")
        self.cancel_button.setVisible(False)
        self.cancel_button.clicked.connect(lambda: self.session.cancel_run())
        # Filled at once (no torch import); the background check below has the last word.
        self.device_label = QLabel(quick_device_text(self.prefs.device, self.prefs.effective_threads()))
        self.device_label.setToolTip("Where segmentation runs (change in Tools > Settings)")
        sb.addPermanentWidget(self.progress_text)
        sb.addPermanentWidget(self.progress)
        sb.addPermanentWidget(self.cancel_button)
        sb.addPermanentWidget(self.device_label)

    def add_menu_action(self, menu: Any, text: str, slot: Any, shortcut: Any = None, tip: str = "") -> QAction:
        """An action of this window in ``menu`` (shortcut and status tip optional), calling ``slot``."""
        act = QAction(text, self)
        if shortcut is not None:
            act.setShortcut(QKeySequence(shortcut))
        if tip:
            act.setStatusTip(tip)
        # triggered(bool) would pass its "checked" flag as the slot's first argument (a path, a scope...)
        act.triggered.connect(lambda _checked=False: slot())
        menu.addAction(act)
        return act

    def _build_menus(self) -> None:
        mb = self.menuBar()
        f = mb.addMenu("&File")
        self.add_menu_action(f, "&New project…", self.new_project, QKeySequence.StandardKey.New)
        self.add_menu_action(f, "&Open project…", self.open_project_dialog, QKeySequence.StandardKey.Open)
        self.recent_menu = f.addMenu("Open &recent")
        self.recent_menu.aboutToShow.connect(self._fill_recent)
        f.addSeparator()
        self.add_menu_action(f, "Add &folder…", self.add_folder_dialog, "Ctrl+Shift+A",
                     "Add a folder of images as a new image set")
        self.add_menu_action(f, "&Add images…", self.add_files_dialog, "Ctrl+I")
        self.add_menu_action(f, "Find &moved images…", self.find_moved_images, tip="Images whose files were moved or "
                             "renamed: look for them in a folder and keep their results and annotations")
        f.addSeparator()
        self.export_action = self.add_menu_action(f, "&Export…", self.open_export_dialog, "Ctrl+E")
        f.addSeparator()
        self.add_menu_action(f, "&Quit", self.quit, QKeySequence.StandardKey.Quit)
        s = mb.addMenu("&Segment")
        self.add_menu_action(s, "Segment this &image", lambda: self.segment_scope("image"), "Ctrl+R")
        self.add_menu_action(s, "Segment &selected images", lambda: self.segment_scope("selection"))
        self.add_menu_action(s, "Segment current s&et", lambda: self.segment_scope("set"))
        self.add_menu_action(s, "Segment &all images", lambda: self.segment_scope("project"))
        s.addSeparator()
        self.add_menu_action(s, "&Cancel the run…", self.confirm_cancel_run, "Esc",
                             "Stop the running segmentation (asks first; results so far are kept)")
        v = mb.addMenu("&View")
        for dock in self.docks.values():
            v.addAction(dock.toggleViewAction())
        self.add_menu_action(v, "Zoom to &fit", self.viewer.fit, "Ctrl+0")
        t = mb.addMenu("&Tools")
        self.add_menu_action(t, "&Models…", self.open_models_dialog)
        self.add_menu_action(t, "&Settings…", self.open_settings_dialog, QKeySequence.StandardKey.Preferences)
        a = mb.addMenu("&Annotate")
        self.annotation.fill_menu(a)
        a.addAction(self.docks["Annotate"].toggleViewAction())
        a.addAction(self.docks["Adapters"].toggleViewAction())
        h = mb.addMenu("&Help")
        self.add_menu_action(h, "Open &sample project", self.open_sample_project,
                             tip="Example images with annotations, segmented by the built-in model")
        self.add_menu_action(h, "Self-&test…", self.open_selftest_dialog,
                             tip="Check this installation: load the model, segment a sample, show the device found")
        h.addSeparator()
        self.add_menu_action(h, "&About EffiCell", self._about)

    def _wire(self) -> None:
        s = self.session
        s.segment_options_provider = self.seg_panel.options
        s.project_changed.connect(self._project_changed)
        s.adapters_changed.connect(self.seg_panel.set_adapters)
        s.labels_changed.connect(self._labels_changed)
        s.measuring_done.connect(self._schedule_refresh)
        s.images_added.connect(self._images_added)
        s.stacks_found.connect(self.ask_planes)
        s.image_status.connect(self.project_panel.set_status)
        s.thumbnail.connect(self.project_panel.set_thumbnail)
        s.labels_ready.connect(self._labels_ready)
        s.cells_ready.connect(self._cells_ready)
        s.run_started.connect(self._run_started)
        s.run_progress.connect(self._run_progress)
        s.run_within.connect(self._run_within)
        s.run_finished.connect(self._run_finished)
        s.problem.connect(self.show_problem)
        s.message.connect(lambda m: self.statusBar().showMessage(m, 8000))
        ann = self.annotation
        ann.message.connect(lambda m: self.statusBar().showMessage(m, 6000))
        ann.panel_wanted.connect(lambda: (self.docks["Annotate"].show(), self.docks["Annotate"].raise_()))
        ann.segment_with.connect(self._segment_with)
        ann.image_requested.connect(self._show_requested)
        self.problems.count_changed.connect(
            lambda n: self.docks["Problems"].setWindowTitle(f"Problems ({n})" if n else "Problems"))
        self.samples.ready.connect(self._sample_ready)
        self.samples.message.connect(lambda m: self.statusBar().showMessage(m, 15000))
        self.samples.problem.connect(self.show_problem)
        self.project_panel.image_activated.connect(self.show_image)
        self.project_panel.segment_requested.connect(self.segment_scope)
        self.project_panel.remove_requested.connect(self._remove_images)
        self.seg_panel.segment_requested.connect(self.segment_scope)
        self.seg_panel.auto_segment.toggled.connect(self._auto_segment_toggled)
        self.viewer.cell_clicked.connect(self._cell_clicked_in_viewer)
        self.viewer.describe_cell = self._describe_cell
        self.measurements.cell_selected.connect(self._cell_selected_in_table)
        self.measurements.scope_changed.connect(lambda _s: self._refresh_measurements())
        self.measurements.tabs.currentChanged.connect(lambda _i: self._refresh_summary())

    # ------------------------------------------------------------------ projects
    def new_project(self) -> Any:
        """File → New project: ask for a name and a place (a new folder is created); returns the dialog."""
        from .dialogs.new_project_dialog import NewProjectDialog

        dlg = NewProjectDialog(default_project_folder(), self)
        dlg.accepted.connect(lambda: self._guard(lambda: self.session.create_project(dlg.folder())))
        dlg.open()
        return dlg

    def open_project_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open project folder")
        if folder:
            self.open_project(folder)

    def open_project(self, folder: str | Path) -> bool:
        return self._guard(lambda: self.session.open_project(folder))

    def reopen_last_project(self) -> bool:
        """At start (no folder given): open the project used last. One that is gone or open
        elsewhere is left closed, with a word in the status bar rather than a dialog."""
        from ..project import Project

        items = recent_projects()
        if not items or not Project.is_project(items[0]):
            return False
        try:
            self.session.open_project(items[0])
        except EffiCellError as exc:
            self.statusBar().showMessage(f"The last project was not reopened: {exc}", 15000)
            return False
        self.statusBar().showMessage(f"Reopened {items[0]}", 8000)
        return True

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        items = recent_projects()
        if not items:
            self.recent_menu.addAction("(none)").setEnabled(False)
        for p in items:
            self.recent_menu.addAction(p, lambda p=p: self.open_project(p))

    def _project_changed(self, project: Any) -> None:
        self.current_image = None
        self.viewer.clear()
        self.measurements.set_cells(None)
        self.measurements.set_summary(None)
        self.project_panel.set_project(project)
        self.setWindowTitle(f"{project.name} — EffiCell" if project is not None else "EffiCell")
        self.problems.show_project(project)
        if project is not None and self.welcome_dialog is not None and self.welcome_dialog.isVisible():
            self.welcome_dialog.close()  # its job is done: it stayed over the image while the run went on
        if project is not None:
            first = next(iter(self.project_panel.image_ids()), None)
            if first is not None:
                self.project_panel.select_image(first)
                self.show_image(first)

    # ------------------------------------------------------------------ adding images
    def add_folder_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add a folder of images")
        if folder:
            self.add_paths([folder])

    def add_files_dialog(self) -> None:
        from ..core.images import IMAGE_FILE_FILTER

        files, _ = QFileDialog.getOpenFileNames(self, "Add images", "", IMAGE_FILE_FILTER)
        if files:
            self.add_paths(files)

    def find_moved_images(self, folder: str | Path | None = None) -> Any:
        """File > Find moved images…: the project's missing images looked for under a folder the user
        chooses (same name, size and content: ``Project.find_missing``); what is still missing is listed."""
        project = self.session.project
        if project is None:
            self.statusBar().showMessage("Open a project first", 5000)
            return None
        missing = project.missing_images()
        if not missing:
            self.statusBar().showMessage("No image of this project is missing", 5000)
            return None
        if folder is None:
            folder = QFileDialog.getExistingDirectory(
                self, f"Where are the {len(missing)} missing image(s) now? (e.g. {missing[0].path.name})")
            if not folder:
                return None
        found: list[Any] = []
        if not self._guard(lambda: found.append(project.find_missing(folder))):
            return None
        report = found[0]
        self.session.open_project(project.root)  # the panel, thumbnails and table read afresh
        for _, path in report.still_missing:
            self.show_problem(f"{path}: still missing (not found under {folder})")
        for _, candidate, why in report.mismatched:
            self.show_problem(f"{candidate}: not relinked: {why}")
        left = len(report.still_missing) + len(report.mismatched)
        self.statusBar().showMessage(f"{len(report.relinked)} image(s) found again and relinked"
                                     + (f"; {left} still missing (see Problems)" if left else ""), 10_000)
        return report

    def add_paths(self, paths: list[str | Path]) -> None:
        self._guard(lambda: self.session.add_paths(paths, segment=self.seg_panel.auto_segment.isChecked()))

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if event.mimeData().hasUrls() and any(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event: QDropEvent) -> None:
        paths = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if not paths:
            event.ignore()
            return
        event.acceptProposedAction()
        self.add_paths(paths)

    def _images_added(self, report: Any) -> None:
        project = self.session.project
        if project is None:
            return
        for rec in project.list_images(report.set_name):
            self.project_panel.add_image(rec)
        self.project_panel.tree.expandAll()
        if self.current_image is None and report.added:
            self.project_panel.select_image(report.added[0])
            self.show_image(report.added[0])

    def ask_planes(self, stacks: dict[Path, dict[str, int]], set_name: str) -> Any:
        """z-stacks / time series were not added: ask which plane to use, then add them with it
        (or list them under Problems when the user leaves them out). Returns the dialog."""
        from .dialogs.planes_dialog import PlanesDialog, describe_stack

        dlg = self.planes_dialog = PlanesDialog(stacks, self)

        def add() -> None:
            self._guard(lambda: self.session.add_paths(sorted(stacks), set_name=set_name,
                                                       segment=self.seg_panel.auto_segment.isChecked(),
                                                       planes=dlg.choice()))

        def leave_out() -> None:
            for path, sizes in sorted(stacks.items()):
                self.show_problem(f"{describe_stack(path, sizes)}: not added (add the file again to choose a plane)")

        dlg.accepted.connect(add)
        dlg.rejected.connect(leave_out)
        dlg.open()
        return dlg

    def _remove_images(self, ids: list[int]) -> None:
        project = self.session.project
        if project is None or not ids:
            return
        if QMessageBox.question(self, "Remove images", f"Remove {len(ids)} image(s) from the project? "
                                "The files themselves are not deleted.") != QMessageBox.StandardButton.Yes:
            return
        for i in ids:
            self._guard(lambda i=i: project.remove_image(i))
            self.project_panel.remove_image(i)
            self.session.forget_measurements(i)
        if self.current_image in ids:
            self.current_image = None
            self.viewer.clear()

    # ------------------------------------------------------------------ viewing
    def show_image(self, image_id: int) -> None:
        """Load an image (and its labels) into the viewer."""
        project = self.session.project
        if project is None:
            return
        try:
            img = project.read_image(image_id)
        except EffiCellError as exc:
            self.show_problem(str(exc))
            return
        self.current_image = image_id
        self.viewer.set_image(img.data, img.channel_names, img.rgb)
        self.seg_panel.set_channel_names(img.channel_names)
        found = project.labels_for(image_id)
        self.viewer.set_labels(found.labels if found else None)
        if found is not None:
            self.session.request_cells([image_id])
        self._refresh_measurements()

    def _labels_ready(self, image_id: int, labels: Any) -> None:
        if self.current_image is None:
            self.project_panel.select_image(image_id)
            self.show_image(image_id)
        elif image_id == self.current_image:
            self.viewer.set_labels(labels, self.session.label_colours.get(image_id))

    def _cells_ready(self, image_id: int, measured: Any) -> None:
        self.project_panel.set_detail(image_id, cells_text(len(measured.cells)))
        if image_id in self._scope_ids():
            self._schedule_refresh()

    def _labels_changed(self, image_id: int) -> None:
        """A new annotation version counts now: measure it again if the table shows it."""
        if image_id in self._scope_ids():
            self.session.request_cells([image_id])
            self._schedule_refresh()

    def _schedule_refresh(self) -> None:
        """Refresh the table on the next turn of the event loop (coalesced; lets timers and paints in)."""
        if not self._refresh_pending:
            self._refresh_pending = True
            QTimer.singleShot(0, self._refresh_measurements)

    def _scope_ids(self) -> list[int]:
        if self.measurements.current_scope() == "set":
            name = self.project_panel.current_set()
            return self.project_panel.images_in_set(name) if name else []
        return [] if self.current_image is None else [self.current_image]

    def _refresh_measurements(self) -> None:
        self._refresh_pending = False
        ids = self._scope_ids()
        if self.measurements.current_scope() == "set":
            self.session.request_cells(ids)
        self.measurements.set_cells(self.session.cells_of(ids), self.session.pending(ids))
        self._summary_ids = ids
        if self.measurements.tabs.currentIndex() == SUMMARY_TAB:
            self._refresh_summary()

    def _refresh_summary(self) -> None:
        """The per-image table is computed only when it is shown (pandas work on the GUI thread)."""
        if self.measurements.tabs.currentIndex() == SUMMARY_TAB:
            self.measurements.set_summary(self.session.summary_of(self._summary_ids))
        sel = self.viewer.selected_cell()
        if sel:
            self.measurements.select_cell(sel, self.current_image)

    def _describe_cell(self, label: int) -> str:
        measured = self.session.measured.get(self.current_image) if self.current_image is not None else None
        if measured is None:
            return ""
        df = measured.cells
        rows = df.index[df["cell_id"].to_numpy() == label]
        if len(rows) == 0:
            small = measured.calibration.min_object_px
            return f"not in the table (smaller than {small} px, or not measured yet)" if small else ""
        row = df.loc[rows[0]]
        parts = []
        for col in df.columns:
            if col.startswith("area_") or col in ("circularity",) or col.endswith("_mean"):
                parts.append(f"{col} {float(row[col]):.4g}")
        return "   ".join(parts[:4])

    def _cell_clicked_in_viewer(self, label: int) -> None:
        self.measurements.select_cell(label, self.current_image)

    def _cell_selected_in_table(self, image_id: int, label: int) -> None:
        if image_id >= 0 and image_id != self.current_image:
            self.project_panel.select_image(image_id)
            self.show_image(image_id)
        self.viewer.select_cell(label, center=True)

    # ------------------------------------------------------------------ segmentation
    def segment_scope(self, scope: str) -> None:
        project = self.session.project
        if project is None:
            self.statusBar().showMessage("Open a project or drop a folder of images first", 5000)
            return
        set_name = None
        if scope == "image":
            ids = [] if self.current_image is None else [self.current_image]
        elif scope == "selection":
            ids = self.project_panel.selected_images()
        elif scope == "set":
            set_name = self.project_panel.current_set()
            ids = self.project_panel.images_in_set(set_name) if set_name else []
        else:
            ids = self.project_panel.image_ids()
        if self.seg_panel.only_new.isChecked():
            ids = [i for i in ids if project.get_image(i).status == "new"]
        if not ids:
            self.statusBar().showMessage("No images to segment", 5000)
            return
        self.session.segment(ids, set_name=set_name)

    #: the bar counts hundredths of an image, so that a large one moves it while it is segmented
    STEPS_PER_IMAGE = 100

    def _run_started(self, total: int, text: str) -> None:
        self.progress.setRange(0, max(total, 1) * self.STEPS_PER_IMAGE)
        self.progress.setValue(0)
        self.progress.setFormat(f"0/{total}")
        self.progress.setVisible(True)
        self.cancel_button.setVisible(True)
        self.progress_text.setText(text)
        self.seg_panel.set_busy(True)

    def _run_progress(self, done: int, total: int, text: str) -> None:
        self._set_bar(done * self.STEPS_PER_IMAGE, total, f"{done}/{total}")
        if text and text != self.progress_text.text():
            self.progress_text.setText(text)

    def _run_within(self, index: int, total: int, name: str, fraction: float, time_left: str) -> None:
        """How far the image at work is (a slide of 16384² px takes minutes on a CPU), and the run's time left."""
        if not 0.0 < fraction < 1.0:  # its start and end are the run's own events
            return
        done = index - 1 + fraction
        self._set_bar(int(done * self.STEPS_PER_IMAGE), total, f"{index - 1}/{total} ({done / max(total, 1):.0%})")
        self.progress_text.setText(f"Segmenting {name} ({index}/{total}): {fraction:.0%} of the image"
                                   + (f", {time_left}" if time_left else ""))

    def _set_bar(self, value: int, total: int, label: str) -> None:
        top = max(total, 1) * self.STEPS_PER_IMAGE
        if self.progress.maximum() != top:
            self.progress.setRange(0, top)
        self.progress.setValue(min(value, top))
        self.progress.setFormat(label)

    def _run_finished(self, text: str) -> None:
        self.progress.setVisible(False)
        self.cancel_button.setVisible(False)
        self.progress_text.setText("")
        self.seg_panel.set_busy(False)
        self.statusBar().showMessage(text, 15000)

    def _show_requested(self, image_id: int) -> None:
        self.project_panel.select_image(image_id)
        self.show_image(image_id)

    def _segment_with(self, adapter_path: str) -> None:
        """Segment the current image with this adapter (chosen in the segmentation panel)."""
        self.session.reload_adapters()
        self.seg_panel.select_model(adapter_path)
        self.segment_scope("image")

    def confirm_cancel_run(self) -> bool:
        """Esc / Segment > Cancel: ask before stopping a run (a stray Esc must not end an hour's work)."""
        if not self.session.is_running():
            self.statusBar().showMessage("No segmentation run to cancel", 4000)
            return False
        done, total = self.progress.value(), self.progress.maximum()
        so_far = (f"{done} of {total} images are done: their new results are kept" if done
                  else "The image is not done yet" if total == 1 else f"None of the {total} images is done yet")
        rest = "it keeps what it had" if total == 1 and not done else "the others keep what they had"
        answer = QMessageBox.question(
            self, "Stop segmenting?",
            f"Stop the segmentation run? {so_far}; {rest}.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
        if answer != QMessageBox.StandardButton.Yes:
            return False
        self.session.cancel_run()
        return True

    def show_problem(self, text: str) -> None:
        """List a problem (a file and what is wrong with it) in the Problems dock (kept in the
        open project) and show the dock."""
        self.problems.add(text)
        self.docks["Problems"].show()

    def _auto_segment_toggled(self, on: bool) -> None:
        self.prefs.auto_segment = on
        self.prefs.save()

    # ------------------------------------------------------------------ dialogs
    def open_export_dialog(self) -> Any:
        from .dialogs.export_dialog import ExportDialog

        project = self.session.project
        if project is None:
            self.statusBar().showMessage("Nothing to export: no project is open", 5000)
            return None

        def make_task(opts: Any) -> tuple[Any, ...]:
            return self.session.export_task(opts, self._export_ids(opts.scope))

        # No pixel size or channel names filled in: each image's own, as the table measures them;
        # the dialog says what the images of the chosen scope record. The scope is the table's.
        scope = self.measurements.current_scope() if self.current_image is not None else "set"
        dlg = ExportDialog(make_task, project.exports_dir, scope=scope, parent=self,
                           pixel_sizes=lambda sc: [project.get_image(i).pixel_size_um for i in self._export_ids(sc)],
                           default_pixel_size_um=self.prefs.pixel_size_um or None,
                           existing=lambda opts: tasks.existing_exports(project, self._export_ids(opts.scope), opts))
        dlg.show()
        return dlg

    def _export_ids(self, scope: str) -> list[int]:
        if scope == "image":
            return [] if self.current_image is None else [self.current_image]
        if scope == "set":
            name = self.project_panel.current_set()
            return self.project_panel.images_in_set(name) if name else []
        return self.project_panel.image_ids()

    def open_models_dialog(self) -> Any:
        from .dialogs.models_dialog import ModelsDialog

        dlg = ModelsDialog(self)
        dlg.show()
        return dlg

    def open_settings_dialog(self) -> Any:
        from .dialogs.settings_dialog import SettingsDialog

        dlg = SettingsDialog(self.prefs, list(self._gpus), self)
        dlg.accepted.connect(lambda: self.apply_preferences(dlg.preferences()))
        dlg.show()
        return dlg

    def apply_preferences(self, prefs: Preferences) -> None:
        device_changed = (prefs.device, prefs.effective_threads()) != (self.prefs.device, self.prefs.effective_threads())
        self.session.set_preferences(prefs)  # the window's prefs object: the session shares it
        self.prefs.save()
        apply_environment(self.prefs)
        self.seg_panel.auto_segment.setChecked(prefs.auto_segment)
        if device_changed:
            self._detect_device()
        self._refresh_measurements()  # measured again if the minimum object size or pixel size changed

    def open_selftest_dialog(self) -> Any:
        """Help → Self-test: show the dialog and (re)run the self-test in the background."""
        from .dialogs.selftest_dialog import SelftestDialog

        dlg = self.selftest_dialog
        if dlg is None:
            dlg = self.selftest_dialog = SelftestDialog(self)
        dlg.device, dlg.threads = self.prefs.device, self.prefs.effective_threads()
        dlg.show()
        dlg.raise_()
        dlg.start()
        return dlg

    def open_sample_project(self, dest: str | Path | None = None) -> Any:
        """Open the sample project, making it first when needed; returns the worker making it, or None."""
        return self.samples.open(dest)

    def _sample_ready(self, root: Path) -> None:
        if not self.open_project(root):
            return
        self.statusBar().showMessage(f"Sample project opened from {root}", 15000)
        if self.seg_panel.auto_segment.isChecked():
            self.segment_scope("project")

    def show_welcome_if_first_run(self) -> Any:
        from .dialogs.welcome_dialog import show_welcome

        self.welcome_dialog = show_welcome(self)
        return self.welcome_dialog

    def _about(self) -> None:
        QMessageBox.about(self, "About EffiCell", f"<b>EffiCell {__version__}</b><br>Cell segmentation, measurement "
                          "and few-shot adapter training on a frozen foundation-model encoder.")

    # ------------------------------------------------------------------ device
    def _detect_device(self) -> None:
        """Find the device in the background (importing torch takes a second)."""
        self.device_label.setText(quick_device_text(self.prefs.device, self.prefs.effective_threads()))
        self._device_worker = start_task(tasks.find_device, self.prefs.device, self.prefs.effective_threads(),
                                         on_event=self._device_found)

    def _device_found(self, ev: tasks.DeviceFound) -> None:
        self._gpus = ev.gpus
        self.device_label.setText(ev.description)

    # ------------------------------------------------------------------ helpers / state
    def _guard(self, fn: Any) -> bool:
        """Run ``fn``; show a user-facing error (no traceback) when it raises one."""
        try:
            fn()
            return True
        except EffiCellError as exc:
            QMessageBox.warning(self, "EffiCell", str(exc))
            self.show_problem(str(exc))
            return False

    def _restore_state(self) -> None:
        s = qsettings()
        geom = s.value("window/geometry")
        state = s.value("window/state")
        if isinstance(geom, QByteArray):
            self.restoreGeometry(geom)
        if isinstance(state, QByteArray) and self.restoreState(state):
            self._show_annotate = not self.docks["Annotate"].isHidden()

    def save_state(self) -> None:
        s = qsettings()
        s.setValue("window/geometry", self.saveGeometry())
        s.setValue("window/state", self.saveState())
        s.sync()

    def stop_background_work(self, timeout_ms: int = 20_000) -> None:
        """Wait for the window's own helpers (device detection, the sample project) to end."""
        for worker in (self._device_worker, self.samples.worker):
            if worker is not None:
                worker.cancel()
                worker.wait(timeout_ms)

    def running_work(self) -> list[str]:
        """What closing the window would stop: a segmentation run, a training run."""
        from .training import TrainingDialog

        work = []
        if self.session.is_running():
            work.append(f"a segmentation run ({self.progress.value()} of {self.progress.maximum()} images done; "
                        "their results are kept)")
        if any(d.is_running() for d in self.findChildren(TrainingDialog)):
            work.append("a training run (nothing is saved from a stopped training)")
        return work

    def confirm_quit(self) -> bool:
        """Ask before the window's close button or File > Quit stops long work (as Esc asks)."""
        work = self.running_work()
        if not work:
            return True
        answer = QMessageBox.question(
            self, "Quit EffiCell?", "Quitting now stops " + " and ".join(work) + ". Quit anyway?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def quit(self) -> None:
        """File > Quit: asks first while long work runs, then closes."""
        if self.confirm_quit():
            self.close()  # a close by the program: closeEvent does not ask again

    def closeEvent(self, event: QCloseEvent) -> None:
        # the close button (a spontaneous close) asks as Esc does; a close by the program (tests, quit()) does not
        if event.spontaneous() and not self.confirm_quit():
            event.ignore()
            return
        self.save_state()
        self.annotation.shutdown()
        self.session.close_project(emit=False)
        self.stop_background_work(10_000)
        stop_all()
        super().closeEvent(event)
        self.closed.emit()
