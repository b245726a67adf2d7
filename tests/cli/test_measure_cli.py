"""``efficell measure`` end to end on real images and masks."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from PIL import Image

from efficell_app.cli import main
from efficell_app.core.images import read_image, read_mask
from efficell_app.core.measure import measure_cells


@pytest.fixture()
def folders(tmp_path: Path, dsb_pairs, phase_pairs) -> tuple[Path, Path]:
    """Images in one folder; masks in another named ``<stem>_masks.tif``, one as PNG."""
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for img, mask in dsb_pairs[:2]:
        shutil.copy(img, images / img.name)
        shutil.copy(mask, masks / f"{img.stem}_masks.tif")
    img, mask = dsb_pairs[2]
    shutil.copy(img, images / img.name)
    Image.fromarray(read_mask(mask).astype(np.uint16)).save(masks / f"{img.stem}.png")
    img, mask = phase_pairs[0]
    shutil.copy(img, images / img.name)
    shutil.copy(mask, masks / img.name)
    return images, masks


def test_measure_to_xlsx_pairs_by_stem(folders, tmp_path: Path, capsys) -> None:
    from openpyxl import load_workbook

    images, masks = folders
    out = tmp_path / "m.xlsx"
    rc = main(["measure", "--images", str(images), "--masks", str(masks), "--out", str(out),
               "--pixel-size", "0.5", "--channel-names", "DNA"])
    assert rc == 0, capsys.readouterr().err
    wb = load_workbook(out, read_only=True)
    assert wb.sheetnames == ["Cells", "Images", "Settings"]
    rows = list(wb["Cells"].iter_rows(values_only=True))
    header = list(rows[0])
    assert "area_um2" in header and "DNA_median" in header and "perimeter_um" in header
    got = pd.DataFrame(rows[1:], columns=header)
    expected = []
    for p in sorted(images.iterdir()):
        mask = next(m for m in masks.iterdir() if m.name.split(".")[0].removesuffix("_masks") == p.stem)
        expected.append(measure_cells(read_mask(mask), read_image(p), 0.5, ["DNA"], p.name))
    exp = pd.concat(expected, ignore_index=True)
    assert list(got["image"]) == list(exp["image"])
    np.testing.assert_allclose(got["DNA_integrated"].astype(float), exp["DNA_integrated"])
    summary = list(wb["Images"].iter_rows(values_only=True))
    counts = {r[0]: r[1] for r in summary[1:]}
    assert counts == {name: int((exp["image"] == name).sum()) for name in exp["image"].unique()}
    settings = dict(list(wb["Settings"].iter_rows(values_only=True))[1:])
    assert settings["pixel_size_um"] == 0.5 and settings["command"] == "efficell measure"
    assert "measured" in capsys.readouterr().out


def test_measure_to_csv_and_zero_cell_image(folders, tmp_path: Path) -> None:
    images, masks = folders
    stem = sorted(images.iterdir())[0].stem
    mask = next(masks.glob(f"{stem}*"))
    zero = np.zeros_like(read_mask(mask))
    mask.unlink()
    tifffile.imwrite(masks / f"{stem}_masks.tif", zero.astype(np.uint16))
    out = tmp_path / "m.csv"
    assert main(["measure", "--images", str(images), "--masks", str(masks), "--out", str(out)]) == 0
    cells = pd.read_csv(out)
    assert "area_px" in cells and f"{stem}.tif" not in set(cells["image"])
    summary = pd.read_csv(tmp_path / "m_images.csv")
    row = summary[summary["image"] == f"{stem}.tif"].iloc[0]
    assert row["cell_count"] == 0 and np.isnan(row["mean_area_px"])
    assert json.loads((tmp_path / "m_settings.json").read_text())["images_measured"] == 4


def test_missing_and_mismatched_masks_reported_rest_completes(folders, tmp_path: Path, phase_pairs, capsys) -> None:
    images, masks = folders
    paths = sorted(images.iterdir())
    next(masks.glob(f"{paths[0].stem}*")).unlink()  # no mask
    wrong = next(masks.glob(f"{paths[1].stem}*"))  # a mask of another size
    wrong.unlink()
    shutil.copy(phase_pairs[1][1], masks / f"{paths[1].stem}_masks.tif")
    out = tmp_path / "m.xlsx"
    rc = main(["measure", "--images", str(images), "--masks", str(masks), "--out", str(out)])
    lines = capsys.readouterr().err.strip().splitlines()
    err = [line for line in lines if line.startswith("error: ")]
    assert rc == 1
    progress = [line.split("] ", 1)[1] for line in lines if line not in err]  # the rest: a line per image
    assert [line.split(": ")[0] for line in progress] == [f"{i}/4 {p.name}" for i, p in enumerate(paths, start=1)]
    assert [line.endswith(": failed") for line in progress] == [True, True, False, False]
    assert str(paths[0]) in err[0] and "no mask" in err[0]
    assert str(masks / f"{paths[1].stem}_masks.tif") in err[1] and str(paths[1]) in err[1]
    measured = pd.read_excel(out, sheet_name="Images")
    assert sorted(measured["image"]) == [p.name for p in paths[2:]]


def test_usage_errors_exit_2(folders, tmp_path: Path, capsys) -> None:
    images, masks = folders
    assert main(["measure", "--images", str(images), "--masks", str(masks), "--out", str(tmp_path / "m.txt")]) == 2
    assert main(["measure", "--images", str(images), "--masks", str(tmp_path / "nope"), "--out", str(tmp_path / "m.csv")]) == 2
    with pytest.raises(SystemExit) as bad_size:  # an option's type: argparse's usage error
        main(["measure", "--images", str(images), "--masks", str(masks), "--out", str(tmp_path / "m.csv"),
              "--pixel-size", "-1"])
    assert bad_size.value.code == 2
    err = capsys.readouterr().err
    assert ".xlsx or .csv" in err and "folder not found" in err and "positive" in err
    assert not any(tmp_path.glob("m.*"))


def test_wrong_channel_name_count_is_reported_per_file(folders, tmp_path: Path, capsys) -> None:
    images, masks = folders
    rc = main(["measure", "--images", str(images), "--masks", str(masks), "--out", str(tmp_path / "m.csv"),
               "--channel-names", "a,b"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "2 channel name(s)" in err and "nothing written" in err


def test_locked_output_is_saved_beside_it(folders, tmp_path: Path, monkeypatch, capsys) -> None:
    images, masks = folders
    out = tmp_path / "m.xlsx"
    out.write_bytes(b"open in Excel")
    real_replace = os.replace

    def locked(src, dst):  # noqa: ANN001
        if Path(dst) == out:
            raise PermissionError(13, "Permission denied", str(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", locked)
    rc = main(["measure", "--images", str(images), "--masks", str(masks), "--out", str(out), "--overwrite"])
    err = capsys.readouterr().err
    assert rc == 1 and "open in another program" in err and "saved to" in err
    assert out.read_bytes() == b"open in Excel"
    (alt,) = [p for p in tmp_path.glob("m_*.xlsx")]
    assert len(pd.read_excel(alt, sheet_name="Images")) == 4


def test_images_and_masks_in_the_same_folder(tmp_path: Path, dsb_pairs) -> None:
    both = tmp_path / "both"
    both.mkdir()
    for img, mask in dsb_pairs[:2]:
        shutil.copy(img, both / img.name)
        shutil.copy(mask, both / f"{img.stem}_masks.tif")
    out = tmp_path / "m.csv"
    assert main(["measure", "--images", str(both), "--masks", str(both), "--out", str(out)]) == 0
    assert sorted(pd.read_csv(tmp_path / "m_images.csv")["image"]) == sorted(p.name for p, _ in dsb_pairs[:2])


def test_the_settings_name_the_models_that_made_the_masks(folders, tmp_path: Path) -> None:
    """Masks written by ``efficell segment`` record their model: the table's settings name it with
    its checksums (as a project export does); ground-truth masks name none."""
    from efficell_app.core.export import write_label_tiff

    def settings(out: Path) -> dict:
        sheet = pd.read_excel(out, sheet_name="Settings", header=None).iloc[1:]
        return dict(zip(sheet[0], sheet[1]))

    images, masks = folders
    assert main(["measure", "--images", str(images), "--masks", str(masks), "--out", str(tmp_path / "gt.xlsx")]) == 0
    assert not any(k.startswith("model_") for k in settings(tmp_path / "gt.xlsx"))
    first = sorted(images.iterdir())[0]
    made = {"encoder": "efficell_compact", "adapter": "lab adapter", "encoder_sha256": "e" * 64,
            "adapter_sha256": "a" * 64, "app_version": "0.1.0", "diameter_px": 20.0}
    write_label_tiff(read_mask(next(masks.glob(f"{first.stem}*"))), masks / f"{first.stem}_masks.tif", settings=made)
    assert main(["measure", "--images", str(images), "--masks", str(masks), "--out", str(tmp_path / "a.xlsx")]) == 0
    got = settings(tmp_path / "a.xlsx")
    assert got["model_1"] == "efficell_compact + lab adapter" and "model_2" not in got
    assert got["model_1_encoder_sha256"] == "e" * 64 and got["model_1_adapter_sha256"] == "a" * 64
