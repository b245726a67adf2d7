"""Issue 18, case 5: text that a spreadsheet would run as a formula is escaped the OWASP way
(a leading apostrophe) in every text cell and header of CSV and xlsx exports; numbers stay numbers.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from openpyxl import load_workbook

from efficell_app.core import export
from efficell_app.project import Project
from efficell_app.tasks.export import export_project

HOSTILE = ['=HYPERLINK("http://evil.example","click")', "+1+2", "-2+3", "@SUM(1,1)", "\t=1+1", "\r=1+1"]
DANGEROUS_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_texts(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


def _assert_csv_safe(path: Path, numeric: set[str]) -> None:
    header, rows = _csv_texts(path)
    for h in header:
        assert not h.startswith(DANGEROUS_START), (path.name, h)
    for row in rows:
        for col, v in zip(header, row):
            if col in numeric and v:
                float(v)  # a number written as a number (a negative one starts with '-')
            else:
                assert not v.startswith(DANGEROUS_START), (path.name, col, v)


def _assert_xlsx_safe(path: Path) -> list[str]:
    texts = []
    wb = load_workbook(path)
    for ws in wb.worksheets:
        for row in ws.iter_rows():
            for cell in row:
                assert cell.data_type != "f", (ws.title, cell.coordinate, cell.value)
                if isinstance(cell.value, str):
                    assert not cell.value.startswith(DANGEROUS_START), (ws.title, cell.coordinate, cell.value)
                    texts.append(cell.value)
    return texts


def test_neutralise_formula_is_owasp() -> None:
    for text in HOSTILE:
        assert export.neutralise_formula(text) == "'" + text
    for text in ("cells.tif", "DAPI", "", "a=b", "'=quoted already"):
        assert export.neutralise_formula(text) == text


def test_csv_and_xlsx_escape_text_cells_and_headers(tmp_path: Path) -> None:
    cells = pd.DataFrame({"image": HOSTILE, "cell_id": range(1, 7), "orientation_deg": [-45.0, 3, -1e-3, 0, 1, -2],
                          "=cmd|' /C calc'!A0_mean": np.arange(6, dtype=float)})
    images = pd.DataFrame({"image": ["-x.tif"], "+count": [3]})
    settings = {"set": HOSTILE[0], "@key": "-value"}
    out = export.write_csv(cells, tmp_path / "m.csv", settings, images)
    _assert_csv_safe(out, {"cell_id", "orientation_deg", "'=cmd|' /C calc'!A0_mean"})
    _assert_csv_safe(export.companion_paths(out)[0], {"'+count"})
    header, rows = _csv_texts(out)
    assert header[-1] == "'=cmd|' /C calc'!A0_mean" and [r[0] for r in rows] == ["'" + t for t in HOSTILE]
    assert [float(r[2]) for r in rows] == [-45.0, 3, -1e-3, 0, 1, -2]

    xlsx = export.write_xlsx(cells, images, settings, tmp_path / "m.xlsx")
    texts = _assert_xlsx_safe(xlsx)
    assert "'" + HOSTILE[0] in texts and "'=cmd|' /C calc'!A0_mean" in texts and "'@key" in texts
    wb = load_workbook(xlsx)
    assert [c.value for c in wb["Cells"]["C"]][1:] == [-45.0, 3, -1e-3, 0, 1, -2]  # numbers stay numbers


def test_project_export_escapes_a_hostile_set_name(tmp_path: Path, dsb_pairs) -> None:  # noqa: ANN001
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(dsb_pairs[0][0], src / "@SUM(1,1).tif")
    shutil.copy(dsb_pairs[1][0], src / "-2+3.tif")
    with Project.create(tmp_path / "P") as p:
        for i in p.add_folder(src, HOSTILE[0]).added:
            rec = p.get_image(i)
            lab = np.zeros((rec.height, rec.width), np.int32)
            lab[2:9, 2:9] = 1
            p.record_result(i, lab, {}, {})
        for fmt in ("csv", "xlsx"):
            report = export_project(p, tmp_path / f"t.{fmt}", source="auto")
            assert report.n_images == 2 and not report.errors
    _assert_csv_safe(tmp_path / "t.csv", set(pd.read_csv(tmp_path / "t.csv").select_dtypes("number").columns))
    texts = _assert_xlsx_safe(tmp_path / "t.xlsx")
    assert "'" + HOSTILE[0] in texts and "'@SUM(1,1).tif" in texts and "'-2+3.tif" in texts


@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_measure_command_escapes_channel_names(tmp_path: Path, dsb_pairs, fmt: str) -> None:  # noqa: ANN001
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    shutil.copy(dsb_pairs[0][0], images / "=a.tif")
    tifffile.imwrite(masks / "=a.tif", tifffile.imread(dsb_pairs[0][1]))
    names = "=1+1"  # one channel, named like a formula (as OME metadata may name it)
    out = tmp_path / f"m.{fmt}"
    proc = subprocess.run([sys.executable, "-m", "efficell_app", "measure", "--images", str(images), "--masks",
                           str(masks), "--out", str(out), "--channel-names", names], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    if fmt == "csv":
        numeric = set(pd.read_csv(out).select_dtypes("number").columns)
        _assert_csv_safe(out, numeric)
        header, _ = _csv_texts(out)
        assert "'=1+1_mean" in header
    else:
        texts = _assert_xlsx_safe(out)
        assert "'=1+1_mean" in texts and "'=a.tif" in texts
