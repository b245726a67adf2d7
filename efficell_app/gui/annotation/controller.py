"""Wires the annotation tools to the viewer, the editor (core.label_edit) and the project.

Edits are saved as they happen: ``AUTOSAVE_MS`` after the last change the label image is
written as a new annotation version (the ``tasks.save_annotation`` use case, in a worker);
changing image, stopping, closing the project or the window saves at once. A crash loses
at most the last second of work. The controller knows the viewer, the session and how to ask
for the current image; it tells the window what happened through its signals only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtWidgets import QFileDialog, QMessageBox

from ... import tasks
from ...core.errors import EffiCellError
from ...core.label_edit import LabelEditor
from ..workers import TaskWorker, start_task
from .canvas import AnnotationCanvas
from .panel import AnnotationPanel

if TYPE_CHECKING:
    from ..session import Session
    from ..viewer import ImageViewer

log = logging.getLogger(__name__)
AUTOSAVE_MS = 800
NOT_ANNOTATING = "Not annotating this image: start with Annotate > Annotate this image, or pick a tool (B brush, E eraser, …)"
REPLACING = ("import", "prediction", "empty")  # starts that replace what the editor holds


class AnnotationController(QObject):
    """Annotation mode of one window. ``editor`` is None when not annotating.

    ``current_image()`` says which image the window shows. Signals: ``message(text)`` for the
    status bar, ``saved(image id, version)``, ``editing_changed(on)``.
    """

    editing_changed = Signal(bool)
    saved = Signal(int, int)  # image id, annotation version
    message = Signal(str)

    def __init__(self, viewer: ImageViewer, session: Session, current_image: Callable[[], int | None],
                 panel: AnnotationPanel, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.session = session
        self._current_image = current_image
        self.panel = panel
        self.canvas = AnnotationCanvas()
        self.editor: LabelEditor | None = None
        self.image_id: int | None = None
        self.current_label = 0
        self._saved_changes = 0
        self._stroke_label = 0
        self._last: tuple[float, float] | None = None
        self._merge_first = 0
        self._polygon: list[tuple[float, float]] = []
        self._pending: list[TaskWorker] = []
        self.last_error = ""
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(AUTOSAVE_MS)
        self._timer.timeout.connect(lambda: self.save(wait=False))

        c = self.canvas
        c.stroke_started.connect(self._stroke_started)
        c.stroke_moved.connect(self._stroke_moved)
        c.stroke_finished.connect(self._stroke_finished)
        c.clicked.connect(self._clicked)
        c.size_step.connect(lambda d: self.change_size(d))
        p = panel
        p.tool_chosen.connect(self.set_tool)
        p.start_requested.connect(lambda src: self.start(src))
        p.size.valueChanged.connect(self._size_changed)
        p.undo_button.clicked.connect(self.undo)
        p.redo_button.clicked.connect(self.redo)
        p.mark_button.clicked.connect(self.mark_annotated)
        p.done_button.clicked.connect(self.stop)
        self.viewer.image_item.sigImageChanged.connect(lambda: QTimer.singleShot(0, self._image_maybe_changed))
        self.viewer.opacity.valueChanged.connect(lambda v: self.canvas.setOpacity(v / 100.0))
        self.viewer.overlay_box.currentTextChanged.connect(lambda t: self.canvas.set_mode(t.lower()))
        self.session.labels_ready.connect(self._labels_ready)
        self.session.project_changed.connect(self._project_changed)
        # save before the project is closed (another project opens, the window quits)
        self.session.about_to_close.connect(lambda _project: self.save(wait=True))
        self.canvas.setOpacity(self.viewer.opacity.value() / 100.0)

    # ------------------------------------------------------------------ state
    @property
    def active(self) -> bool:
        return self.editor is not None

    @property
    def project(self) -> Any:
        return self.session.project

    def _say(self, text: str) -> None:
        self.panel.status.setText(text)
        self.message.emit(text)

    # ------------------------------------------------------------------ start / stop
    def start(self, source: str = "saved", path: str | Path | None = None) -> bool:
        """Annotate the current image starting from "saved" (annotation, else prediction),
        "prediction", "empty" or "import" (``path``, or ask for a file)."""
        project, image_id = self.project, self._current_image()
        if project is None or image_id is None:
            self._say("Open an image first (drop a folder on the window)")
            return False
        if source in REPLACING and not self._may_replace(image_id, source):
            return False
        if source == "import" and path is None:
            from ...core.mask_import import MASK_IMPORT_FILTER

            folder = str(project.get_image(image_id).path.parent)
            path, _ = QFileDialog.getOpenFileName(self.panel, "Import masks", folder, MASK_IMPORT_FILTER)
            if not path:
                return False
        try:
            start = tasks.starting_labels(project, image_id, source, path)
        except (EffiCellError, ValueError, OSError) as exc:
            QMessageBox.warning(self.panel, "Annotation", str(exc))
            return False
        labels, source, note = start.labels, start.source, start.note
        if self.editor is not None and self.image_id == image_id:
            self.editor.set_labels(labels, name=f"start: {source}")  # undoable
        else:
            self._open(image_id, labels)
            if source == "import":  # imported masks are the annotation now: saved at once, as an edit would be
                self._saved_changes = -1
                self.save()
        if self.canvas.tool == "navigate":
            note += ": choose a tool to edit (B brush, E eraser, P polygon, …)"
        self._say(note)
        return True

    def _may_replace(self, image_id: int, source: str) -> bool:
        """Starting over ("import", "prediction", "empty") replaces the image's annotation in the
        editor: ask first when the user already has one (it stays in the project's history)."""
        project = self.project
        editor = self.editor if self.image_id == image_id else None
        saved = project.annotation_history(image_id) if project is not None else []
        if not saved and (editor is None or editor.changes == 0):
            return True  # nothing the user made: a prediction in the editor is not their work
        n = editor.n_cells() if editor is not None else saved[0].n_cells
        if n == 0:
            return True
        what = {"import": "the imported masks", "prediction": "the model's prediction", "empty": "an empty image"}[source]
        name = project.get_image(image_id).name if project is not None else f"image {image_id}"
        answer = QMessageBox.question(
            self.panel, "Replace the annotation?",
            f"{name} already has an annotation ({n} cells). Replace it with {what}?\n\n"
            "The current annotation is kept in the project (its history keeps it however many saves follow; "
            "Import masks… on its file brings it back).",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
        if answer != QMessageBox.StandardButton.Yes:
            return False
        if editor is not None:
            self.save(wait=True)  # what the editor holds is the version kept
        if project is not None:
            kept = project.keep_annotation(image_id, f"replaced by {what}")
            if kept is not None:
                self._say(f"the annotation replaced is kept: {kept.path}")
        return True

    def _open(self, image_id: int, labels: np.ndarray) -> None:
        if self.editor is not None:
            self.save(wait=True)
        self.editor = LabelEditor(labels)
        self.editor.listeners.append(self._edited)
        self.image_id = image_id
        self._saved_changes = 0
        self._merge_first, self._polygon, self.current_label = 0, [], 0
        if self.canvas.scene() is None:
            self.viewer.view.addItem(self.canvas)
        self.canvas.set_mode(self.viewer.overlay_box.currentText().lower())
        self.canvas.set_labels(self.editor.labels)
        # the canvas draws the cells now; the viewer's overlay would not know new ones
        self.viewer.set_overlay_paused(True)
        # hover and selection read the edited array; the colours are the canvas's (computed once)
        self.viewer.set_labels(self.editor.labels, colours=self.canvas.lut)
        self.panel.set_editing(True)
        self._update_history()
        # The tool stays "navigate" until the user picks one: a first click into the image only
        # focuses it (and pans or selects) instead of painting a cell.
        self.editing_changed.emit(True)

    def stop(self) -> None:
        """Save, leave annotation mode and show the annotation as the image's labels."""
        if self.editor is None:
            self._say(NOT_ANNOTATING)
            return
        self.save(wait=True)
        labels, image_id = self.editor.labels, self.image_id
        shown = image_id == self._current_image() and self.viewer.has_image()
        if shown:
            self.viewer.set_labels(labels.copy())  # drawn once, when the overlay resumes below
        self._close_editor()
        self._say("Annotation saved")

    def _close_editor(self) -> None:
        self._timer.stop()
        self.editor = None
        self.image_id = None
        self.canvas.set_labels(None)
        if self.canvas.scene() is not None:
            self.viewer.view.removeItem(self.canvas)
        self.viewer.set_overlay_paused(False)
        self.panel.set_editing(False)
        self.set_tool("navigate")
        self.editing_changed.emit(False)

    def _image_maybe_changed(self) -> None:
        cur = self._current_image()
        if self.editor is None or cur == self.image_id:
            return
        self.save(wait=True)
        self._close_editor()
        if cur is not None and self.viewer.has_image():
            self.start("saved")

    def _labels_ready(self, image_id: int, _labels: Any) -> None:
        if self.editor is not None and image_id == self.image_id:
            # the viewer just took the new prediction; keep it reading the edited labels
            QTimer.singleShot(0, lambda: self.editor is not None and self.viewer.set_labels(self.editor.labels))

    def _project_changed(self, _project: Any) -> None:
        if self.editor is not None:
            self._close_editor()

    # ------------------------------------------------------------------ saving
    def _edited(self, box: tuple[int, int, int, int]) -> None:
        self.canvas.refresh(box)
        self._update_history()
        self._timer.start()

    def dirty(self) -> bool:
        return self.editor is not None and self.editor.changes != self._saved_changes

    def save(self, wait: bool = False) -> None:
        """Write the current labels as a new annotation version (if anything changed)."""
        self._timer.stop()
        ed, project, image_id = self.editor, self.project, self.image_id
        if ed is not None and project is not None and image_id is not None and ed.changes != self._saved_changes:
            snap = ed.labels.copy()
            self._saved_changes = ed.changes
            holder: list[TaskWorker] = []
            worker = start_task(tasks.save_annotation, project, image_id, snap,
                                on_event=lambda ev, pr=project: self._on_saved(ev, pr),
                                on_error=lambda exc, i=image_id, pr=project: self._save_failed(i, exc, pr),
                                on_finished=lambda: self._pending.remove(holder[0]) if holder[0] in self._pending else None)
            holder.append(worker)
            self._pending.append(worker)
            self._say("Saving…")
        if wait:
            for worker in list(self._pending):
                worker.wait(60_000)

    def _save_failed(self, image_id: int, exc: BaseException, project: Any) -> None:
        if project is not self.project:  # saved just before its project was closed
            log.error("annotation of image %s not saved: %s", image_id, exc)
            return
        self.last_error = f"annotation not saved: {tasks.describe_error(exc)}"
        self._saved_changes = -1  # try again with the next change
        self.session.problem.emit(self.last_error)
        self._say(self.last_error)

    def _on_saved(self, ev: tasks.AnnotationSaved, project: Any) -> None:
        if project is not self.project:
            return
        self.session.image_status.emit(ev.image_id, ev.status, "")
        self.session.annotation_saved(ev.image_id)  # the table, plot and counts measure this version now
        self._say(f"Saved (version {ev.version}, {ev.n_cells} cells)")
        self.saved.emit(ev.image_id, ev.version)

    def mark_annotated(self) -> None:
        """Save now and mark the image finished ("reviewed"): it is offered for training."""
        if self.editor is None or self.project is None or self.image_id is None:
            self._say(NOT_ANNOTATING)
            return
        if self._saved_changes == 0 and self.project.load_annotation(self.image_id) is None:
            self._saved_changes = -1  # unedited prediction accepted as it is: save it once
        self.save(wait=True)
        status = tasks.mark_annotated(self.project, self.image_id)
        self.session.status_changed(self.image_id, status)
        self._say("Marked as annotated: this image will be used for training")

    def shutdown(self) -> None:
        """Save and wait for the write (window closing)."""
        self.save(wait=True)

    # ------------------------------------------------------------------ tools
    def set_tool(self, tool: str) -> None:
        if tool != "navigate" and self.editor is None and not self.start("saved"):
            tool = "navigate"
        self.canvas.set_tool(tool)
        self.panel.set_tool(tool)
        self._merge_first, self._polygon = 0, []
        self.canvas.brush_radius = self.panel.size.value()

    def change_size(self, step: int) -> None:
        s = self.panel.size
        v = s.value()
        s.setValue(max(1, v + step * max(1, v // 8)))

    def _size_changed(self, v: int) -> None:
        self.canvas.brush_radius = v
        self._say(f"Brush radius {v} px")

    def undo(self) -> None:
        if self.editor is None:
            self._say(NOT_ANNOTATING)
        elif self.editor.undo() is None:
            self._say("Nothing to undo")

    def redo(self) -> None:
        if self.editor is None:
            self._say(NOT_ANNOTATING)
        elif self.editor.redo() is None:
            self._say("Nothing to redo")

    def _update_history(self) -> None:
        ed = self.editor
        self.panel.set_history(bool(ed and ed.can_undo), bool(ed and ed.can_redo))
        self.panel.cell_label.setText(f"Cell: {self.current_label or '–'}   ({ed.next_id - 1 if ed else 0} ids used)")

    def _stroke_started(self, y: float, x: float) -> None:
        ed = self.editor
        if ed is None:
            return
        ed.begin_group()
        self._last = (y, x)
        if self.canvas.tool == "brush":
            lab = ed.label_at(y, x)
            self._stroke_label = lab if lab else ed.new_id()
            self.current_label = self._stroke_label
            ed.brush(self._stroke_label, [(y, x)], self.panel.size.value(), self.panel.overwrite.isChecked())
        elif self.canvas.tool == "eraser":
            ed.erase([(y, x)], self.panel.size.value())

    def _stroke_moved(self, y: float, x: float) -> None:
        ed, last = self.editor, self._last
        if ed is None or last is None:
            return
        r = self.panel.size.value()
        if self.canvas.tool == "brush":
            ed.brush(self._stroke_label, [last, (y, x)], r, self.panel.overwrite.isChecked())
        elif self.canvas.tool == "eraser":
            ed.erase([last, (y, x)], r)
        self._last = (y, x)

    def _stroke_finished(self, path: list[tuple[float, float]]) -> None:
        ed = self.editor
        if ed is None:
            return
        tool = self.canvas.tool
        if tool in ("brush", "eraser"):
            ed.end_group("paint" if tool == "brush" else "erase")
            self._last = None
        elif tool == "freehand":
            nid = ed.add_freehand(path, overwrite=self.panel.overwrite.isChecked()) if len(path) >= 3 else 0
            self.current_label = nid or self.current_label
            self._say(f"New cell {nid}" if nid else "Outline too small or on other cells: nothing drawn")
        elif tool == "split":
            lab = ed.majority_label(path)
            pieces = ed.split(lab, path) if lab else []
            self._say(f"Cell {lab} split into {len(pieces)} cells" if pieces
                      else "Draw the line right across one cell to split it")
        self._update_history()

    def _clicked(self, y: float, x: float, double: bool) -> None:
        ed = self.editor
        if ed is None:
            return
        tool = self.canvas.tool
        lab = ed.label_at(y, x)
        if tool == "delete":
            if lab and ed.delete_cell(lab):
                self._say(f"Cell {lab} deleted")
        elif tool == "fill":
            target = self.current_label if self.current_label and self.current_label != lab else 0
            if not target:
                target = ed.new_id() if lab == 0 else 0
            if target and ed.fill(y, x, target):
                self.current_label = target
        elif tool == "merge":
            if not lab:
                return
            if not self._merge_first or self._merge_first == lab:
                self._merge_first = lab
                self.viewer.select_cell(lab, center=False)
                self._say(f"Cell {lab} chosen: click the cell to merge into it")
            else:
                a, self._merge_first = self._merge_first, 0
                ed.merge(a, lab)
                self.current_label = a
                self.viewer.select_cell(a, center=False)
                self._say(f"Cell {lab} merged into cell {a}")
        elif tool == "polygon":
            self._polygon_click(y, x, double)
        self._update_history()

    def _polygon_click(self, y: float, x: float, double: bool) -> None:
        ed = self.editor
        assert ed is not None
        pts = self._polygon
        near_first = len(pts) >= 3 and np.hypot(pts[0][0] - y, pts[0][1] - x) < 3.0
        if not double and not near_first:
            pts.append((y, x))
            self.canvas.show_path(pts)
            return
        if double and not near_first and (not pts or pts[-1] != (y, x)):
            pts.append((y, x))
        self._polygon = []
        self.canvas.show_path([])
        nid = ed.add_polygon(pts, overwrite=self.panel.overwrite.isChecked()) if len(pts) >= 3 else 0
        self.current_label = nid or self.current_label
        self._say(f"New cell {nid}" if nid else "A polygon needs 3 corners on background")

    def polygon_back(self) -> None:
        """Remove the last corner of the polygon being drawn (Backspace)."""
        if self._polygon:
            self._polygon.pop()
            self.canvas.show_path(self._polygon)
