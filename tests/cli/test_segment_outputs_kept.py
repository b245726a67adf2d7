"""A batch never loses what an earlier run or another input made: its table and run record, a mask
of an image of the same name in another folder, and its masks are not read back as images."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from efficell_app.cli import main
from efficell_app.core.batch import RUN_FILE, TABLE_FILE, earlier_outputs, output_names, run_file_names
from efficell_app.core.pipeline import Segmenter


@pytest.fixture()
def patched_load(monkeypatch: pytest.MonkeyPatch, random_segmenter) -> Segmenter:  # noqa: ANN001
    monkeypatch.setattr(Segmenter, "load", classmethod(lambda cls, *a, **k: random_segmenter))
    return random_segmenter


def _images_sheet(table: Path) -> list[str]:
    return list(pd.read_excel(table, sheet_name=None)["Images"]["image"])


def test_images_of_one_name_never_share_a_mask(tmp_path: Path) -> None:
    a, b = tmp_path / "exp1" / "control" / "img001.tif", tmp_path / "exp2" / "control" / "img001.tif"
    s_tif, s_png = tmp_path / "mixed" / "sample.tif", tmp_path / "mixed" / "sample.png"
    up, low = tmp_path / "x" / "Cell.tif", tmp_path / "y" / "cell.tif"  # alike where case is ignored
    plain = [tmp_path / "a" / "img.tif", tmp_path / "b" / "img.tif"]
    names = output_names([a, b, s_tif, s_png, up, low, *plain])
    assert names[a] == "exp1_control_img001_masks.tif" and names[b] == "exp2_control_img001_masks.tif"
    assert names[s_tif] == "sample_tif_masks.tif" and names[s_png] == "sample_png_masks.tif"
    assert names[up].casefold() != names[low].casefold()
    assert [names[p] for p in plain] == ["a_img_masks.tif", "b_img_masks.tif"]  # as before: resumable
    assert len({n.casefold() for n in names.values()}) == len(names)


def test_rerun_with_a_subset_keeps_the_earlier_table(dsb_pairs, tmp_path: Path, patched_load, capsys) -> None:  # noqa: ANN001
    src = tmp_path / "in"
    src.mkdir()
    for k in range(3):
        shutil.copy(dsb_pairs[k][0], src / f"im{k}.tif")
    out = tmp_path / "out"
    assert main(["segment", str(src), "--out", str(out), "--diameter", "24"]) == 0
    before = (out / TABLE_FILE).read_bytes(), (out / RUN_FILE).read_bytes()
    assert _images_sheet(out / TABLE_FILE) == ["im0.tif", "im1.tif", "im2.tif"]

    # the same batch again (resumed or repeated): its own files are brought up to date
    assert main(["segment", str(src), "--out", str(out), "--diameter", "24"]) == 0
    assert (out / "measurements_2.xlsx").exists() is False

    # one image again: the earlier table and record stay, this run's go beside them
    capsys.readouterr()
    assert main(["segment", str(src / "im1.tif"), "--out", str(out), "--diameter", "24"]) == 0
    err = capsys.readouterr().err
    assert _images_sheet(out / TABLE_FILE) == ["im0.tif", "im1.tif", "im2.tif"]
    assert _images_sheet(out / "measurements_2.xlsx") == ["im1.tif"]
    assert "measurements_2.xlsx" in err and "efficell_run_2.json" in err

    # other settings, every image refused: the record of the masks in the folder is not replaced
    assert main(["segment", str(src), "--out", str(out), "--diameter", "30"]) == 1
    assert json.loads((out / RUN_FILE).read_text())["settings"]["diameter_px"] == 24.0
    third = json.loads((out / "efficell_run_3.json").read_text())
    assert third["settings"]["diameter_px"] == 30.0 and not any(f["ok"] for f in third["files"])
    assert (out / TABLE_FILE).read_bytes() != b"" and before[1] != b""

    # --overwrite replaces, as it replaces masks
    assert main(["segment", str(src / "im0.tif"), "--out", str(out), "--diameter", "30", "--overwrite"]) == 0
    assert _images_sheet(out / TABLE_FILE) == ["im0.tif"]


def test_run_file_names(tmp_path: Path) -> None:
    rec = [{"input": "/d/a.tif"}, {"input": "/d/b.tif"}]
    assert run_file_names(tmp_path, "k", rec, False) == (tmp_path / TABLE_FILE, tmp_path / RUN_FILE)
    (tmp_path / TABLE_FILE).write_bytes(b"a table of the user's, no run record beside it")
    assert run_file_names(tmp_path, "k", rec, False)[0].name == "measurements_2.xlsx"
    assert run_file_names(tmp_path, "k", rec, True)[0].name == TABLE_FILE
    (tmp_path / RUN_FILE).write_text(json.dumps({"settings": {"run_key": "k"}, "files": rec[:1]}))
    assert run_file_names(tmp_path, "k", rec, False)[1].name == RUN_FILE  # grown batch, same settings
    assert run_file_names(tmp_path, "other", rec, False)[1].name == "efficell_run_2.json"
    assert run_file_names(tmp_path, "k", rec[1:], False)[1].name == "efficell_run_2.json"  # would drop a.tif
    (tmp_path / RUN_FILE).write_text("{damaged")
    assert run_file_names(tmp_path, "k", rec, False)[1].name == "efficell_run_2.json"


def test_output_folder_inside_the_input_is_not_read_back(dsb_pairs, tmp_path: Path, patched_load, capsys) -> None:  # noqa: ANN001
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(dsb_pairs[0][0], src / "a.tif")
    out = src / "results"
    for _ in range(2):
        assert main(["segment", str(src), "--out", str(out), "--diameter", "24"]) == 0
    assert "skipped 1 mask(s) of an earlier run" in capsys.readouterr().err
    assert sorted(p.name for p in out.glob("*.tif")) == ["a_masks.tif"]
    assert _images_sheet(out / TABLE_FILE) == ["a.tif"]
    assert earlier_outputs([src / "a.tif", out / "a_masks.tif"], src) == [out / "a_masks.tif"]


@pytest.mark.parametrize("value", ["-0.3", "0", "nan", "inf", "abc"])
def test_pixel_size_must_be_positive(value: str, dsb_pairs, tmp_path: Path, patched_load, capsys) -> None:  # noqa: ANN001
    for cmd in (["segment", str(dsb_pairs[0][0]), "--out", str(tmp_path / "o")],
                ["measure", "--images", str(tmp_path), "--masks", str(tmp_path), "--out", str(tmp_path / "m.xlsx")]):
        with pytest.raises(SystemExit) as exit_:
            main([*cmd, f"--pixel-size={value}"])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and "positive number of micrometres" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_binary_mask_is_one_cell_per_region(tmp_path: Path, caplog) -> None:  # noqa: ANN001
    from efficell_app.core.images import read_mask

    m = np.zeros((40, 40), np.uint8)
    m[2:8, 2:8] = m[20:30, 5:12] = m[10:14, 30:38] = 255  # ImageJ's binary mask: three nuclei at 255
    tifffile.imwrite(tmp_path / "binary.tif", m)
    labels = read_mask(tmp_path / "binary.tif")
    assert sorted(np.unique(labels)) == [0, 1, 2, 3] and "binary mask" in caplog.text and "binary.tif" in caplog.text
    one = np.where(m > 0, 7, 0).astype(np.uint16)
    one[20:30, 5:12] = one[10:14, 30:38] = 0
    tifffile.imwrite(tmp_path / "one.tif", one)  # a label image of one object stays as it is
    assert sorted(np.unique(read_mask(tmp_path / "one.tif"))) == [0, 7]
    pieces = np.where(m > 0, 7, 0).astype(np.uint16)  # label 7 in three pieces: a label image, not binary
    tifffile.imwrite(tmp_path / "pieces.tif", pieces)
    assert sorted(np.unique(read_mask(tmp_path / "pieces.tif"))) == [0, 7]
    tifffile.imwrite(tmp_path / "ones.tif", (m > 0).astype(np.uint16))  # a 0/1 export is binary
    assert sorted(np.unique(read_mask(tmp_path / "ones.tif"))) == [0, 1, 2, 3]


def test_wrong_channel_names_fail_the_image_before_its_mask(dsb_pairs, tmp_path: Path, patched_load, capsys) -> None:  # noqa: ANN001
    out = tmp_path / "out"
    rc = main(["segment", str(dsb_pairs[0][0]), "--out", str(out), "--diameter", "24", "--channel-names", "a,b,c,d,e"])
    err = capsys.readouterr().err
    assert rc == 1 and "5 channel name(s) given" in err
    assert not list(out.glob("*_masks.tif"))  # the image failed: no mask left behind it
    assert json.loads((out / RUN_FILE).read_text())["files"][0]["output"] is None


def test_project_and_paths_together_is_a_usage_error(dsb_pairs, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    rc = main(["segment", str(dsb_pairs[0][0]), "--project", str(tmp_path / "p"), "--out", str(tmp_path / "o")])
    assert rc == 2 and "not both" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_project_run_lines_name_the_scene(tmp_path: Path, patched_load, capsys) -> None:  # noqa: ANN001
    from efficell_app.project import Project

    folder = tmp_path / "plate"
    folder.mkdir()
    blobs = np.zeros((48, 48), np.uint8)
    blobs[5:15, 5:15] = blobs[25:40, 20:35] = 200
    with tifffile.TiffWriter(folder / "plate.ome.tif", ome=True) as w:
        w.write(blobs, metadata={"Name": "A1"})
        w.write(blobs, metadata={"Name": "B2"})
    with Project.create(tmp_path / "p") as p:
        assert len(p.add_folder(folder, "plate").added) == 2
    assert main(["segment", "--project", str(tmp_path / "p"), "--diameter", "12"]) == 0
    err = capsys.readouterr().err
    assert "plate.ome.tif [A1]:" in err and "plate.ome.tif [B2]:" in err
    assert main(["segment", "--project", str(tmp_path / "p"), "--diameter", "12", "--only-new"]) == 0
    assert "0 of 0 image(s) segmented" in capsys.readouterr().err  # both done: nothing segmented again
    with Project.open(tmp_path / "p") as p:
        assert all(len(p.list_results(r.id)) == 1 for r in p.list_images())


def test_the_table_names_the_images_it_lacks(dsb_pairs, tmp_path: Path, patched_load) -> None:  # noqa: ANN001
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(dsb_pairs[0][0], src / "a.tif")
    (src / "b.tif").write_bytes(b"")
    assert main(["segment", str(src), "--out", str(tmp_path / "out"), "--diameter", "24"]) == 1
    settings = pd.read_excel(tmp_path / "out" / TABLE_FILE, sheet_name="Settings", header=None)
    values = dict(zip(settings[0], settings[1]))
    assert values["images_measured"] == 1 and "b.tif: file is empty" in str(values["images_failed"])
    assert str(values["pixel_size_um"]).startswith("from each file's metadata")  # said, not left empty
    assert str(values["channels"]).startswith("auto") and str(values["planes"]).startswith("2-D")


def test_measure_takes_the_scene_masks_segment_wrote(tmp_path: Path, patched_load, capsys) -> None:  # noqa: ANN001
    """segment writes <stem>_s<k>_masks.tif for the scenes of a plate file; measure pairs each with its scene."""
    blobs = np.zeros((48, 48), np.uint8)
    blobs[5:15, 5:15] = blobs[25:40, 20:35] = 200
    plate = tmp_path / "plate.ome.tif"
    with tifffile.TiffWriter(plate, ome=True) as w:
        w.write(blobs, metadata={"Name": "A1"})
        w.write(blobs, metadata={"Name": "B2"})
    assert main(["segment", str(plate), "--out", str(tmp_path / "out"), "--diameter", "12"]) == 0
    assert main(["measure", "--images", str(plate), "--masks", str(tmp_path / "out"),
                 "--out", str(tmp_path / "m.xlsx")]) == 0
    measured = pd.read_excel(tmp_path / "m.xlsx", sheet_name="Images")[["image", "cell_count"]]
    segmented = pd.read_excel(tmp_path / "out" / TABLE_FILE, sheet_name="Images")[["image", "cell_count"]]
    assert list(measured["image"]) == ["plate.ome.tif [A1]", "plate.ome.tif [B2]"]
    assert measured.equals(segmented)


def test_progress_within_each_image_reaches_the_caller(dsb_pairs, tmp_path: Path, random_segmenter) -> None:  # noqa: ANN001
    """A slide of 16384² px took minutes with no line on the terminal: the work within an image is reported."""
    from efficell_app.core.batch import BatchOptions, segment_files

    seen: list[tuple[int, int, str, float]] = []
    events = list(segment_files([dsb_pairs[0][0], dsb_pairs[1][0]], tmp_path / "out", random_segmenter,
                                BatchOptions(diameter=24.0), progress=lambda *a: seen.append(a)))
    assert len(events) == 2 and {s[0] for s in seen} == {1, 2} and all(s[1] == 2 for s in seen)
    for k in (1, 2):
        fractions = [s[3] for s in seen if s[0] == k]
        assert fractions == sorted(fractions) and 0.0 <= fractions[0] and fractions[-1] <= 1.0
    assert seen[0][2] == dsb_pairs[0][0].name
