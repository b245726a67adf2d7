"""Take the annotate-and-train screenshots of the user guide from the real widgets.

    python docs/make_annotation_screenshots.py [--out docs/images] [--data tests/data] [--minutes 2]

Builds a throw-away project from the bundled test images, opens the real main window with
the annotation tools installed, imports reference masks (the "Import masks" workflow),
edits them with the tools, trains an adapter through the training dialog (a real run in
its background process), ranks the remaining images ("annotate next") and saves PNGs.
Without the built-in model installed (a development checkout) the encoder runs with
random weights: the widgets are real but the numbers are not meaningful, and the script
says so.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("screenshots")


def _pump(app, cond, timeout: float = 300.0) -> None:
    t0 = time.monotonic()
    while not cond():
        app.processEvents()
        time.sleep(0.01)
        if time.monotonic() - t0 > timeout:
            raise TimeoutError("the app did not reach the expected state in time")
    for _ in range(5):
        app.processEvents()


def _save(widget, path: Path) -> None:
    widget.grab().save(str(path))
    log.info("wrote %s", path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    ap.add_argument("--data", type=Path, default=ROOT / "tests" / "data")
    ap.add_argument("--minutes", type=float, default=2.0, help="training budget for the screenshot run")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    work = Path(tempfile.mkdtemp(prefix="efficell_annot_shots_"))
    os.environ["EFFICELL_HOME"] = str(work / "home")
    os.environ["EFFICELL_NO_WELCOME"] = "1"  # the first-start welcome dialog is not part of these pictures
    args.out.mkdir(parents=True, exist_ok=True)

    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(["efficell"])
    from efficell_app.core.pipeline import default_adapter_path
    from efficell_app.gui.main_window import MainWindow
    from efficell_app.gui.settings import Preferences
    from efficell_app.project import Project

    nuclei = work / "Nuclei 2024-03-12"
    nuclei.mkdir(parents=True)
    src = args.data / "dsb2018_fluo"
    for p in sorted((src / "images").glob("*.tif")):
        shutil.copy(p, nuclei / p.name)
    have_model = default_adapter_path().exists()
    if not have_model:
        log.warning("built-in model not installed: training and ranking use a random encoder (numbers not meaningful)")
    folder = work / "Annotation project"
    phase = work / "Phase contrast"
    phase.mkdir()
    for p in sorted((args.data / "usiigaci_phase" / "images").glob("*.tif")):
        shutil.copy(p, phase / p.name)
    with Project.create(folder, name="Nuclei screen") as p:
        p.add_folder(nuclei, "Nuclei 2024-03-12")
        p.add_folder(phase, "Phase contrast")

    prefs = Preferences(device="cpu", threads=2, auto_segment=False)
    win = MainWindow(prefs, restore_state=False)
    if not have_model:
        win.session.encoder_weights = None
        win.seg_panel.auto_diameter.setChecked(False)  # a random model cannot estimate cell size
        win.seg_panel.diameter.setValue(20.0)
    tools = win.annotation
    ctl = tools.controller
    win.show()  # at its default size (1400 x 900): the guide shows what a user sees first
    assert win.open_project(folder)
    _pump(app, lambda: win.viewer.has_image())
    project = win.session.project
    ids = win.project_panel.image_ids()

    # Annotate three images: import their reference masks, correct one with the tools.
    masks = {p.name: p for p in (src / "masks").glob("*.tif")}
    for image_id in (ids[1], ids[2], ids[0]):  # the last one stays open for the screenshot
        win.project_panel.select_image(image_id)
        win.show_image(image_id)
        _pump(app, lambda i=image_id: win.current_image == i)
        ctl.start("import", path=masks[project.get_image(image_id).name])
        ctl.mark_annotated()
    ed = ctl.editor
    import numpy as np

    ids_, counts = np.unique(ed.labels[ed.labels > 0], return_counts=True)
    big = int(ids_[np.argmax(counts)])
    ys, xs = np.nonzero(ed.labels == big)
    ed.split(big, [(int(ys.mean()), int(xs.min()) - 2), (int(ys.mean()), int(xs.max()) + 2)])
    ctl.set_tool("brush")
    ed.brush(ed.new_id(), [(20, 20), (28, 40), (24, 60)], 5)
    win.docks["Annotate"].raise_()
    win.viewer.fit()
    ctl.save(wait=True)
    t_saved = time.monotonic()  # the save's event reaches the window on a later turn of the event loop
    _pump(app, lambda: time.monotonic() - t_saved > 1.0 and not win.session.helpers_running()
          and win.current_image in win.session.measured)
    _save(win, args.out / "annotate_tools.png")
    ctl.stop()

    # Train through the dialog (a real run in its own process).
    dlg = tools.open_training()
    dlg.minutes.setValue(args.minutes)
    dlg.name.setText("nuclei lab v1")
    dlg.threads = 2
    if not have_model:
        dlg.config_overrides = {"target_diameter": 20.0, "batch_size": 2, "crop": 128}
    dlg.resize(760, 860)
    dlg.start_button.click()
    _pump(app, lambda: len(dlg._loss[0]) >= 8 or not dlg.is_running(), timeout=600)
    _save(dlg, args.out / "training_running.png")
    _pump(app, lambda: not dlg.is_running(), timeout=900)
    _save(dlg, args.out / "training_done.png")
    if dlg.new_adapter is None:
        log.error("training did not finish: %s", dlg.phase.text())
        return 1
    # listed at once in the Model list and the Adapters panel (no reopening)
    win.seg_panel.select_model(str(dlg.new_adapter.path))
    win.docks["Adapters"].raise_()
    tools.adapters_panel.select(dlg.new_adapter.id)
    adock = win.docks["Adapters"]
    adock.setFloating(True)
    adock.resize(640, 280)
    _pump(app, lambda: True)
    _save(adock, args.out / "adapters_panel.png")
    adock.setFloating(False)
    if have_model:
        cmp = dlg.compare()
        _pump(app, lambda: len(cmp.results) == 2, timeout=300)
        _save(cmp, args.out / "compare_adapters.png")
        cmp.close()
    dlg.close()

    # Annotate next: rank the images not annotated yet.
    sug = tools.open_suggestions()
    _pump(app, lambda: sug.handle is None or not sug.handle.active, timeout=600)
    _save(sug, args.out / "annotate_next.png")
    sug.close()
    win.close()
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
