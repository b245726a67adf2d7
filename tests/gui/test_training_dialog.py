"""Training from the window: real annotated images, a background process with a live curve,
cancel (nothing written, process gone), train to the end, segment with the new adapter."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from efficell_app.core.images import read_mask


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:  # a zombie still answers kill(0): look at its state
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[1].startswith("Z")
    except OSError:
        return True


@pytest.fixture()
def annotated_project(tmp_path: Path, image_folder: Path, dsb_pairs, small_adapter: Path) -> Path:
    """Two real images annotated with their true masks (one marked finished) and a starting adapter."""
    from efficell_app.project import Project

    folder = tmp_path / "proj"
    masks = {i.name: m for i, m in dsb_pairs}
    with Project.create(folder) as p:
        ids = p.add_folder(image_folder, "Experiment 12").added
        for i in ids:
            p.save_annotation(i, read_mask(masks[p.get_image(i).name]))
        p.set_status(ids[0], "reviewed")
        p.add_adapter(small_adapter, name="start")
    return folder


@pytest.mark.slow
def test_train_cancel_train_again_and_segment(window, qtbot, annotated_project: Path) -> None:
    tools = window.annotation
    assert window.open_project(annotated_project)
    qtbot.waitUntil(lambda: window.current_image is not None, timeout=10_000)
    project = window.session.project
    dlg = tools.open_training()
    qtbot.addWidget(dlg)
    # one image finished, one in progress: only the finished one is checked; validation = held-out band
    assert len(dlg.checked_images()) == 1 and dlg.images.count() == 2
    for i in range(dlg.images.count()):
        dlg.images.item(i).setCheckState(dlg.images.item(0).checkState())
    assert len(dlg.checked_images()) == 2
    dlg.init_box.setCurrentIndex(dlg.init_box.findText("Adapter: start (efficell_compact)"))
    dlg.config_overrides = {"batch_size": 2, "crop": 128, "target_diameter": 20.0}
    dlg.threads = 1

    # 1) start, watch the curve grow, cancel: no adapter written, process gone
    dlg.minutes.setValue(5.0)
    dlg.name.setText("lab adapter")
    dlg.start_button.click()
    assert dlg.is_running()
    qtbot.waitUntil(lambda: dlg.pid is not None, timeout=30_000)
    pid = dlg.pid
    qtbot.waitUntil(lambda: len(dlg._loss[0]) >= 2, timeout=120_000)
    x, y = dlg.loss_curve.getData()
    assert len(x) >= 2 and np.all(np.isfinite(y))
    with qtbot.waitSignal(dlg.worker.aborted, timeout=30_000):
        dlg.cancel_button.click()
    assert _gone(pid) and not dlg.is_running()
    assert [a.name for a in project.list_adapters()] == ["start"]
    assert len(list((project.root / "adapters").iterdir())) == 1
    assert "Cancelled" in dlg.phase.text()

    # 2) train again to the end: validation AP plotted, adapter in the library with its metrics
    dlg.minutes.setValue(0.4)
    with qtbot.waitSignal(dlg.adapter_added, timeout=180_000) as blocker:
        dlg.start_button.click()
    info = blocker.args[0]
    assert _gone(dlg.pid)
    assert info.name == "lab adapter" and info.path.is_file()
    assert 0.0 <= info.metrics["validation"]["ap50"] <= 1.0
    assert sorted(info.training_images) == sorted(project.get_image(i).name for i in dlg._train_ids)
    assert len(dlg._ap[0]) >= 1 and dlg.segment_button.isEnabled()
    # the curve starts at the starting adapter's validation AP, drawn as the line to beat; the result says
    # whether training beat it (else the start's weights were kept)
    assert dlg._ap[0][0] == 0.0 and dlg.start_line.isVisible() and dlg._ap[1][0] == pytest.approx(dlg.start_line.value())
    assert "starting adapter" in dlg.result.text()
    # at once, without reopening the project: in the Model list and the Adapters panel
    assert window.seg_panel.model_box.findData(str(info.path)) >= 0
    assert tools.adapters_panel.selected_id() == info.id

    # 3) segment the current image with it, from the dialog
    image_id = window.current_image
    before = len(project.list_results(image_id))
    dlg.segment_button.click()
    qtbot.waitUntil(lambda: len(project.list_results(image_id)) > before and not window.session.is_running(),
                    timeout=60_000)
    res = project.latest_result(image_id)
    assert res.identity["adapter_sha256"] == info.sha256
    assert window.viewer.labels() is not None and window.viewer.labels().shape == (res_shape := window.viewer.labels().shape)
    assert res_shape == (project.get_image(image_id).height, project.get_image(image_id).width)
    dlg.close()


def test_build_request_refuses_bad_choices(qtbot, annotated_project: Path, tmp_path: Path) -> None:
    from efficell_app.gui.training import TrainingDialog
    from efficell_app.project import Project
    from efficell_app.tasks.train import training_config

    with Project.open(annotated_project) as p:
        dlg = TrainingDialog(p, encoder_weights=None, device="cpu")
        qtbot.addWidget(dlg)
        dlg.name.setText("start")
        with pytest.raises(ValueError, match="already exists"):
            dlg.build_request()
        dlg.name.setText("new one")
        first = dlg.checked_images()[0]
        dlg.val_box.setCurrentIndex(dlg.val_box.findData(first))
        with pytest.raises(ValueError, match="at least one training image"):
            dlg.build_request()
        assert not dlg.start() and "at least one training image" in dlg.phase.text()
        dlg.val_box.setCurrentIndex(0)
        config = training_config(p, dlg.build_request(), tmp_path)  # what the training task will run
        assert config.val is None and len(config.train) == 1 and config.encoder_weights is None
        assert config.init_adapter == "auto" and config.name == "new one"
        assert config.keep == "auto" and not dlg.keep_trained.isChecked()  # the evidence decides unless asked
        dlg.keep_trained.setChecked(True)
        assert training_config(p, dlg.build_request(), tmp_path).keep == "trained"


def test_dialog_trains_with_the_same_settings_as_the_cli(qtbot, tmp_path: Path, annotated_project: Path, dsb_pairs) -> None:
    """Same engine, same recipe: apart from where the pixels come from, the dialog's run is the CLI's."""
    import shutil
    from dataclasses import fields

    from efficell_app.cli import build_parser
    from efficell_app.cli.train import config_from_args
    from efficell_app.gui.training import TrainingDialog
    from efficell_app.project import Project
    from efficell_app.tasks.train import training_config

    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    with Project.open(annotated_project) as p:
        for rec in p.annotated_images():
            shutil.copy(rec.path, images / rec.name)
            shutil.copy(next(m for i, m in dsb_pairs if i.name == rec.name), masks / rec.name)
        dlg = TrainingDialog(p, encoder_weights=None, device="cpu")
        qtbot.addWidget(dlg)
        for i in range(dlg.images.count()):
            dlg.images.item(i).setCheckState(dlg.images.item(0).checkState().Checked)
        dlg.minutes.setValue(3.0)
        dlg.name.setText("lab")
        gui = training_config(p, dlg.build_request(), tmp_path)
    args = build_parser().parse_args(["train", "--images", str(images), "--masks", str(masks), "--out",
                                      str(tmp_path / "lab.safetensors"), "--minutes", "3", "--encoder-weights", "none",
                                      "--device", "cpu", "--name", "lab"])
    cli, problems = config_from_args(args)
    assert not problems
    differ = {f.name for f in fields(gui) if getattr(gui, f.name) != getattr(cli, f.name)}
    assert differ <= {"train", "out"}, differ
    assert len(gui.train) == len(cli.train) == 2
    for (img, mask), (ipath, mpath) in zip(sorted(gui.train, key=lambda t: t[0].path.name), sorted(cli.train)):
        from efficell_app.core.images import read_image, read_mask

        assert (img.data == read_image(ipath).data).all() and (mask == read_mask(mpath)).all()


def test_result_line_shows_the_whole_outcome(qtbot, annotated_project: Path) -> None:
    """The outcome is shown as rich text: its "p < 0.05" must come through as text, all of it, in amber when
    the start was kept."""
    from efficell_app import tasks
    from efficell_app.core.training import TrainProgress
    from efficell_app.gui.training import TrainingDialog
    from efficell_app.project import Project

    msg = ("training did not clearly improve on the starting adapter on the held-out band: AP@0.5 0.550 -> 0.640, "
           "errors 13 -> 10, a difference chance gives with p = 0.34 (needs < 0.05); the starting adapter's weights are kept")
    with Project.open(annotated_project) as p:
        dlg = TrainingDialog(p, encoder_weights=None, device="cpu")
        qtbot.addWidget(dlg)
        info = p.list_adapters()[0]
        dlg._finished(tasks.AdapterAdded(info, TrainProgress("done", step=3, seconds=1.0, trainable_params=10,
                                                             outcome={"kept": "start", "message": msg})))
        from PySide6.QtGui import QTextDocument

        doc = QTextDocument()
        doc.setHtml(dlg.result.text())
        assert msg in doc.toPlainText() and "#b45309" in dlg.result.text()
        assert dlg.result.minimumHeight() >= 2 * dlg.result.fontMetrics().height()


def test_a_long_phase_line_does_not_widen_the_dialog(qtbot, tmp_path: Path) -> None:
    """While validating, the phase line holds the whole outcome; it wraps in the dialog's width (the dialog
    grew to about 2000 px, past a laptop's screen)."""
    from types import SimpleNamespace

    from efficell_app.gui.training.dialog import TrainingDialog
    from efficell_app.project import Project

    with Project.create(tmp_path / "p") as p:
        dlg = TrainingDialog(p)
        qtbot.addWidget(dlg)
        dlg.show()
        width = dlg.width()
        outcome = ("training did not clearly improve on the starting adapter on held-out images (3-fold cross-"
                   "validation over images): AP@0.5 0.727 -> 0.764, errors 39 -> 33, a difference chance gives with "
                   "p = 0.28 (needs < 0.05); the starting adapter's weights are kept")
        dlg._progress(SimpleNamespace(fraction=0.97, phase="validating", message=outcome, total_steps=48, step=48,
                                      elapsed_s=20.0, eta_s=0.0, warnings=[], losses={}, start=None, val=None, best=None))
        qtbot.wait(50)
        assert dlg.width() == width and outcome in dlg.phase.text()
        dlg.close()
