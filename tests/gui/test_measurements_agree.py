"""The table, the plot, the .xlsx, the CSV and ``efficell measure`` agree cell by cell (one measuring path,
one pixel-size rule), for a set whose images have different pixel sizes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from gui_helpers import measured_cells

from efficell_app.core.images import read_image, read_mask

pytestmark = pytest.mark.gui
PIXEL_SIZES = (0.5, 0.25)  # µm, one per image, recorded in the files' ImageJ metadata


@pytest.fixture()
def mixed_project(tmp_path: Path, dsb_pairs) -> tuple[Path, Path, Path]:
    """A project of two images with different pixel sizes, their ground truth recorded as results."""
    from efficell_app.project import Project

    images, masks = tmp_path / "plate", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for (img, mask), px in zip(dsb_pairs[:2], PIXEL_SIZES):
        data = read_image(img).data[0]
        tifffile.imwrite(images / img.name, data, imagej=True, resolution=(1 / px, 1 / px), metadata={"unit": "um"})
        tifffile.imwrite(masks / img.name, read_mask(mask).astype(np.uint16))
    folder = tmp_path / "proj"
    with Project.create(folder) as p:
        for image_id in p.add_folder(images, "plate").added:
            rec = p.get_image(image_id)
            p.record_result(image_id, read_mask(masks / rec.name), {"test": True}, {"encoder": "truth"})
    return folder, images, masks


def _same(a: pd.Series, b: pd.Series, what: str) -> None:
    if pd.api.types.is_numeric_dtype(a) and not pd.api.types.is_bool_dtype(a):
        np.testing.assert_allclose(a.to_numpy(float), b.to_numpy(float), rtol=1e-12, atol=0, equal_nan=True,
                                   err_msg=what)
    else:
        assert [str(v) for v in a] == [str(v) for v in b], what


def test_table_plot_xlsx_csv_and_cli_agree_on_a_set_with_mixed_pixel_sizes(qtbot, window, mixed_project,
                                                                          tmp_path: Path) -> None:
    folder, images, masks = mixed_project
    window.seg_panel.auto_segment.setChecked(False)
    assert window.open_project(folder)
    project = window.session.project
    recs = project.list_images()
    assert sorted(r.pixel_size_um for r in recs) == sorted(PIXEL_SIZES)
    window.measurements.scope.setCurrentIndex(window.measurements.scope.findData("set"))
    n_cells = sum(measured_cells(project.labels_for(r.id).labels) for r in recs)
    qtbot.waitUntil(lambda: window.measurements.model.rowCount() == n_cells, timeout=30_000)
    table = window.measurements.frame()
    window.measurements.tabs.setCurrentIndex(2)  # "Per image"
    qtbot.waitUntil(lambda: window.measurements.summary_model.rowCount() == 2, timeout=10_000)
    summary = window.measurements.summary_model.frame()
    assert "area_um2" in table.columns and table["area_um2"].notna().all()

    # the plot draws the table's numbers
    window.measurements.kind.setCurrentText("Scatter")
    window.measurements.x_col.setCurrentText("area_um2")
    np.testing.assert_array_equal(window.measurements._scatter.data["x"], table["area_um2"].to_numpy(float))

    # export the set with the dialog as it opens (no pixel size typed in): .xlsx and .csv
    dlg = window.open_export_dialog()
    qtbot.addWidget(dlg)
    dlg.scope.setCurrentIndex(dlg.scope.findData("set"))
    dlg.set_formats(("xlsx", "csv"))
    dlg.destination.setText(str(tmp_path / "out"))
    dlg.start()
    qtbot.waitUntil(lambda: not dlg.is_running(), timeout=60_000)
    assert not dlg.errors, dlg.errors
    xlsx = next(p for p in dlg.written if p.suffix == ".xlsx")
    csv = next(p for p in dlg.written if p.suffix == ".csv" and not p.stem.endswith("_images"))
    sheets = {name: pd.read_excel(xlsx, sheet_name=name) for name in ("Cells", "Images")}
    from_csv = pd.read_csv(csv, comment="#")

    shown = [c for c in table.columns if c != "image_id"]
    assert len(sheets["Cells"]) == len(from_csv) == len(table) == n_cells
    for col in shown:  # every column of the table, cell by cell
        _same(table[col], sheets["Cells"][col], f"xlsx Cells/{col}")
        _same(table[col], from_csv[col], f"csv/{col}")
    for col in [c for c in summary.columns if c != "image_id"]:
        _same(summary[col], sheets["Images"][col], f"xlsx Images/{col}")
    assert sorted(sheets["Images"]["pixel_size_um"]) == sorted(PIXEL_SIZES)

    # `efficell measure` on the same files and masks gives the same cells
    from efficell_app.cli import main

    out = tmp_path / "cli.xlsx"
    assert main(["measure", "--images", str(images), "--masks", str(masks), "--out", str(out)]) == 0
    cli = pd.read_excel(out, sheet_name="Cells")
    by_image = {name: df.reset_index(drop=True) for name, df in table.groupby("image", sort=False)}
    for name, df in cli.groupby("image", sort=False):
        for col in shown:
            _same(by_image[name][col], df[col].reset_index(drop=True), f"efficell measure/{name}/{col}")
