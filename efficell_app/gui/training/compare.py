"""Two viewers side by side: the same image segmented by the previous adapter and the new one."""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import QDialog, QGridLayout, QLabel, QWidget

from ... import tasks
from ..viewer import ImageViewer
from ..workers import TaskWorker, start_task


class CompareDialog(QDialog):
    """Previous (left) and new (right) adapter on the same image; zoom and pan are linked."""

    def __init__(self, project: Any, image_id: int, previous: str | None, new: str, encoder_weights: str | None = "auto",
                 device: str = "auto", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Compare adapters")
        self.project, self.image_id = project, image_id
        self.models = [previous, new]
        self.encoder_weights, self.device = encoder_weights, device
        self.viewers = [ImageViewer(), ImageViewer()]
        self.titles = [QLabel("Previous: segmenting…"), QLabel("New: segmenting…")]
        img = project.read_image(image_id)
        grid = QGridLayout(self)
        for i, (v, t) in enumerate(zip(self.viewers, self.titles)):
            v.set_image(img.data, img.channel_names, img.rgb)
            grid.addWidget(t, 0, i)
            grid.addWidget(v, 1, i)
        self.viewers[1].view.setXLink(self.viewers[0].view)
        self.viewers[1].view.setYLink(self.viewers[0].view)
        self.handle: TaskWorker | None = None
        self.results: dict[int, tasks.Compared] = {}
        self.resize(1200, 640)

    def start(self) -> TaskWorker:
        self.handle = start_task(tasks.compare_models, self.project, self.image_id, self.models, self.encoder_weights,
                                 self.device, on_event=self._show,
                                 on_error=lambda exc: self.titles[1].setText(f"Stopped: {tasks.describe_error(exc)}"))
        return self.handle

    def _show(self, ev: tasks.Compared) -> None:
        self.results[ev.side] = ev
        self.titles[ev.side].setText(("Previous: " if ev.side == 0 else "New: ") + ev.text)
        if ev.labels is not None:
            self.viewers[ev.side].set_labels(ev.labels)

    def done(self, r: int) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle.wait(30_000)
        super().done(r)
