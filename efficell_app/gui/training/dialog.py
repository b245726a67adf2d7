"""The training dialog: choose annotated images, validation, encoder, starting adapter and time;
train (``tasks.train_project_adapter``: a worker driving a separate process) with a live
learning curve; the result goes into the project's library."""

from __future__ import annotations

import datetime as dt
import html
import logging
from collections.abc import Callable
from typing import Any

import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from ... import tasks
from ...core.errors import EffiCellError
from ..screen import fit_to_screen
from ..workers import TaskWorker, start_task

log = logging.getLogger(__name__)
HOLD_OUT = -1


def _fmt_time(s: float | None) -> str:
    if s is None:
        return "–"
    s = round(s)
    return f"{s // 60}:{s % 60:02d}"


class TrainingDialog(QDialog):
    """Non-modal. ``adapter_added(AdapterInfo)`` when a run finished and the adapter is in the
    project; ``segment_requested(path)`` from "Segment with it now".

    ``current_image``: the image "Compare side by side" segments, or a function giving the one
    selected in the window when the button is clicked (the window's selection changes meanwhile).
    """

    adapter_added = Signal(object)
    segment_requested = Signal(str)

    def __init__(self, project: Any, parent: QWidget | None = None, encoder_weights: str | None = "auto",
                 device: str = "auto", current_image: int | None | Callable[[], int | None] = None,
                 small_encoder: bool = False,
                 config_overrides: dict[str, Any] | None = None, threads: int | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Train an adapter")
        self.project = project
        self.encoder_weights = encoder_weights
        self.device = device
        self._current_image = current_image
        self.small_encoder = small_encoder
        self.config_overrides = dict(config_overrides or {})
        self.threads = threads
        self.worker: TaskWorker | None = None
        self.pid: int | None = None
        self._train_ids: list[int] = []  # the training process of the current run
        self.new_adapter: Any = None
        self._closing = False
        self.previous_model: str | None = None
        self._loss: tuple[list[float], list[float]] = ([], [])
        self._ap: tuple[list[float], list[float]] = ([], [])
        self._build()
        self.fill_choices()

    def current_image(self) -> int | None:
        """The image "Compare side by side" uses: the one selected in the window now."""
        cur = self._current_image
        return cur() if callable(cur) else cur

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        self.images = QListWidget()
        self.images.setToolTip("Annotated images of the project; checked ones are used for training")
        self.val_box = QComboBox()
        self.val_box.setToolTip("Images to score the adapter on while it trains (not used for training)")
        self.encoder_box = QComboBox()
        self.init_box = QComboBox()
        self.init_box.setToolTip("Fine-tune an existing adapter (faster, needs fewer images) or start fresh")
        self.minutes = QDoubleSpinBox()
        self.minutes.setRange(0.1, 600.0)
        self.minutes.setDecimals(1)
        self.minutes.setValue(10.0)
        self.minutes.setSuffix(" min")
        self.minutes.setToolTip("The longest the whole run may take: training steps are cut to fit. The starting "
                                "adapter is kept unless training beats it on held-out images")
        self.keep_trained = QCheckBox("Keep the trained weights even without evidence")
        self.keep_trained.setToolTip("Off (recommended): the trained weights are kept only where the held-out images "
                                     "show they make fewer errors than the starting adapter (p < 0.05); else its "
                                     "weights are kept. On: the trained weights in any case")
        self.name = QLineEdit(f"adapter {dt.datetime.now():%Y-%m-%d %H:%M}")
        form = QFormLayout()
        form.addRow("Training images", self.images)
        form.addRow("Validation", self.val_box)
        form.addRow("Encoder", self.encoder_box)
        form.addRow("Start from", self.init_box)
        form.addRow("Time budget", self.minutes)
        form.addRow("", self.keep_trained)
        form.addRow("Adapter name", self.name)
        setup = QGroupBox("Set-up")
        setup.setLayout(form)
        self.setup_box = setup

        self.plots = pg.GraphicsLayoutWidget()
        self.plots.setBackground("w")
        self.loss_plot = self.plots.addPlot(title="Training loss")
        self.loss_plot.setLabel("bottom", "step")
        self.loss_curve = self.loss_plot.plot(pen=pg.mkPen((59, 130, 246), width=2))
        self.plots.nextRow()
        self.ap_plot = self.plots.addPlot(title="Validation AP@0.5")
        self.ap_plot.setLabel("bottom", "step")
        self.ap_plot.setYRange(0, 1)
        self.ap_curve = self.ap_plot.plot(pen=pg.mkPen((22, 163, 74), width=2), symbol="o", symbolSize=6,
                                          symbolBrush=(22, 163, 74))
        self.ap_plot.setXLink(self.loss_plot)
        # The starting adapter's validation AP: the first point of the curve and a line training must beat.
        self.start_line = pg.InfiniteLine(angle=0, movable=False, pen=pg.mkPen((107, 114, 128), width=1, style=Qt.PenStyle.DashLine),
                                          label="start", labelOpts={"position": 0.05, "color": (107, 114, 128)})
        self.start_line.setVisible(False)
        self.ap_plot.addItem(self.start_line)
        self.plots.setMinimumHeight(300)

        self.phase = QLabel("Ready")
        # long phase texts (the outcome while validating) wrap in the dialog's width instead of widening it
        # past the screen (it grew to 2000 px on the outcome line)
        self.phase.setWordWrap(True)
        self.phase.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.eta = QLabel("")
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.result = QLabel("")
        self.result.setWordWrap(True)
        self.start_button = QPushButton("Start training")
        self.start_button.setDefault(True)
        self.start_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel training")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.segment_button = QPushButton("Segment with it now")
        self.segment_button.setEnabled(False)
        self.segment_button.clicked.connect(lambda: self.new_adapter and self.segment_requested.emit(str(self.new_adapter.path)))
        self.compare_button = QPushButton("Compare side by side…")
        self.compare_button.setEnabled(False)
        self.compare_button.clicked.connect(self.compare)
        buttons = QHBoxLayout()
        for b in (self.start_button, self.cancel_button, self.segment_button, self.compare_button):
            buttons.addWidget(b)
        status = QHBoxLayout()
        status.addWidget(self.phase, 1)
        status.addWidget(self.eta)
        lay = QVBoxLayout(self)
        lay.addWidget(setup)
        lay.addWidget(self.plots, 1)
        lay.addLayout(status)
        lay.addWidget(self.progress)
        lay.addWidget(self.result)
        lay.addLayout(buttons)
        fit_to_screen(self, 760, 820)

    def fill_choices(self) -> None:
        from ...core.encoders import list_specs

        recs = self.project.annotated_images()
        reviewed = [r for r in recs if r.status == "reviewed"]
        self.images.clear()
        self.val_box.clear()
        self.val_box.addItem("The training images check each other (cross-validation)", HOLD_OUT)
        for r in recs:
            item = QListWidgetItem(f"{r.name}  ({r.set_name}{', in progress' if reviewed and r.status != 'reviewed' else ''})")
            item.setData(Qt.ItemDataRole.UserRole, r.id)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if (not reviewed or r.status == "reviewed") else Qt.CheckState.Unchecked)
            self.images.addItem(item)
            self.val_box.addItem(f"Image: {r.name}", r.id)
        self.encoder_box.clear()
        for spec in list_specs():
            self.encoder_box.addItem(f"{spec.name} — {spec.description}", spec.name)
        self.encoder_box.setCurrentIndex(max(0, self.encoder_box.findData("efficell_compact")))  # the default path
        self.init_box.clear()
        self.init_box.addItem("Built-in generalist adapter (when it fits the encoder)", "auto")
        self.init_box.addItem("Fresh adapters", None)
        for a in self.project.list_adapters():
            self.init_box.addItem(f"Adapter: {a.name} ({a.encoder})", str(a.path))
        if not recs:
            self.phase.setText("No annotated images yet: annotate and save at least one image first")
            self.start_button.setEnabled(False)

    def checked_images(self) -> list[int]:
        out = []
        for i in range(self.images.count()):
            it = self.images.item(i)
            if it.checkState() == Qt.CheckState.Checked:
                out.append(int(it.data(Qt.ItemDataRole.UserRole)))
        return out

    # ------------------------------------------------------------------ run
    def build_request(self) -> tasks.TrainingRequest:
        """The request for the current choices; ``ValueError`` with a reason if it cannot run."""
        val_id = self.val_box.currentData()
        init = self.init_box.currentData()
        request = tasks.TrainingRequest(
            image_ids=tuple(self.checked_images()), name=self.name.text().strip() or "adapter",
            validation_image=None if val_id in (None, HOLD_OUT) else int(val_id),
            encoder=self.encoder_box.currentData() or "efficell_compact", init_adapter=init,
            minutes=float(self.minutes.value()), device=self.device, encoder_weights=self.encoder_weights,
            threads=self.threads, small_encoder=self.small_encoder,
            keep="trained" if self.keep_trained.isChecked() else "auto", overrides=dict(self.config_overrides))
        from ...tasks.train import check_request

        check_request(self.project, request)
        self.previous_model = init if init not in (None, "auto") else None
        return request

    def start(self) -> bool:
        try:
            request = self.build_request()
        except (EffiCellError, ValueError, OSError) as exc:
            self.phase.setText(f"<span style='color:#dc2626'>{exc}</span>")
            return False
        self._loss = ([], [])
        self._ap = ([], [])
        self.loss_curve.setData([], [])
        self.ap_curve.setData([], [])
        self.start_line.setVisible(False)
        self.new_adapter = None
        self.result.setText("")
        self.segment_button.setEnabled(False)
        self.compare_button.setEnabled(False)
        self.start_button.setEnabled(False)
        self.setup_box.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.phase.setText("Starting the training process…")
        self.progress.setValue(0)
        self.pid = None
        self._train_ids = [i for i in request.image_ids if i != request.validation_image]
        self.worker = start_task(tasks.train_project_adapter, self.project, request, on_event=self._event,
                                 on_aborted=self._cancelled, on_error=self._failed, on_finished=self._ended)
        return True

    def cancel(self) -> None:
        self.phase.setText("Cancelling…")
        self.cancel_button.setEnabled(False)
        if self.worker is not None:
            self.worker.cancel()

    def is_running(self) -> bool:
        return self.worker is not None

    def _event(self, ev: Any) -> None:
        if isinstance(ev, tasks.TrainingStarted):
            self.pid = ev.pid
        elif isinstance(ev, tasks.AdapterAdded):
            self._finished(ev)
        else:
            self._progress(ev)

    def _ended(self) -> None:
        self.worker = None

    def _progress(self, ev: Any) -> None:
        self.progress.setValue(int(1000 * min(max(ev.fraction, 0.0), 1.0)))
        text = ev.phase.capitalize()
        if ev.message:
            text += f": {ev.message}"
        if ev.phase == "training" and ev.total_steps:
            text += f" (step {ev.step} of ~{ev.total_steps})"
        self.phase.setText(text)
        self.eta.setText(f"elapsed {_fmt_time(ev.elapsed_s)}   left {_fmt_time(ev.eta_s)}")
        for w in ev.warnings:
            self.result.setText((self.result.text() + "\n" if self.result.text() else "") + w)
        if ev.phase == "training" and "total" in ev.losses:
            self._loss[0].append(float(ev.step))
            self._loss[1].append(float(ev.losses["total"]))
            self.loss_curve.setData(*self._loss)
        start = ev.start
        if start and "ap50" in start and not self.start_line.isVisible():
            self.start_line.setValue(float(start["ap50"]))
            self.start_line.setVisible(True)
        new_val = ev.phase in ("validating", "saving", "done") and ev.val is not None and "ap50" in ev.val
        if new_val and (not self._ap[0] or (self._ap[0][-1], self._ap[1][-1]) != (float(ev.step), float(ev.val["ap50"]))):
            self._ap[0].append(float(ev.step))
            self._ap[1].append(float(ev.val["ap50"]))
            self.ap_curve.setData(*self._ap)

    def _idle(self) -> None:
        self.worker = None
        self.start_button.setEnabled(True)
        self.setup_box.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def _finished(self, added: tasks.AdapterAdded) -> None:
        self._idle()
        info, ev = added.adapter, added.final
        self.new_adapter = info
        self.progress.setValue(1000)
        val = (ev.metrics or {}).get("validation") or {}
        score = f"validation AP@0.5 {val['ap50']:.3f}" if "ap50" in val else "no validation score"
        self.phase.setText(f"Done in {_fmt_time(ev.seconds)}: '{info.name}' saved in the project ({score})")
        outcome = ev.outcome or {}
        said = html.escape(outcome.get("message", ""))  # rich text: "p < 0.05" must not open a tag
        if outcome.get("kept") == "start" or outcome.get("overridden"):  # say it plainly: kept without evidence
            said = f"<span style='color:#b45309'>{said}</span>"
        self.result.setText(f"{said}<br>{ev.step} steps, {ev.trainable_params:,} trained parameters; "
                            f"{html.escape((ev.metrics or {}).get('validation_source', ''))}")
        # a word-wrapped label does not grow by itself inside a full layout: give it the lines its text needs
        self.result.setMinimumHeight(self.result.heightForWidth(max(self.result.width(), 400)))
        self.segment_button.setEnabled(True)
        self.compare_button.setEnabled(self.current_image() is not None)
        self.adapter_added.emit(info)

    def _cancelled(self) -> None:
        self._idle()
        self.phase.setText("Cancelled: no adapter was saved")
        self.eta.setText("")
        self.progress.setValue(0)

    def _failed(self, exc: BaseException) -> None:
        self._idle()
        self.phase.setText(f"<span style='color:#dc2626'>Training stopped: {tasks.describe_error(exc)}</span>")

    def compare(self) -> Any:
        from .compare import CompareDialog

        image_id = self.current_image()
        if self.new_adapter is None or image_id is None:
            return None
        dlg = CompareDialog(self.project, image_id, self.previous_model, str(self.new_adapter.path),
                            encoder_weights=self.encoder_weights, device=self.device, parent=self)
        self.compare_dialog = dlg
        dlg.show()
        dlg.start()
        return dlg

    def stop_and_wait(self) -> None:
        """Cancel a run and wait until its process is gone (the dialog closing)."""
        if self.worker is not None:
            self.worker.cancel()
            self.worker.wait(30_000)

    def done(self, r: int) -> None:
        self.stop_and_wait()
        super().done(r)

    def confirm_stop(self) -> bool:
        """Ask before a stray Esc or a click on the window's close button ends a training run."""
        answer = QMessageBox.question(
            self, "Stop training?", "Stop the training run? Nothing is saved from a run that is stopped.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def reject(self) -> None:
        """Esc (and the close button, through ``closeEvent``): asks first while training."""
        if self.is_running() and not self._closing and not self.confirm_stop():
            return
        super().reject()

    def closeEvent(self, event: Any) -> None:
        if self.is_running() and event.spontaneous() and not self.confirm_stop():
            event.ignore()
            return
        self.stop_and_wait()
        self._closing = True  # asked already (or closed by the program): QDialog's reject() must not ask again
        try:
            super().closeEvent(event)
        finally:
            self._closing = False
