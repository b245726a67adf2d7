"""A TIFF read although its reader complained (a tag pointing past the end of a cut file) says so
beside the result, naming the file; tifffile's own log lines (no file name, twice) stay off the terminal."""

from __future__ import annotations

import logging
import struct
from pathlib import Path

import numpy as np
import tifffile

from efficell_app.core.batch import expand_scenes
from efficell_app.core.images import _short, read_image


def _tag_past_the_end(path: Path) -> None:
    tifffile.imwrite(path, (np.arange(64 * 64) % 200).astype(np.uint8).reshape(64, 64), description="x" * 500,
                     metadata=None)
    data = bytearray(path.read_bytes())
    entry = data.find(b"\x0e\x01\x02\x00")  # the ImageDescription (270, ASCII) entry of the first IFD
    data[entry + 8:entry + 12] = struct.pack("<I", 10_000_000)  # its value now lies past the end of the file
    path.write_bytes(bytes(data))


def test_complaints_become_a_note_naming_the_file(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    path = tmp_path / "cut.ome.tif"
    _tag_past_the_end(path)
    terminal = logging.StreamHandler()  # what the command line sets up: warnings to stderr
    logging.getLogger().addHandler(terminal)
    try:
        assert expand_scenes([path]) == [(path, None, None)]
        img = read_image(path)
    finally:
        logging.getLogger().removeHandler(terminal)
    assert img.data.shape == (1, 64, 64)
    assert any("may be damaged or truncated" in n and "invalid value offset" in n for n in img.notes), img.notes
    assert "tifffile" not in capsys.readouterr().err  # nothing of the reader's own went to the terminal


def test_short_reasons_leave_raw_bytes_out() -> None:
    assert _short("Invalid ChunkMap signature b'~j\\x7f\\x00\\xaagh' in file 'x.nd2'") == \
        "Invalid ChunkMap signature (raw bytes) in file 'x.nd2'"


def test_nan_pixels_are_left_out_of_the_intensities(tmp_path: Path) -> None:
    """A float image's NaN/infinite pixels are replaced for segmentation only: a cell's intensities are
    those of its real pixels (a cell of nothing else has none), as numpy's nan-functions give them."""
    from efficell_app.core.measure import file_calibration, measure_image

    img = np.full((40, 40), 10.0, np.float32)
    img[5:15, 5:15] = np.linspace(50, 150, 100, dtype=np.float32).reshape(10, 10)
    img[7, 7], img[8, 8] = np.nan, -np.inf
    img[25:30, 25:30] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", img)
    labels = np.zeros((40, 40), np.int32)
    labels[5:15, 5:15], labels[25:30, 25:30] = 1, 2
    read = read_image(tmp_path / "nan.tif")
    cells = measure_image(labels, read, file_calibration(read), "nan.tif").cells.set_index("cell_id")
    real = np.where(np.isfinite(img), img, np.nan)[5:15, 5:15]
    assert np.isclose(cells.loc[1, "ch0_mean"], np.nanmean(real))
    assert np.isclose(cells.loc[1, "ch0_min"], np.nanmin(real)) and np.isclose(cells.loc[1, "ch0_integrated"], np.nansum(real))
    assert np.isclose(cells.loc[1, "ch0_median"], np.nanmedian(real)) and np.isclose(cells.loc[1, "ch0_std"], np.nanstd(real))
    assert np.isnan(cells.loc[2, "ch0_mean"]) and cells.loc[2, "area_px"] == 25  # shape measured, no intensity


def test_pixels_that_are_not_square_are_measured_in_pixels(tmp_path: Path) -> None:
    """An image 0.5 µm wide and 1.0 µm high per pixel: one pixel size would make every area wrong
    (x 0.5), so the image has none (measured in pixels) and says why."""
    data = np.zeros((32, 32), np.uint16)
    tifffile.imwrite(tmp_path / "aniso.ome.tif", data, metadata={"PhysicalSizeX": 0.5, "PhysicalSizeY": 1.0})
    tifffile.imwrite(tmp_path / "square.ome.tif", data, metadata={"PhysicalSizeX": 0.5, "PhysicalSizeY": 0.501})
    tifffile.imwrite(tmp_path / "aniso_ij.tif", data, imagej=True, resolution=(1 / 0.5, 1 / 2.0),
                     metadata={"unit": "um"})
    aniso = read_image(tmp_path / "aniso.ome.tif")
    assert aniso.pixel_size_um is None and any("not square (0.5 x 1 µm)" in n for n in aniso.notes)
    assert read_image(tmp_path / "square.ome.tif").pixel_size_um == 0.5  # within 1 %: square
    ij = read_image(tmp_path / "aniso_ij.tif")
    assert ij.pixel_size_um is None and any("not square" in n for n in ij.notes)
