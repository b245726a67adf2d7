"""``efficell segment`` on microscope files: the chosen channel of a 2-channel ND2 is the one
segmented, and a multi-scene CZI gives one mask per scene, named in the run record."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

from efficell_app.cli import main
from efficell_app.core.images import ImageData, read_image
from efficell_app.core.pipeline import Segmenter


@pytest.fixture()
def patched_load(monkeypatch: pytest.MonkeyPatch, pointwise_segmenter) -> Segmenter:  # noqa: ANN001
    monkeypatch.setattr(Segmenter, "load", classmethod(lambda cls, *a, **k: pointwise_segmenter))
    return pointwise_segmenter


def test_two_channel_nd2_segments_the_chosen_channel(formats_dir: Path, tmp_path: Path, patched_load, capsys) -> None:  # noqa: ANN001
    src = formats_dir / "nd2/example-cerevisiae.nd2"  # DIC, FITC BP
    img = read_image(src)
    expected = {}
    for c in (0, 1):  # the same segmenter on that channel alone
        alone = ImageData(data=img.data[c:c + 1], path=src, pixel_size_um=img.pixel_size_um)
        expected[c] = patched_load.segment(alone, diameter=20).labels
    assert not np.array_equal(expected[0], expected[1])  # the two channels really differ
    for c in (0, 1):
        out = tmp_path / f"out{c}"
        assert main(["segment", str(src), "--out", str(out), "--channels", str(c), "--diameter", "20"]) == 0
        mask = tifffile.imread(out / "example-cerevisiae_masks.tif")
        np.testing.assert_array_equal(mask, expected[c])
    capsys.readouterr()


def test_multi_scene_czi_writes_one_mask_per_scene(formats_dir: Path, tmp_path: Path, patched_load, capsys) -> None:  # noqa: ANN001
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(formats_dir / "czi/S3_1Pos_2Mosaic_T1_Z1_CH1.czi", folder / "plate.czi")
    shutil.copy(formats_dir / "lif/PR2729_frameOrderCombinedScanTypes.lif", folder / "tiles.lif")
    out = tmp_path / "out"
    rc = main(["segment", str(folder), "--out", str(out), "--diameter", "20"])
    err = capsys.readouterr().err
    assert rc == 1  # the tile scan is refused, by name and reason
    assert f"error: {folder / 'tiles.lif'}: is a tile scan of 4 unstitched tiles" in err
    assert "3 of 4 image(s) segmented" in err
    shapes = {"TR1": (122, 295), "P1": (64, 64), "TR2": (237, 352)}
    run = json.loads((out / "efficell_run.json").read_text())
    done = [f for f in run["files"] if f["ok"]]
    assert [(f["scene"], f["scene_index"], f["output"]) for f in done] == [
        (name, k, f"plate_s{k}_masks.tif") for k, name in enumerate(shapes)]
    for k, (name, hw) in enumerate(shapes.items()):
        mask = tifffile.imread(out / f"plate_s{k}_masks.tif")
        assert mask.shape == hw
        assert f"plate.czi [{name}]" in err
