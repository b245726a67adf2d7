"""Dropping a lab's folder of microscope files on the window: every scene becomes an image of the
project, and each file or scene that cannot be read is in Problems with its reason."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from gui_helpers import drop

pytestmark = pytest.mark.gui


def test_drop_folder_of_microscope_files(qtbot, window, formats_dir: Path, formats_expected: dict, tmp_path: Path) -> None:  # noqa: ANN001
    window.seg_panel.auto_segment.setChecked(False)
    folder = tmp_path / "Lab folder"
    folder.mkdir()
    # single-plane files open without a z/t choice; the stacks need one (the window asks for it)
    names = ["czi/WellD6-7_S2.czi", "czi/DAPI_GFP.czi", "nd2/example-multichannel.nd2", "oib/test.oib",
             "ome-tiff/s_1_t_1_c_1_z_1.ome.tiff", "lif/LeicaLASX_wavelength-sweep_example.lif", "nd2/example-zstack.nd2"]
    for name in names:
        shutil.copy(formats_dir / name, folder / Path(name).name)
    drop(window, folder)
    qtbot.waitUntil(lambda: window.session.project is not None, timeout=10_000)
    project = window.session.project
    qtbot.waitUntil(lambda: window.planes_dialog is not None and window.planes_dialog.isVisible(), timeout=30_000)
    assert {p.name: s for p, s in window.planes_dialog.stacks.items()} == {"example-zstack.nd2": {"Z": 11}}
    window.planes_dialog.reject()  # left out: listed under Problems with its planes
    qtbot.waitUntil(lambda: window.problems.count() >= 4, timeout=30_000)
    recs = project.list_images()
    assert sorted(r.name for r in recs) == sorted([
        "WellD6-7_S2.czi [D6]", "WellD6-7_S2.czi [D7]", "DAPI_GFP.czi", "example-multichannel.nd2", "test.oib",
        "s_1_t_1_c_1_z_1.ome.tiff"])
    problems = [window.problems.item(i).text() for i in range(window.problems.count())]
    lambda_scans = [p for p in problems if "LeicaLASX_wavelength-sweep_example.lif [" in p]
    assert len(lambda_scans) == 3 and all("lambda" in p and "not supported" in p for p in lambda_scans), problems
    assert any("example-zstack.nd2" in p and "11 z-planes" in p for p in problems), problems
    # the viewer shows a scene of its own: the second well, 440 x 544, as the file's scene holds it
    well = next(r for r in recs if r.name == "WellD6-7_S2.czi [D7]")
    assert window.project_panel._items[well.id].text(0).split("\n")[0] == "WellD6-7_S2.czi [D7]"  # names the scene
    window.project_panel.select_image(well.id)
    window.show_image(well.id)
    assert window.current_image == well.id
    shown = window.viewer.rendered_image()
    assert shown is not None and shown.shape[:2] in ((440, 544), (544, 440))  # pyqtgraph keeps (x, y) order
    window.grab().save(str(tmp_path / "window.png"))
