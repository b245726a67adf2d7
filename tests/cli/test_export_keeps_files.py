"""``efficell export`` and the window's export never replace a file without being told to, and never
write two images into one file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from efficell_app.cli import main
from efficell_app.project import Project
from efficell_app.tasks.export import ExportOptions, existing_exports, export_targets


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    """Two sets, each holding an image named img.tif (two folders of one experiment), segmented."""
    root = tmp_path / "proj"
    p = Project.create(root)
    try:
        for k, name in enumerate(("day1", "day2")):
            folder = tmp_path / name
            folder.mkdir()
            img = np.zeros((48, 48), np.uint8)
            img[5 + k:15, 5:15] = img[30:40, 25 + k:38] = 200
            tifffile.imwrite(folder / "img.tif", img)
            (image_id,) = p.add_folder(folder, name).added
            run = p.start_run({"method": "threshold"}, {"encoder": "test"}, name)
            p.record_result(image_id, (img > 100).astype(np.int32), {"method": "threshold"}, {"encoder": "test"},
                            run_id=run)
    finally:
        p.close()
    return root


def test_export_refuses_to_replace_without_overwrite(project: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    assert main(["export", "--project", str(project), "--out", str(tmp_path / "new" / "folder" / "c.xlsx")]) == 0
    assert (tmp_path / "new" / "folder" / "c.xlsx").is_file()  # a folder not there yet is made, as segment does
    out = tmp_path / "exp" / "cells.xlsx"
    out.parent.mkdir()
    out.write_bytes(b"my own workbook, with notes")
    cmd = ["export", "--project", str(project), "--out", str(out), "--files", "tiff"]
    assert main(cmd) == 1
    err = capsys.readouterr().err
    assert f"{out}: already exists" in err and "--overwrite" in err
    assert out.read_bytes() == b"my own workbook, with notes" and sorted(p.name for p in out.parent.iterdir()) == ["cells.xlsx"]

    assert main([*cmd, "--overwrite"]) == 0
    labels = sorted(p.name for p in out.parent.glob("*_labels.tif"))
    assert labels == ["img_day1_labels.tif", "img_day2_labels.tif"]  # one name, two images: two files
    assert main(cmd) == 1  # the export just written is not replaced by the next one either
    assert "and 2 more file(s)" in capsys.readouterr().err


def test_window_export_lists_what_it_would_replace(project: Path, tmp_path: Path) -> None:
    from dataclasses import replace

    with Project.open(project) as p:
        ids = [r.id for r in p.list_images()]
        opts = ExportOptions("project", ("xlsx", "tiff"), tmp_path / "exports")
        assert existing_exports(p, ids, opts) == []
        records = [p.get_image(i) for i in ids]
        targets = export_targets(records, [opts.destination / "t.xlsx"], ["tiff"], opts.destination)
        assert len({t.name.casefold() for t in targets}) == 3
        from efficell_app import tasks

        events = list(tasks.export_images(p, ids, opts))
        assert not [e for e in events if isinstance(e, tasks.ExportFailed)]
        again = existing_exports(p, ids, opts)
        assert sorted(f.name for f in again) == sorted(f.name for f in opts.destination.iterdir())
        with pytest.raises(tasks.ExportWouldReplace):
            list(tasks.export_images(p, ids, opts))
        csv = replace(opts, formats=("csv",))
        list(tasks.export_images(p, ids, csv))
        (opts.destination / "proj_measurements.csv").unlink()  # only the companions are left: still asked
        assert sorted(f.name for f in existing_exports(p, ids, csv)) == [
            "proj_measurements_images.csv", "proj_measurements_settings.json"]
        assert not [e for e in tasks.export_images(p, ids, replace(opts, overwrite=True))
                    if isinstance(e, tasks.ExportFailed)]


def test_export_records_the_plane_of_a_stack(tmp_path: Path) -> None:
    """The Images sheet and the label TIFF say which plane (or projection) of a z-stack was measured."""
    import openpyxl

    from efficell_app.core.export import read_label_settings
    from efficell_app.core.images import PlaneChoice
    from efficell_app.tasks.export import export_project

    folder = tmp_path / "zs"
    folder.mkdir()
    stack = np.zeros((4, 40, 40), np.uint8)
    stack[2, 5:15, 5:15] = 200
    tifffile.imwrite(folder / "stack.tif", stack, imagej=True, metadata={"axes": "ZYX"})
    with Project.create(tmp_path / "p") as p:
        (image_id,) = p.add_folder(folder, "z", planes=PlaneChoice(z="max")).added
        run = p.start_run({"method": "threshold"}, {"encoder": "test"}, "z")
        p.record_result(image_id, (p.read_image(image_id).data[0] > 100).astype(np.int32), {"method": "threshold"},
                        {"encoder": "test"}, run_id=run)
        (tmp_path / "out").mkdir()
        export_project(p, tmp_path / "out" / "cells.xlsx", files=["tiff"])
    ws = openpyxl.load_workbook(tmp_path / "out" / "cells.xlsx", read_only=True)["Images"]
    header, row = list(ws.iter_rows(values_only=True))[:2]
    assert row[header.index("planes")] == "z max"
    assert read_label_settings(tmp_path / "out" / "stack_labels.tif")["planes"] == "z max"
    assert PlaneChoice(z=2, t=0).describe() == "z 3, t 1" and PlaneChoice().describe() == ""
