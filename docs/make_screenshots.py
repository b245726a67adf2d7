"""Take the user guide's screenshots from the real app (run again whenever the GUI changes).

    python docs/make_screenshots.py [--out docs/images] [--data tests/data]

Builds a throw-away project from the bundled test images, drives the real main window
(drop a folder, segment, select a cell, open each dialog) and saves PNGs. It segments
with the built-in model; if that is not installed (a development checkout before the
model is trained) the reference masks shipped with the test images are recorded as the
results instead, and the script says so.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("screenshots")


def _pump(app, cond, timeout: float = 120.0) -> None:
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
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    work = Path(tempfile.mkdtemp(prefix="efficell_shots_"))
    os.environ["EFFICELL_HOME"] = str(work / "home")  # default settings, no recent projects
    os.environ["EFFICELL_NO_WELCOME"] = "1"  # the first-start welcome dialog is not part of these pictures
    args.out.mkdir(parents=True, exist_ok=True)

    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(["efficell"])
    from efficell_app.core.pipeline import default_adapter_path
    from efficell_app.gui.main_window import MainWindow
    from efficell_app.gui.settings import Preferences

    # A lab's folder: fluorescence nuclei plus one damaged file and a note.
    folder = work / "Nuclei 2024-03-12"
    folder.mkdir(parents=True)
    pairs = sorted((args.data / "dsb2018_fluo" / "images").glob("*.tif"))
    for p in pairs:
        shutil.copy(p, folder / p.name)
    (folder / "well_B07.tif").write_bytes(b"II*\x00" + b"\x00" * 64)  # truncated TIFF
    phase = work / "Phase contrast"
    phase.mkdir()
    for p in sorted((args.data / "usiigaci_phase" / "images").glob("*.tif")):
        shutil.copy(p, phase / p.name)

    # A time-lapse z-stack (TZYX) made from one of the images: EffiCell asks which plane to use.
    import numpy as np
    import tifffile

    from efficell_app.core.images import read_image

    stacks = work / "Live imaging"
    stacks.mkdir()
    plane = read_image(pairs[0]).data[0].astype(np.uint16)
    movie = np.stack([np.stack([plane // (abs(z - 2) + 1) for z in range(5)]) for _ in range(4)])
    tifffile.imwrite(stacks / "nuclei_t4_z5.tif", movie, imagej=True, metadata={"axes": "TZYX"})

    have_model = default_adapter_path().exists()
    prefs = Preferences(device="auto", auto_segment=have_model)
    win = MainWindow(prefs, restore_state=False)
    win.show()  # at its default size (1400 x 900): nothing in the pictures may be cut off there
    _pump(app, lambda: win.docks["Annotate"].isVisible())
    dlg = win.new_project()
    dlg.location.setText(str(work / "EffiCell projects"))
    dlg.name.setText("Nuclei screen")
    _pump(app, lambda: True)
    _save(dlg, args.out / "new_project_dialog.png")
    dlg.reject()
    win.session.create_project(work / "Screenshots project", name="Nuclei screen")
    win.add_paths([folder])
    project = win.session.project
    _pump(app, lambda: not win.session.helpers_running() and len(project.list_images()) == len(pairs))
    win.add_paths([phase])
    _pump(app, lambda: not win.session.helpers_running() and len(project.list_images()) == len(pairs) + 2)
    # A z-stack time series: the plane dialog, then the image segmented at the chosen plane.
    win.add_paths([stacks])
    _pump(app, lambda: win.planes_dialog is not None and win.planes_dialog.isVisible())
    planes = win.planes_dialog
    planes.t_point.setValue(2)
    _pump(app, lambda: True)
    _save(planes, args.out / "planes_dialog.png")
    planes.accept()
    _pump(app, lambda: not win.session.helpers_running() and len(project.list_images()) == len(pairs) + 3)
    if have_model:
        _pump(app, lambda: not win.session.is_running() and not win.session.pending_segment, timeout=600)
    else:
        log.warning("built-in model not installed: recording the reference masks as results for the pictures")
        from efficell_app.core.images import read_mask

        for rec in project.list_images():
            if rec.path.parent not in (folder, phase):
                continue  # the z-stack has no reference mask
            sub = "dsb2018_fluo" if rec.path.parent == folder else "usiigaci_phase"
            labels = read_mask(args.data / sub / "masks" / rec.name)
            project.record_result(rec.id, labels, {"source": "reference mask"}, {"adapter": "reference"})
            win.project_panel.set_status(rec.id, "segmented", f"{int(labels.max())} cells")
    nuclei = project.list_images(folder.name)
    first = max(nuclei, key=lambda r: int(project.labels_for(r.id).labels.max()) if project.labels_for(r.id) else 0)
    win.project_panel.select_image(first.id)
    win.show_image(first.id)
    _pump(app, lambda: first.id in win.session.measured and not win.session.helpers_running()
          and win.device_label.text().startswith(("CPU", "GPU")))
    labels = win.viewer.labels()
    target = int(labels[labels.shape[0] // 2, labels.shape[1] // 2]) or int(labels.max()) // 2
    win.viewer.select_cell(target)
    win.measurements.select_cell(target, first.id)
    win.viewer.opacity.setValue(45)
    _pump(app, lambda: True)
    _save(win, args.out / "main_window.png")

    win.viewer.overlay_box.setCurrentText("Outline")
    win.viewer.opacity.setValue(90)
    win.viewer.view.setRange(xRange=(0, labels.shape[1] * 0.45), yRange=(0, labels.shape[0] * 0.45), padding=0)
    _pump(app, lambda: True)
    _save(win.viewer, args.out / "viewer_outlines.png")
    win.viewer.overlay_box.setCurrentText("Fill")
    win.viewer.fit()

    m = win.measurements
    m.tabs.setCurrentIndex(1)
    m.kind.setCurrentText("Scatter")
    _pump(app, lambda: True)
    _save(win.docks["Measurements"], args.out / "measurements_plot.png")
    m.tabs.setCurrentIndex(2)
    m.scope.setCurrentIndex(m.scope.findData("set"))
    _pump(app, lambda: not win.session.helpers_running())
    _save(win.docks["Measurements"], args.out / "measurements_summary.png")
    m.scope.setCurrentIndex(0)
    m.tabs.setCurrentIndex(0)

    win.docks["Problems"].raise_()
    _pump(app, lambda: True)
    _save(win.docks["Problems"], args.out / "problems.png")
    win.docks["Measurements"].raise_()


    dlg = win.open_export_dialog()
    dlg.set_formats(("xlsx", "tiff", "roi"))
    dlg.scope.setCurrentIndex(dlg.scope.findData("set"))
    dlg.destination.setText(str(work / "exports"))
    dlg.start()
    _pump(app, lambda: not dlg.is_running())
    _save(dlg, args.out / "export_dialog.png")
    dlg.close()

    models = win.open_models_dialog()
    _pump(app, lambda: True)
    _save(models, args.out / "models_dialog.png")
    models.close()
    settings = win.open_settings_dialog()
    _pump(app, lambda: True)
    _save(settings, args.out / "settings_dialog.png")
    settings.close()

    win.close()
    app.processEvents()
    shutil.rmtree(work, ignore_errors=True)
    del Qt
    return 0


if __name__ == "__main__":
    sys.exit(main())
