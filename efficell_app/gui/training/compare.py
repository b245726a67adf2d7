"""Two viewers side by side: the same image segmented by the previous adapter and the new one."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtWidgets import QDialog, QGridLayout, QLabel, QWidget

from ...core.cancel import CancelToken
from ..viewer import ImageViewer
from ..workers import WorkerHandle, launch, start_worker


@dataclass(frozen=True)
class Compared:
    side: int  # 0 = previous, 1 = new
    labels: np.ndarray | None
    text: str


def compare_job(project: Any, image_id: int, models: list[str | None], encoder_weights: str | None, device: str) -> Any:
    """Job: segment one image with each model in turn (a model that cannot load is reported)."""

    def job(cancel: CancelToken) -> Iterator[Any]:
        from ...core.errors import EffiCellError
        from ...core.pipeline import Segmenter
        from ..jobs import loading_heavy_libraries

        img = project.read_image(image_id)
        for side, model in enumerate(models):
            cancel.raise_if_cancelled()
            name = "built-in model" if model is None else Path(model).stem
            try:
                with loading_heavy_libraries():
                    seg = Segmenter.load(model, device=device, encoder_weights=encoder_weights)
                res = seg.segment(img, cancel=cancel)
            except (EffiCellError, ValueError, OSError) as exc:
                yield Compared(side, None, f"{name}: {exc}")
                continue
            yield Compared(side, res.labels, f"{seg.identity.get('adapter') or name}: {res.n_cells} cells")

    return job


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
        self.handle: WorkerHandle | None = None
        self.results: dict[int, Compared] = {}
        self.resize(1200, 640)

    def start(self) -> WorkerHandle:
        self.handle = start_worker(compare_job(self.project, self.image_id, self.models, self.encoder_weights, self.device),
                                   parent=self, on_event=self._show)
        self.handle.failed.connect(lambda msg: self.titles[1].setText(f"Stopped: {msg}"))
        launch(self.handle)
        return self.handle

    def _show(self, ev: Compared) -> None:
        self.results[ev.side] = ev
        self.titles[ev.side].setText(("Previous: " if ev.side == 0 else "New: ") + ev.text)
        if ev.labels is not None:
            self.viewers[ev.side].set_labels(ev.labels)

    def done(self, r: int) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle.wait(30_000)
        super().done(r)
