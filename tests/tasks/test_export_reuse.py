"""An export writes the measurements the window already shows when they come from the labels that
count with the same calibration, and measures again (the same way) when they do not."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd

from efficell_app.core.images import read_mask
from efficell_app.project import MeasureSettings, Project
from efficell_app.project.measuring import measure_project_image
from efficell_app.tasks import export_events


def _export(p: Project, ids: list[int], out: Path, **kw) -> pd.DataFrame:  # noqa: ANN003
    for _ in export_events(p, [out], image_ids=ids, **kw):
        pass
    return pd.read_excel(out, sheet_name="Cells")


def test_export_reuses_valid_measurements_only(tmp_path: Path, dsb_pairs) -> None:
    with Project.create(tmp_path / "proj") as p:
        ids = p.add_files([img for img, _ in dsb_pairs[:2]], "plate").added
        for i, (_, mask) in zip(ids, dsb_pairs[:2]):
            p.record_result(i, read_mask(mask), {}, {"encoder": "truth"})
        shown = {i: measure_project_image(p, i, MeasureSettings()) for i in ids}
        fresh = _export(p, ids, tmp_path / "fresh.xlsx")
        # what the table holds is what is written: mark the table's numbers to see them in the file
        marked = {i: replace(m, cells=m.cells.assign(area_px=-1.0)) for i, m in shown.items()}
        reused = _export(p, ids, tmp_path / "reused.xlsx", measured=marked)
        assert (reused["area_px"] == -1.0).all()
        # an annotation saved since: the table's numbers are stale for that image and measured again
        p.save_annotation(ids[0], read_mask(dsb_pairs[0][1]))
        again = _export(p, ids, tmp_path / "again.xlsx", measured=marked)
        first = again["image"] == p.get_image(ids[0]).name
        assert (again.loc[~first, "area_px"] == -1.0).all()
        pd.testing.assert_series_equal(again.loc[first, "area_px"].reset_index(drop=True),
                                       fresh.loc[fresh["image"] == p.get_image(ids[0]).name, "area_px"]
                                       .reset_index(drop=True))
        # another pixel size typed in for the export: measured again with it
        other = _export(p, ids, tmp_path / "other.xlsx", measured=marked, pixel_size_um=0.5)
        assert "area_um2" in other and (other["area_um2"] > 0).all()
