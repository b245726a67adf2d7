"""A lab day in the window (issue 17): train then use, numbers that follow the annotation, z-stacks and
time series, a new project in a new folder, Esc, the brush, importing over an annotation, export
defaults, and the small things (compare, threads, problems, last project, device label)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from gui_helpers import drop, measured_cells, wait_run_done
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QMessageBox

from efficell_app.core.images import PlaneChoice, read_image, read_mask

pytestmark = pytest.mark.gui
SHARED_FORMATS = Path(__file__).resolve().parents[3] / "shared" / "formats"
YES, NO = QMessageBox.StandardButton.Yes, QMessageBox.StandardButton.No


class Answers(list):
    """The answers ("yes" / "no") ``QMessageBox.question`` gives, in order ("no" when none is left);
    ``asked`` records each question."""

    asked: list[str]


@pytest.fixture()
def answers(monkeypatch: pytest.MonkeyPatch) -> Answers:
    queue = Answers()
    queue.asked = []

    def question(_parent, title, text, *_a, **_k):  # noqa: ANN001, ANN202
        queue.asked.append(f"{title}: {text}")
        return YES if (queue.pop(0) if queue else "no") == "yes" else NO

    monkeypatch.setattr(QMessageBox, "question", staticmethod(question))
    return queue


@pytest.fixture()
def truth_project(tmp_path: Path, image_folder: Path, dsb_pairs) -> tuple[Path, dict[str, Path]]:
    """Two real images; each has its true mask with the three largest cells left out recorded as a
    model result (so the prediction and the expert masks differ)."""
    from efficell_app.project import Project

    masks = {i.name: m for i, m in dsb_pairs}
    folder = tmp_path / "proj"
    with Project.create(folder) as p:
        for image_id in p.add_folder(image_folder, "Experiment 12").added:
            truth = read_mask(masks[p.get_image(image_id).name])
            ids, counts = np.unique(truth[truth > 0], return_counts=True)
            pred = np.where(np.isin(truth, ids[np.argsort(-counts)[:3]]), 0, truth)
            p.record_result(image_id, pred, {"diameter_px": 17.5}, {"adapter": "previous"})
    return folder, masks


def _open(window, qtbot, folder: Path) -> None:
    window.seg_panel.auto_segment.setChecked(False)
    assert window.open_project(folder)
    qtbot.waitUntil(lambda: window.current_image is not None and window.viewer.has_image(), timeout=10_000)


def _export(window, qtbot, dest: Path, formats: tuple[str, ...] = ("xlsx",)) -> dict[str, pd.DataFrame]:
    dlg = window.open_export_dialog()
    qtbot.addWidget(dlg)
    dlg.set_formats(formats)
    dlg.destination.setText(str(dest))
    dlg.start()
    qtbot.waitUntil(lambda: not dlg.is_running(), timeout=60_000)
    assert not dlg.errors, dlg.errors
    xlsx = next(p for p in dlg.written if p.suffix == ".xlsx")
    dlg.close()
    return {name: pd.read_excel(xlsx, sheet_name=name) for name in ("Cells", "Images", "Settings")}


# ----------------------------------------------------------------------------- 1. train, then use at once


def test_a_trained_adapter_is_listed_at_once_and_segments(window, qtbot, truth_project, small_adapter: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The training dialog's run ends with an adapter in the project: the Model list and the Adapters
    panel show it at once, and segmenting with it from the panel works (the training itself is a
    stand-in here; test_training_dialog trains for real)."""
    from efficell_app import tasks
    from efficell_app.core.training import TrainProgress

    folder, masks = truth_project
    _open(window, qtbot, folder)
    project = window.session.project
    for rec in project.list_images():
        project.save_annotation(rec.id, read_mask(masks[rec.name]))

    def stand_in(project, request, *, cancel=None):  # noqa: ANN001, ANN202 - the shape of train_project_adapter
        yield tasks.TrainingStarted(None)
        info = project.add_adapter(small_adapter, name=request.name, training_images=["a.tif"],
                                   metrics={"validation": {"ap50": 0.71}})
        yield tasks.AdapterAdded(info, TrainProgress("done", step=3, metrics=info.metrics, seconds=1.0))

    monkeypatch.setattr(tasks, "train_project_adapter", stand_in)
    models_before = window.seg_panel.model_box.count()
    dlg = window.annotation.open_training()
    qtbot.addWidget(dlg)
    dlg.name.setText("lab adapter")
    with qtbot.waitSignal(dlg.adapter_added, timeout=30_000):
        dlg.start_button.click()
    # at once: no reopening, no restart
    assert window.seg_panel.model_box.count() == models_before + 2  # a line, then the project's adapters
    assert window.seg_panel.model_box.findText("lab adapter") >= 0
    panel = window.annotation.adapters_panel
    assert [panel.tree.topLevelItem(i).text(0) for i in range(panel.tree.topLevelItemCount())] == [
        "lab adapter\nAP@0.5 0.710 · trained on 1 image"]
    info = project.get_adapter("lab adapter")
    assert panel.selected_id() == info.id
    # segment with it, chosen in the segmentation panel
    dlg.close()
    assert window.seg_panel.select_model(str(info.path))
    image_id = window.current_image
    window.segment_scope("image")
    wait_run_done(qtbot, window)
    assert project.latest_result(image_id).identity["adapter_sha256"] == info.sha256
    # opening the project that is open already shows it again (it used to be refused as "already open")
    assert window.open_project(folder) and window.session.project is project
    assert window.seg_panel.model_box.findText("lab adapter") >= 0


# ----------------------------------------------------------------------------- 2. numbers follow the labels that count


def test_table_plot_and_counts_follow_the_annotation_and_survive_segment_all(window, qtbot, answers, truth_project,
                                                                             tmp_path: Path) -> None:
    folder, masks = truth_project
    _open(window, qtbot, folder)
    project, m = window.session.project, window.measurements
    image_id = window.current_image
    rec = project.get_image(image_id)
    pred = project.labels_for(image_id).labels
    truth = read_mask(masks[rec.name])
    qtbot.waitUntil(lambda: m.model.rowCount() == measured_cells(pred), timeout=20_000)

    # import the expert masks: the table, the plot, the count and the panel follow at once
    ctl = window.annotation.controller
    assert ctl.start("import", path=masks[rec.name])
    qtbot.waitUntil(lambda: project.load_annotation(image_id) is not None, timeout=10_000)
    want = measured_cells(truth)
    assert want > measured_cells(pred)
    qtbot.waitUntil(lambda: m.model.rowCount() == want, timeout=20_000)
    assert m.count.text() == f"{want} cells"
    assert window.project_panel.detail_of(image_id) == f"{want} cells"
    m.kind.setCurrentText("Scatter")
    assert len(m._scatter.data) == want
    ctl.mark_annotated()
    ctl.stop()
    assert window.project_panel.status_of(image_id) == "reviewed"

    # "Segment all": the reviewed image stays reviewed, its annotation keeps counting
    window.segment_scope("project")
    wait_run_done(qtbot, window)
    assert project.get_image(image_id).status == "reviewed"
    assert window.project_panel.status_of(image_id) == "reviewed"
    assert window.project_panel.detail_of(image_id) == f"{want} cells"
    assert project.latest_result(image_id).identity.get("adapter") != "previous"  # a new result was made
    window.show_image(image_id)
    qtbot.waitUntil(lambda: m.model.rowCount() == want and not window.session.helpers_running(), timeout=20_000)
    np.testing.assert_array_equal(window.viewer.labels(), truth)
    shown = m.frame()

    # what the window shows is what the export writes
    sheets = _export(window, qtbot, tmp_path / "out")
    cells = sheets["Cells"][sheets["Cells"]["image"] == rec.name].reset_index(drop=True)
    assert len(cells) == want
    np.testing.assert_allclose(cells["area_px"].to_numpy(float), shown["area_px"].to_numpy(float))
    row = sheets["Images"][sheets["Images"]["image"] == rec.name].iloc[0]
    assert row["cell_count"] == want and row["labels"].startswith("annotation") and row["status"] == "reviewed"


# ----------------------------------------------------------------------------- 3. z-stacks and time series


def test_z_stack_and_time_series_segmented_with_a_chosen_plane(window, qtbot, tmp_path: Path, dsb_pairs) -> None:
    folder = tmp_path / "stacks"
    folder.mkdir()
    plane = read_image(dsb_pairs[0][0]).data[0]
    zstack = np.stack([plane // 4, plane, plane // 2]).astype(np.uint16)  # plane 2 is the brightest
    tifffile.imwrite(folder / "zstack.tif", zstack, imagej=True, metadata={"axes": "ZYX"})
    tifffile.imwrite(folder / "movie.tif", np.stack([plane, plane[::-1], plane[:, ::-1], plane]).astype(np.uint16),
                     imagej=True, metadata={"axes": "TYX"})
    real = SHARED_FORMATS / "ome-tiff" / "TZ_nucleus.ome.tif"  # a real TZYX acquisition (BSD, see its README)
    if real.is_file():
        shutil.copy(real, folder / real.name)
    messages: list[str] = []
    window.statusBar().messageChanged.connect(messages.append)
    drop(window, folder)
    qtbot.waitUntil(lambda: window.planes_dialog is not None and window.planes_dialog.isVisible(), timeout=20_000)
    dlg = window.planes_dialog
    assert dlg.z_box.isVisible() and dlg.t_box.isVisible()
    assert dlg.z_max.isChecked()  # the maximum projection unless the user picks a plane
    dlg.t_point.setValue(2)  # time point 2 (1-based, as Fiji counts)
    dlg.accept()
    project = window.session.project
    n = 3 if real.is_file() else 2
    qtbot.waitUntil(lambda: len(project.list_images()) == n, timeout=30_000)
    wait_run_done(qtbot, window)
    recs = {r.name: r for r in project.list_images()}
    for rec in recs.values():
        assert rec.status == "segmented", rec.name
        assert (rec.planes.z, rec.planes.t) == ("max", 1)
        labels = project.labels_for(rec.id).labels
        assert labels.shape == (rec.height, rec.width)
        item = window.project_panel.tree.findItems(rec.name, Qt.MatchFlag.MatchStartsWith | Qt.MatchFlag.MatchRecursive)[0]
        assert item.text(0).startswith(f"{rec.name} (z max, t 2)\nsegmented · ")
    np.testing.assert_array_equal(project.read_image(recs["zstack.tif"].id).data[0], zstack.max(axis=0))
    np.testing.assert_array_equal(project.read_image(recs["movie.tif"].id).data[0], plane[::-1])
    problems = [window.problems.item(i).text() for i in range(window.problems.count())]
    assert problems == []
    assert not [t for t in messages if "--z" in t or "--t" in t]


def test_microscope_stacks_ask_every_axis_in_one_dialog(window, qtbot, formats_dir: Path) -> None:
    """Real vendor z-stacks and time series (ND2 TZ, CZI TZ, DV Z, and a two-position Micro-Manager
    time course), dropped together: one dialog knows every axis of every file (and scene), and the
    files are added with the chosen planes. Read in place (their licences keep them out of the repo)."""
    import nd2

    files = {"nd2/cluster.nd2": {"Z": 10, "T": 3}, "czi/CellDivision_T3_Z5_CH2_X240_Y170.czi": {"Z": 5, "T": 3},
             "dv/toxo.dv": {"Z": 17}, "ome-tiff/181003_multi_pos_time_course_1_MMStack.ome.tif": {"T": 10}}
    window.seg_panel.auto_segment.setChecked(False)
    messages: list[str] = []
    window.statusBar().messageChanged.connect(messages.append)
    drop(window, *(formats_dir / f for f in files))
    qtbot.waitUntil(lambda: window.planes_dialog is not None and window.planes_dialog.isVisible(), timeout=30_000)
    dlg = window.planes_dialog
    assert {p.name: s for p, s in dlg.stacks.items()} == {Path(f).name: s for f, s in files.items()}
    assert dlg.z_box.isVisible() and dlg.t_box.isVisible()
    assert dlg.z_plane.maximum() == 17 and dlg.t_point.maximum() == 10
    assert [window.problems.item(i).text() for i in range(window.problems.count())] == []  # asked, not a problem
    dlg.z_one.setChecked(True)
    dlg.z_plane.setValue(3)  # 1-based, as Fiji counts
    dlg.t_point.setValue(2)
    dlg.accept()
    project = window.session.project
    qtbot.waitUntil(lambda: len(project.list_images()) == 5, timeout=60_000)  # the time course has two positions
    wait_run_done(qtbot, window)
    recs = project.list_images()
    assert all((r.planes.z, r.planes.t) == (2, 1) for r in recs)
    cluster = next(r for r in recs if r.name == "cluster.nd2")
    np.testing.assert_array_equal(project.read_image(cluster.id).data, nd2.imread(formats_dir / "nd2/cluster.nd2")[1, 2])
    assert [window.problems.item(i).text() for i in range(window.problems.count())] == []
    assert not [t for t in messages if "--z" in t or "--t" in t]


def test_stacks_left_out_are_listed_without_command_line_options(window, qtbot, tmp_path: Path) -> None:
    folder = tmp_path / "left out"
    folder.mkdir()
    tifffile.imwrite(folder / "z.tif", np.random.default_rng(0).integers(0, 200, (4, 40, 40), np.uint16),
                     imagej=True, metadata={"axes": "ZYX"})
    drop(window, folder)
    qtbot.waitUntil(lambda: window.planes_dialog is not None and window.planes_dialog.isVisible(), timeout=20_000)
    window.planes_dialog.reject()
    problems = [window.problems.item(i).text() for i in range(window.problems.count())]
    assert len(problems) == 1 and "z.tif: 4 z-planes" in problems[0] and "--" not in problems[0]


# ----------------------------------------------------------------------------- 5. a new project in a new folder


def test_new_project_in_a_folder_typed_in(window, qtbot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PySide6.QtWidgets import QFileDialog

    monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: ""))  # no chooser
    dlg = window.new_project()
    assert dlg is not None and dlg.isVisible()
    dlg.location.setText(str(tmp_path / "projects"))  # does not exist yet either
    dlg.name.setText("Screen 7")
    assert "Creates the folder" in dlg.preview.text()
    dlg.buttons.button(dlg.buttons.StandardButton.Ok).click()
    project = window.session.project
    assert project is not None and project.root == tmp_path / "projects" / "Screen 7"
    assert (tmp_path / "projects" / "Screen 7").is_dir() and window.windowTitle().startswith("Screen 7")
    # an existing project is not made again: the dialog says to open it
    dlg = window.new_project()
    dlg.location.setText(str(tmp_path / "projects"))
    dlg.name.setText("Screen 7")
    assert not dlg.buttons.button(dlg.buttons.StandardButton.Ok).isEnabled() and "open it" in dlg.preview.text()
    dlg.reject()


# ----------------------------------------------------------------------------- 6. Esc, the brush, importing over an annotation


def _ten_images_added(window, qtbot, tmp_path: Path, dsb_pairs) -> None:  # noqa: ANN001
    """Ten real images dropped on the window, not segmented: a run over them lasts long enough to interrupt."""
    folder = tmp_path / "many"
    folder.mkdir()
    for k in range(5):
        for img, _ in dsb_pairs[:2]:
            shutil.copy(img, folder / f"{k}_{img.name}")
    window.seg_panel.auto_segment.setChecked(False)
    drop(window, folder)
    qtbot.waitUntil(lambda: window.session.project is not None and len(window.session.project.list_images()) == 10,
                    timeout=30_000)
    wait_run_done(qtbot, window)


def test_esc_asks_before_cancelling_a_run(window, qtbot, answers, tmp_path: Path, dsb_pairs) -> None:
    from PySide6.QtTest import QTest

    _ten_images_added(window, qtbot, tmp_path, dsb_pairs)
    finished: list[str] = []
    window.session.run_finished.connect(finished.append)
    window.segment_scope("project")
    answers.append("no")
    QTest.keyClick(window, Qt.Key.Key_Escape)
    assert len(answers.asked) == 1 and "Stop the segmentation" in answers.asked[0]
    assert window.session.is_running() and not finished  # "No": the run goes on
    answers.append("yes")
    QTest.keyClick(window, Qt.Key.Key_Escape)
    qtbot.waitUntil(lambda: bool(finished), timeout=60_000)
    assert "cancelled" in finished[0] and len(answers.asked) == 2


def test_quit_asks_while_a_run_is_going(window, qtbot, answers, tmp_path: Path, dsb_pairs) -> None:
    """The window's close button and File > Quit ask before they stop a run, as Esc does."""
    from PySide6.QtGui import QCloseEvent

    _ten_images_added(window, qtbot, tmp_path, dsb_pairs)
    assert window.running_work() == [] and window.confirm_quit() and not answers.asked  # nothing to stop: no question
    finished: list[str] = []
    window.session.run_finished.connect(finished.append)
    window.segment_scope("project")
    answers.append("no")
    window.quit()  # File > Quit
    assert len(answers.asked) == 1 and "Quit EffiCell?" in answers.asked[0] and "segmentation run" in answers.asked[0]
    assert window.isVisible() and window.session.is_running()
    answers.append("no")
    spontaneous = QCloseEvent()
    spontaneous.spontaneous = lambda: True  # the close button, as the window system sends it
    window.closeEvent(spontaneous)
    assert not spontaneous.isAccepted() and len(answers.asked) == 2 and window.session.is_running()
    window.session.cancel_run()
    qtbot.waitUntil(lambda: bool(finished), timeout=60_000)


def test_esc_in_the_training_dialog_asks_before_stopping_a_run(window, qtbot, answers, truth_project,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from PySide6.QtTest import QTest

    from efficell_app import tasks
    from efficell_app.core.errors import Cancelled

    folder, masks = truth_project
    _open(window, qtbot, folder)
    project = window.session.project
    for rec in project.list_images():
        project.save_annotation(rec.id, read_mask(masks[rec.name]))

    def long_run(project, request, *, cancel=None):  # noqa: ANN001, ANN202 - a run that lasts until cancelled
        yield tasks.TrainingStarted(None)
        while not cancel.cancelled:
            time.sleep(0.02)
        raise Cancelled("cancelled by the user")

    monkeypatch.setattr(tasks, "train_project_adapter", long_run)
    dlg = window.annotation.open_training()
    qtbot.addWidget(dlg)
    dlg.start_button.click()
    assert dlg.is_running()
    dlg.activateWindow()  # the user works in the dialog
    qtbot.waitUntil(lambda: QApplication.activeWindow() is dlg, timeout=5000)
    QTest.keyClick(dlg, Qt.Key.Key_Escape)  # "No" (no answer queued)
    assert len(answers.asked) == 1 and "Stop the training run" in answers.asked[0]
    assert dlg.isVisible() and dlg.is_running()
    answers.append("yes")
    QTest.keyClick(dlg, Qt.Key.Key_Escape)
    qtbot.waitUntil(lambda: not dlg.is_running() and not dlg.isVisible(), timeout=10_000)
    assert len(answers.asked) == 2


def test_no_tool_paints_until_one_is_picked_and_import_over_an_annotation_asks(window, qtbot, answers,
                                                                              truth_project) -> None:
    from test_annotation import click

    folder, masks = truth_project
    _open(window, qtbot, folder)
    window.viewer.fit()
    QApplication.processEvents()
    ctl = window.annotation.controller
    image_id = window.current_image
    assert ctl.start("empty")
    assert ctl.canvas.tool == "navigate" and window.annotation.panel.tool_buttons["navigate"].isChecked()
    click(window, 30, 30)  # the first click into the image: focus (and selection), no paint
    assert ctl.editor.labels.max() == 0 and ctl.editor.changes == 0
    ctl.panel.tool_buttons["brush"].click()
    click(window, 30, 30)
    assert ctl.editor.labels[30, 30] > 0
    ctl.stop()
    version = window.session.project.annotation_history(image_id)[0].version  # the brushed cell, saved

    # importing masks over it asks first; "No" keeps it
    assert not ctl.start("import", path=masks[window.session.project.get_image(image_id).name])
    assert len(answers.asked) == 1 and "already has an annotation" in answers.asked[0]
    assert window.session.project.annotation_history(image_id)[0].version == version
    answers.append("yes")
    assert ctl.start("import", path=masks[window.session.project.get_image(image_id).name])
    qtbot.waitUntil(lambda: window.session.project.annotation_history(image_id)[0].version == version + 1,
                    timeout=10_000)
    ctl.stop()
    replaced = window.session.project.annotation_history(image_id)[1]  # the brushed cell: kept for good
    assert replaced.version == version and replaced.note.startswith("kept: replaced by the imported masks")


# ----------------------------------------------------------------------------- 7. nothing clipped at the default size


def _text_fits(widget, text: str, width: int) -> bool:
    return widget.fontMetrics().horizontalAdvance(text) <= width


def test_nothing_clipped_at_the_default_window_size(qtbot, tmp_path: Path, dsb_pairs, small_adapter: Path) -> None:
    from efficell_app.gui.main_window import MainWindow
    from efficell_app.gui.settings import Preferences
    from efficell_app.project import Project

    folder = tmp_path / "Plate 2024-03-12 DAPI"
    folder.mkdir()
    names = []
    for k, (img, _mask) in enumerate(dsb_pairs[:2]):
        names.append(f"well_B{k:02d}_t003_z02_DAPI.tif")  # a lab's long file name
        shutil.copy(img, folder / names[-1])
    stack = tmp_path / "Live imaging"
    stack.mkdir()
    plane = read_image(dsb_pairs[0][0]).data[0]
    tifffile.imwrite(stack / "nuclei_t4_z5_GFP.tif", np.stack([np.stack([plane] * 5)] * 4), imagej=True,
                     metadata={"axes": "TZYX"})
    names.append("nuclei_t4_z5_GFP.tif")
    root = tmp_path / "a project folder with a long name" / "Screen of nuclei, March 2024"
    with Project.create(root) as p:
        added = p.add_folder(folder, folder.name).added
        added += p.add_folder(stack, stack.name, planes=PlaneChoice(z="max", t=1)).added
        for image_id in added:
            rec = p.get_image(image_id)
            p.record_result(image_id, read_mask(dsb_pairs[names.index(rec.name) % 2][1]), {}, {"adapter": "x"})
        p.add_adapter(small_adapter, name="nuclei adapter 2024-03-12 14:03")
    win = MainWindow(Preferences(device="cpu", threads=1, auto_segment=False), restore_state=False)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitUntil(lambda: win.docks["Annotate"].isVisible() or True, timeout=1000)
    QApplication.processEvents()
    assert (win.width(), win.height()) == (1400, 900)  # the default size holds every panel
    assert win.open_project(root)
    ids = win.project_panel.image_ids()
    win.session.request_cells(ids)  # every image measured: each row shows its cell count
    qtbot.waitUntil(lambda: all(i in win.session.measured for i in ids) and win.measurements.model.rowCount() > 0,
                    timeout=30_000)
    QApplication.processEvents()
    assert (win.width(), win.height()) == (1400, 900)

    tree = win.project_panel.tree
    for name in names:
        item = tree.findItems(name, Qt.MatchFlag.MatchStartsWith | Qt.MatchFlag.MatchRecursive)[0]
        assert " cells" in item.text(0).splitlines()[1]
        rect = tree.visualItemRect(item)
        room = rect.width() - tree.iconSize().width() - 12
        assert all(_text_fits(tree, line, room) for line in item.text(0).splitlines()), (item.text(0), room)
    table, model = win.measurements.table, win.measurements.model
    col = model.columns().index("image")
    assert _text_fits(table, names[0], table.columnWidth(col) - 8)
    adapters = win.annotation.adapters_panel.tree
    item = adapters.topLevelItem(0)
    assert item.text(0).startswith("nuclei adapter 2024-03-12 14:03\n")
    assert all(_text_fits(adapters, line, adapters.visualItemRect(item).width() - 8) for line in item.text(0).splitlines())
    combo = win.seg_panel.model_box
    win.seg_panel.select_model(str(win.session.project.get_adapter("nuclei adapter 2024-03-12 14:03").path))
    assert _text_fits(combo, combo.currentText(), combo.width() - 30)
    info = win.viewer.info  # the cursor read-out: two lines always there, wrapped inside the viewer
    assert info.height() >= 2 * info.fontMetrics().lineSpacing() and info.wordWrap()
    assert info.width() <= win.viewer.width()

    models = win.open_models_dialog()
    qtbot.addWidget(models)
    QApplication.processEvents()
    licence = models.table.item(0, 4).text()
    assert _text_fits(models.table, licence, models.table.columnWidth(4) - 8), licence
    assert models.table.horizontalHeader().length() <= models.table.viewport().width() + 2
    models.close()
    dlg = win.open_export_dialog()
    qtbot.addWidget(dlg)
    QApplication.processEvents()
    path = dlg.destination.text()
    if not _text_fits(dlg.destination, path, dlg.destination.width() - 10):  # a very long path: also in full below
        assert dlg.full_path.isVisible() and dlg.full_path.text().replace("\u200b", "") == path
        assert dlg.full_path.height() >= dlg.full_path.heightForWidth(dlg.full_path.width())
    dlg.close()
    win.session.close_project(emit=False)
    win.stop_background_work()


# ----------------------------------------------------------------------------- 8. export defaults and what it records


def test_export_defaults_and_what_the_files_record(window, qtbot, tmp_path: Path, dsb_pairs) -> None:
    from efficell_app.core.measure import MIN_OBJECT_PX
    from efficell_app.project import Project

    folder = tmp_path / "plate"
    folder.mkdir()
    img0, mask0 = dsb_pairs[0]
    tifffile.imwrite(folder / "calibrated.tif", read_image(img0).data[0], imagej=True,
                     resolution=(1 / 0.65, 1 / 0.65), metadata={"unit": "um"})
    shutil.copy(dsb_pairs[1][0], folder / "uncalibrated.tif")
    with Project.create(tmp_path / "proj") as p:
        for image_id in p.add_folder(folder, "plate").added:
            rec = p.get_image(image_id)
            src = mask0 if rec.name == "calibrated.tif" else dsb_pairs[1][1]
            labels = read_mask(src)
            labels[:2, :2] = labels.max() + 1  # a 4-pixel speck: below the minimum size
            p.record_result(image_id, labels, {"diameter_px": 18.25, "diameter_estimated": True}, {"adapter": "x"})
    _open(window, qtbot, tmp_path / "proj")
    m = window.measurements
    m.scope.setCurrentIndex(m.scope.findData("set"))  # the table shows the set ...
    qtbot.waitUntil(lambda: m.model.rowCount() > 0 and not window.session.helpers_running(), timeout=20_000)
    dlg = window.open_export_dialog()
    qtbot.addWidget(dlg)
    assert dlg.scope.currentData() == "set"  # ... so the export does too
    info = dlg.pixel_info.text()
    assert "0.65 µm (1 image)" in info and "1 image records none" in info and "pixels" in info
    dlg.close()
    sheets = _export(window, qtbot, tmp_path / "out")
    images = sheets["Images"].set_index("image")
    assert images.loc["calibrated.tif", "pixel_size_um"] == pytest.approx(0.65)
    assert images.loc["uncalibrated.tif", "pixel_size_um"] == "unknown"
    assert (images["diameter_px"] == 18.25).all() and (images["objects_below_min_size"] == 1).all()
    cells = sheets["Cells"]  # no speck among the cells (the calibrated image's areas are in µm²)
    assert (cells["area_px"].dropna() >= MIN_OBJECT_PX).all()
    assert (cells["area_um2"].dropna() >= MIN_OBJECT_PX * 0.65**2 - 1e-9).all()
    settings = dict(zip(sheets["Settings"]["setting"], sheets["Settings"]["value"]))
    keys = list(sheets["Settings"]["setting"])
    assert len(keys) == len(set(keys))
    assert "app_version" in settings and "exported_at" in settings
    assert not {"efficell_version", "exported"} & set(keys)
    assert int(settings["min_object_px"]) == MIN_OBJECT_PX


# ----------------------------------------------------------------------------- 9. the smaller ones


def test_compare_uses_the_image_selected_now(qtbot, truth_project, monkeypatch: pytest.MonkeyPatch) -> None:
    from efficell_app.gui.training import TrainingDialog
    from efficell_app.gui.training.compare import CompareDialog
    from efficell_app.project import Project

    monkeypatch.setattr(CompareDialog, "start", lambda self: None)  # which image, not the segmenting, is tested

    folder, _ = truth_project
    selected = [None]
    with Project.open(folder) as p:
        ids = [r.id for r in p.list_images()]
        dlg = TrainingDialog(p, encoder_weights=None, device="cpu", current_image=lambda: selected[0])
        qtbot.addWidget(dlg)
        selected[0] = ids[1]  # the user picks another image after opening the dialog
        assert dlg.current_image() == ids[1]
        dlg.new_adapter = type("Info", (), {"path": Path("x.safetensors")})()
        compare = dlg.compare()
        assert compare is not None and compare.image_id == ids[1]
        compare.done(0)


def test_threads_the_same_in_settings_and_status_bar_and_the_device_label_at_once(qtbot) -> None:
    from efficell_app.gui.dialogs.settings_dialog import SettingsDialog
    from efficell_app.gui.main_window import MainWindow
    from efficell_app.gui.settings import Preferences

    prefs = Preferences(device="cpu", threads=0)
    win = MainWindow(prefs, restore_state=False)
    qtbot.addWidget(win)
    n = prefs.effective_threads()
    # filled when the window is made, before torch is imported in the background
    assert win.device_label.text().startswith(f"CPU ({n} thread")
    qtbot.waitUntil(lambda: win._device_worker is not None and not win._device_worker.active, timeout=60_000)
    QApplication.processEvents()
    assert win.device_label.text().startswith(f"CPU ({n} thread")
    dlg = SettingsDialog(prefs)
    qtbot.addWidget(dlg)
    assert dlg.threads.specialValueText().startswith(f"automatic: {n} ")
    win.stop_background_work()


def test_problems_are_kept_in_the_project_and_the_last_project_reopens(qtbot, tmp_path: Path) -> None:
    from efficell_app.gui.main_window import MainWindow
    from efficell_app.gui.settings import Preferences

    prefs = Preferences(device="cpu", auto_segment=False)
    win = MainWindow(prefs, restore_state=False)
    qtbot.addWidget(win)
    win.session.create_project(tmp_path / "P1")
    win.show_problem("/data/x.tif: cannot be read")
    qtbot.waitUntil(lambda: win.session.project.list_problems() == ["/data/x.tif: cannot be read"], timeout=5000)
    win.close()
    again = MainWindow(prefs, restore_state=False)  # a restart
    qtbot.addWidget(again)
    assert again.reopen_last_project()
    assert again.session.project.root == tmp_path / "P1"
    assert [again.problems.item(i).text() for i in range(again.problems.count())] == ["/data/x.tif: cannot be read"]
    assert again.docks["Problems"].windowTitle() == "Problems (1)"
    again.show_problem("/data/x.tif: cannot be read")  # the same folder added again: listed once
    assert again.problems.count() == 1
    again.problems.clear_all()
    assert again.session.project.list_problems() == [] and again.problems.count() == 0
    again.close()


def test_find_moved_images_from_the_window(window, qtbot, tmp_path: Path, dsb_pairs) -> None:
    import os

    from efficell_app.project import Project

    raw = tmp_path / "raw"
    raw.mkdir()
    for img, _ in dsb_pairs[:2]:
        shutil.copy(img, raw / img.name)
    with Project.create(tmp_path / "P") as p:
        p.add_folder(raw, "exp")
    os.rename(raw, tmp_path / "moved")
    window.session.open_project(tmp_path / "P")
    assert len(window.session.project.missing_images()) == 2
    report = window.find_moved_images(tmp_path / "moved")
    assert len(report.relinked) == 2 and window.session.project.missing_images() == []
    assert "2 image(s) found again" in window.statusBar().currentMessage()


def test_reopened_project_lists_every_images_cell_count(window, tmp_path: Path, image_folder: Path) -> None:
    """On opening, each segmented or annotated image shows its count (before: only the one on screen)."""
    from efficell_app.project import Project

    with Project.create(tmp_path / "P") as p:
        ids = p.add_folder(image_folder, "exp").added
        run = p.start_run({"method": "threshold"}, {"encoder": "test"}, "exp")
        for k, i in enumerate(ids):
            rec = p.get_image(i)
            labels = np.zeros((rec.height, rec.width), np.int32)
            for j in range(k + 2):
                labels[2 + 5 * j:5 + 5 * j, 2:6] = j + 1
            p.record_result(i, labels, {}, {}, run_id=run)
        p.save_annotation(ids[0], np.ones((p.get_image(ids[0]).height, p.get_image(ids[0]).width), np.int32))
        assert p.stored_cell_counts() == {ids[0]: 1, **{i: k + 2 for k, i in enumerate(ids) if k}}
    window.session.open_project(tmp_path / "P")
    rows = window.project_panel._rows
    assert rows[ids[0]][2] == "1 cell"  # the annotation counts, not the result
    assert [rows[i][2] for i in ids[1:]] == [f"{k + 2} cells" for k in range(1, len(ids))]


def _menu_action(window, text: str):  # noqa: ANN001, ANN202
    for menu_action in window.menuBar().actions():
        for act in menu_action.menu().actions():
            if act.text().replace("&", "") == text:
                return act
    raise AssertionError(f"no menu item {text!r}")


def test_menu_items_reach_their_slots_without_qts_checked_flag(window, qtbot, tmp_path: Path, dsb_pairs,  # noqa: ANN001
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Clicked, a menu item's triggered(bool) passed False as the slot's first argument: Find moved images
    and Open sample project raised a TypeError and did nothing (tests had called the methods directly)."""
    import os

    from PySide6.QtWidgets import QFileDialog

    from efficell_app.project import Project

    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(dsb_pairs[0][0], raw / dsb_pairs[0][0].name)
    with Project.create(tmp_path / "P") as p:
        p.add_folder(raw, "exp")
    os.rename(raw, tmp_path / "moved")
    window.session.open_project(tmp_path / "P")
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: str(tmp_path / "moved")))
    _menu_action(window, "Find moved images…").trigger()
    assert window.session.project.missing_images() == []
    opened: list[object] = []
    monkeypatch.setattr(window.samples, "open", lambda dest=None: opened.append(dest))
    _menu_action(window, "Open sample project").trigger()
    assert opened == [None]


def test_the_window_and_the_training_dialog_open_within_a_small_screen(qtbot, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """On a 1366x768 laptop the window (1400x900) and the training dialog (760x820) opened past the screen's
    edge: the status bar's progress and Cancel, and the dialog's Start button, could not be reached."""
    from efficell_app.gui.main_window import MainWindow
    from efficell_app.gui.settings import Preferences
    from efficell_app.gui.training.dialog import TrainingDialog
    from efficell_app.project import Project

    from PySide6.QtGui import QGuiApplication

    # the offscreen test platform's nominal 800x800 screen stands in for a small physical one
    monkeypatch.setattr(QGuiApplication, "platformName", staticmethod(lambda: "xcb"))
    win = MainWindow(Preferences(device="cpu", auto_segment=False), restore_state=False)
    qtbot.addWidget(win)
    free = win.screen().availableGeometry()
    assert win.height() <= free.height()  # the status bar (progress, Cancel) on the screen
    with Project.create(tmp_path / "p") as p:
        dlg = TrainingDialog(p, parent=win)
        qtbot.addWidget(dlg)
        assert dlg.height() <= free.height()  # its Start button too
        dlg.close()


def test_actions_with_nothing_to_act_on_say_so(window) -> None:  # noqa: ANN001
    """Ctrl+M, Undo, Stop annotating and Cancel the run did nothing and said nothing without an annotation
    or a run: a first-time user could not tell what was missing."""
    ctl = window.annotation.controller
    for action in (ctl.mark_annotated, ctl.undo, ctl.stop):
        ctl.panel.status.setText("")
        action()
        assert "Not annotating" in ctl.panel.status.text()
    assert window.confirm_cancel_run() is False
    assert "No segmentation run" in window.statusBar().currentMessage()
