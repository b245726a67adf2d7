"""Exports read back with the tools labs use: openpyxl, pandas, tifffile, roifile, json."""

from __future__ import annotations

import json
import math
import os
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from PIL import Image
from scipy import ndimage as ndi
from skimage.draw import polygon2mask
from skimage.measure import perimeter, points_in_poly

from efficell_app.core import export
from efficell_app.core.errors import OutputError
from efficell_app.core.images import ImageData, read_image, read_mask
from efficell_app.core.measure import measure_cells, summarize_image

SETTINGS = {
    "app_version": "0.1.0",
    "encoder": "compact-vit", "encoder_sha256": "ab" * 32,
    "adapter": "my_adapter.safetensors", "adapter_sha256": "cd" * 32,
    "parameters": {"diameter": 17.5, "flow_threshold": 0.4, "channels": [0]},
}


@pytest.fixture(scope="module")
def measured(dsb_pairs) -> tuple[ImageData, np.ndarray, pd.DataFrame, pd.DataFrame]:
    image_path, mask_path = dsb_pairs[0]
    img = read_image(image_path)
    labels = read_mask(mask_path)
    cells = measure_cells(labels, img, pixel_size_um=0.5, channel_names=["DAPI"], image_name=image_path.name)
    empty = measure_cells(np.zeros_like(labels), img, pixel_size_um=0.5, channel_names=["DAPI"], image_name="empty.tif")
    images = pd.DataFrame([summarize_image(cells, len(cells), 0.5, ["DAPI"], image_path.name),
                           summarize_image(empty, 0, 0.5, ["DAPI"], "empty.tif")])
    return img, labels, cells, images


def _sheet_rows(ws) -> list[list]:
    return [list(r) for r in ws.iter_rows(values_only=True)]


def test_xlsx_sheets_headers_types_units_and_settings(tmp_path: Path, measured) -> None:
    from openpyxl import load_workbook

    _, _, cells, images = measured
    out = export.write_xlsx(cells, images, SETTINGS, tmp_path / "m.xlsx")
    wb = load_workbook(out)
    assert wb.sheetnames == ["Cells", "Images", "Settings"]
    ws = wb["Cells"]
    rows = _sheet_rows(ws)
    assert rows[0] == list(cells.columns)
    assert {"area_um2", "perimeter_um", "feret_max_um", "DAPI_mean", "DAPI_integrated"} <= set(rows[0])
    assert len(rows) == len(cells) + 1
    assert ws.freeze_panes == "A2" and wb["Images"].freeze_panes == "A2"
    assert 10 <= ws.column_dimensions["G"].width <= export.EXCEL_MAX_COL_WIDTH + 2
    for j, col in enumerate(rows[0]):
        for r in rows[1:4]:
            v = r[j]
            if col == "image":
                assert isinstance(v, str)
            elif col == "touches_border":
                assert isinstance(v, bool)
            else:
                assert isinstance(v, (int, float)) and not isinstance(v, bool), (col, v)
    got = pd.DataFrame(rows[1:], columns=rows[0])
    for col in ("area_um2", "perimeter_um", "DAPI_median", "solidity"):
        np.testing.assert_allclose(got[col].astype(float), cells[col], rtol=1e-12)
    img_rows = _sheet_rows(wb["Images"])
    assert img_rows[0][:2] == ["image", "cell_count"] and "mean_area_um2" in img_rows[0]
    empty = dict(zip(img_rows[0], img_rows[2]))
    assert empty["image"] == "empty.tif" and empty["cell_count"] == 0 and empty["mean_area_um2"] is None
    assert empty["pixel_size_um"] == 0.5
    settings = dict(_sheet_rows(wb["Settings"])[1:])
    assert settings["encoder_sha256"] == "ab" * 32 and settings["adapter_sha256"] == "cd" * 32
    assert settings["parameters.diameter"] == 17.5 and settings["app_version"] == "0.1.0"
    assert json.loads(settings["parameters.channels"]) == [0]
    assert settings["exported_at"][:2] == "20"


def test_xlsx_splits_cells_above_the_row_limit(tmp_path: Path, measured, monkeypatch) -> None:
    from openpyxl import load_workbook

    _, _, cells, images = measured
    monkeypatch.setattr(export, "EXCEL_MAX_DATA_ROWS", 50)
    export.write_xlsx(cells, images, {}, tmp_path / "big.xlsx")
    wb = load_workbook(tmp_path / "big.xlsx", read_only=True)
    n_parts = math.ceil(len(cells) / 50)
    assert wb.sheetnames == ["Cells"] + [f"Cells_{i}" for i in range(2, n_parts + 1)] + ["Images", "Settings"]
    ids = []
    for name in wb.sheetnames[:n_parts]:
        rows = _sheet_rows(wb[name])
        assert rows[0] == list(cells.columns) and len(rows) - 1 <= 50
        ids += [r[1] for r in rows[1:]]
    assert ids == list(cells["cell_id"])
    note = dict(_sheet_rows(wb["Settings"])[1:])["note_cells_split"]
    assert "split" in note and "Cells_2" in note


def test_csv_same_columns_plus_images_and_settings(tmp_path: Path, measured) -> None:
    _, _, cells, images = measured
    out = export.write_csv(cells, tmp_path / "m.csv", SETTINGS, images=images)
    back = pd.read_csv(out)
    assert list(back.columns) == list(cells.columns)
    np.testing.assert_allclose(back["perimeter_um"], cells["perimeter_um"], rtol=1e-12)
    images_csv, settings_json = export.companion_paths(out)
    assert pd.read_csv(images_csv)["cell_count"].tolist() == [len(cells), 0]
    rec = json.loads(settings_json.read_text())
    assert rec["adapter_sha256"] == "cd" * 32 and rec["parameters"]["diameter"] == 17.5


def test_label_tiff_uint16_with_imagej_resolution(tmp_path: Path, measured) -> None:
    _, labels, _, _ = measured
    out = export.write_label_tiff(labels, tmp_path / "labels.tif", 0.5, SETTINGS)
    with tifffile.TiffFile(out) as tif:
        assert tif.is_imagej and tif.pages[0].dtype == np.uint16
        ij = tif.imagej_metadata
        assert ij["unit"] == "micron"
        num, den = tif.pages[0].tags["XResolution"].value
        assert den / num == pytest.approx(0.5)
        assert json.loads(ij["Info"])["encoder_sha256"] == "ab" * 32
        np.testing.assert_array_equal(tif.asarray(), labels)
    assert read_image(out).pixel_size_um == pytest.approx(0.5)


def test_label_tiff_uint32_above_65535_labels(tmp_path: Path) -> None:
    labels = np.zeros((20, 30), dtype=np.int32)
    labels[2:5, 2:5] = 70_000
    labels[10:15, 10:20] = 3
    out = export.write_label_tiff(labels, tmp_path / "many.tif", 0.25, {"encoder": "x"})
    with tifffile.TiffFile(out) as tif:
        assert tif.pages[0].dtype == np.uint32
        np.testing.assert_array_equal(tif.asarray(), labels)
        assert tif.imagej_metadata["unit"] == "micron"
        assert json.loads(tif.pages[0].tags[export.SETTINGS_TAG].value)["encoder"] == "x"
    assert read_image(out).pixel_size_um == pytest.approx(0.25)
    np.testing.assert_array_equal(read_mask(out), labels)


def test_overlay_png_draws_outlines_on_the_image(tmp_path: Path, measured) -> None:
    img, labels, _, _ = measured
    out = export.write_overlay_png(img, labels, tmp_path / "overlay.png", SETTINGS)
    with Image.open(out) as im:
        rgb = np.asarray(im.convert("RGB"))
        assert json.loads(im.text["efficell_settings"])["adapter"] == "my_adapter.safetensors"
    assert rgb.shape == (*labels.shape, 3)
    yellow = np.all(rgb == (255, 255, 0), axis=-1)
    inner_edge = (labels > 0) & (ndi.minimum_filter(labels, 3, mode="nearest") != ndi.maximum_filter(labels, 3, mode="nearest"))
    assert yellow[inner_edge].mean() > 0.7
    deep_inside = (labels > 0) & (ndi.minimum_filter(labels, 5) == ndi.maximum_filter(labels, 5))
    assert deep_inside.sum() > 100 and not yellow[deep_inside].any()
    assert not yellow[ndi.binary_dilation(labels > 0, iterations=2) == 0].any()


def test_imagej_roi_zip_reads_back_and_is_never_appended(tmp_path: Path, measured) -> None:
    import roifile

    _, labels, _, _ = measured
    path = tmp_path / "rois.zip"
    export.write_imagej_rois(labels, path, SETTINGS)
    export.write_imagej_rois(labels, path, SETTINGS)  # a second export replaces, never appends
    rois = roifile.roiread(path)
    n = int(labels.max())
    assert len(rois) == n
    assert [r.name for r in rois] == [f"cell_{i:03d}" for i in range(1, n + 1)]
    with zipfile.ZipFile(path) as zf:
        assert len(zf.namelist()) == n
        assert json.loads(zf.comment.decode())["encoder_sha256"] == "ab" * 32
    for cell_id, roi in enumerate(rois, start=1):
        coords = roi.coordinates()  # (x, y), top-left image corner at (0, 0)
        mask = labels == cell_id
        if mask.sum() < 20:
            continue
        # Rasterise: a pixel is inside when its centre is inside the polygon.
        raster = polygon2mask(labels.shape, np.stack([coords[:, 1] - 0.5, coords[:, 0] - 0.5], 1))
        iou = (raster & mask).sum() / (raster | mask).sum()
        assert iou > 0.85, (cell_id, iou)


def _inside_point(mask: np.ndarray) -> tuple[float, float]:
    """A point surely inside the cell: the centre of its pixel deepest inside."""
    dist = ndi.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    r, c = np.unravel_index(np.argmax(dist), dist.shape)
    return c + 0.5, r + 0.5


def _in_polygon(point: tuple[float, float], geometry: dict) -> bool:
    polys = [geometry["coordinates"]] if geometry["type"] == "Polygon" else geometry["coordinates"]
    for rings in polys:
        outer, holes = np.asarray(rings[0]), [np.asarray(h) for h in rings[1:]]
        if points_in_poly([point], outer)[0] and not any(points_in_poly([point], h)[0] for h in holes):
            return True
    return False


def _shoelace(ring: np.ndarray) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y)))


def test_geojson_polygons_enclose_their_cells_with_measurements(tmp_path: Path, measured, phase_pairs) -> None:
    cases = [(measured[1], measured[2])]
    img_p, mask_p = phase_pairs[0]
    phase_labels = read_mask(mask_p)
    cases.append((phase_labels, measure_cells(phase_labels, read_image(img_p), image_name=img_p.name)))
    for labels, cells in cases:
        out = export.write_geojson(labels, cells, tmp_path / "cells.geojson", SETTINGS)
        doc = json.loads(out.read_text())
        assert doc["type"] == "FeatureCollection" and doc["efficell"]["encoder_sha256"] == "ab" * 32
        feats = {f["properties"]["cell_id"]: f for f in doc["features"]}
        assert sorted(feats) == list(cells["cell_id"])
        slices = ndi.find_objects(labels)
        for row in cells.itertuples(index=False):
            f = feats[row.cell_id]
            assert f["properties"]["objectType"] == "detection"
            meas = f["properties"]["measurements"]
            area_col = "area_um2" if "area_um2" in meas else "area_px"
            assert meas[area_col] == pytest.approx(getattr(row, area_col))
            sl = slices[row.cell_id - 1]
            r0, c0 = sl[0].start, sl[1].start
            mask = labels[sl] == row.cell_id
            x, y = _inside_point(mask)
            assert _in_polygon((x + c0, y + r0), f["geometry"]), row.cell_id
            # Point-in-polygon for the centroid, which for a non-convex cell may lie outside it:
            # inside when its pixel and all 8 neighbours are cell, outside when none of them is.
            r, c = int(row.centroid_y_px) - r0, int(row.centroid_x_px) - c0
            block = np.pad(mask, 2)[r + 1:r + 4, c + 1:c + 4]
            if block.all() or not block.any():
                assert _in_polygon((row.centroid_x_px, row.centroid_y_px), f["geometry"]) == bool(block.all())
            # Polygon area follows the pixel count (the 0.5 iso-line cuts corners only).
            g = f["geometry"]
            polys = [g["coordinates"]] if g["type"] == "Polygon" else g["coordinates"]
            area = sum(_shoelace(np.asarray(p[0])) - sum(_shoelace(np.asarray(h)) for h in p[1:]) for p in polys)
            n = mask.sum()
            assert n - 0.5 * perimeter(mask, 4) - 1.5 <= area <= n + 1


def test_geojson_cell_with_hole_and_two_pieces(tmp_path: Path) -> None:
    labels = np.zeros((30, 30), dtype=np.int32)
    labels[2:12, 2:12] = 1
    labels[5:8, 5:8] = 0  # hole
    labels[20:25, 3:6] = 1  # second piece
    out = export.write_geojson(labels, None, tmp_path / "h.geojson")
    (feat,) = json.loads(out.read_text())["features"]
    g = feat["geometry"]
    assert g["type"] == "MultiPolygon" and len(g["coordinates"]) == 2
    big = g["coordinates"][0]
    assert len(big) == 2  # outer ring and one hole
    assert not _in_polygon((6.5, 6.5), g) and _in_polygon((3.5, 3.5), g) and _in_polygon((4.5, 22.5), g)
    assert "measurements" not in feat["properties"]


def test_locked_file_gives_clear_error_and_loses_nothing(tmp_path: Path, measured, monkeypatch) -> None:
    _, labels, cells, images = measured
    before = cells.copy(deep=True)
    target = tmp_path / "m.xlsx"
    target.write_bytes(b"old workbook")
    real_replace = os.replace

    def locked(src, dst):  # noqa: ANN001 - what Windows does while Excel holds the file
        if Path(dst) == target:
            raise PermissionError(13, "Permission denied", str(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", locked)
    with pytest.raises(OutputError) as err:
        export.write_xlsx(cells, images, SETTINGS, target)
    msg = str(err.value)
    assert str(target) in msg and "open in another program" in msg
    assert target.read_bytes() == b"old workbook"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.xlsx"]  # no temporary file left
    pd.testing.assert_frame_equal(cells, before)
    # Retrying to another path works with the very same data.
    export.write_xlsx(cells, images, SETTINGS, tmp_path / "m_copy.xlsx")
    assert (tmp_path / "m_copy.xlsx").stat().st_size > 0


def test_every_writer_reports_a_failed_write_as_output_error(tmp_path: Path, measured, monkeypatch) -> None:
    img, labels, cells, images = measured

    def denied(src, dst):  # noqa: ANN001
        raise PermissionError(13, "Permission denied", str(dst))

    monkeypatch.setattr(os, "replace", denied)
    writers = {
        "a.csv": lambda p: export.write_csv(cells, p),
        "a.tif": lambda p: export.write_label_tiff(labels, p, 0.5),
        "a.png": lambda p: export.write_overlay_png(img, labels, p),
        "a.zip": lambda p: export.write_imagej_rois(labels, p),
        "a.geojson": lambda p: export.write_geojson(labels, cells, p),
    }
    for name, write in writers.items():
        with pytest.raises(OutputError, match="permission denied"):
            write(tmp_path / name)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.name == "nt" or (hasattr(os, "geteuid") and os.geteuid() == 0),
                    reason="chmod does not stop root (or Windows) from writing")
def test_read_only_folder_message(tmp_path: Path, measured) -> None:
    _, _, cells, images = measured
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="read-only folder"):
            export.write_xlsx(cells, images, {}, folder / "m.xlsx")
    finally:
        folder.chmod(0o700)


def test_missing_folder_message(tmp_path: Path, measured) -> None:
    _, _, cells, images = measured
    with pytest.raises(OutputError, match="does not exist"):
        export.write_xlsx(cells, images, {}, tmp_path / "nope" / "m.xlsx")


def test_geojson_and_roi_of_a_c_shaped_cell_whose_centroid_is_outside(tmp_path: Path) -> None:
    import roifile

    labels = np.zeros((40, 40), dtype=np.int32)
    labels[5:35, 5:12] = 4
    labels[5:12, 5:30] = 4
    labels[28:35, 5:30] = 4
    cells = measure_cells(labels, None)
    cx, cy = cells.centroid_x_px[0], cells.centroid_y_px[0]
    assert labels[int(cy), int(cx)] == 0  # the centroid is off the cell
    doc = json.loads(export.write_geojson(labels, cells, tmp_path / "c.geojson").read_text())
    geom = doc["features"][0]["geometry"]
    assert not _in_polygon((cx, cy), geom)
    assert _in_polygon((8.5, 20.5), geom) and _in_polygon((25.5, 8.5), geom)
    (roi,) = roifile.roiread(export.write_imagej_rois(labels, tmp_path / "c.zip"))
    coords = roi.coordinates()
    assert not points_in_poly([(cx, cy)], coords)[0] and points_in_poly([(8.5, 20.5)], coords)[0]


def test_empty_table_nan_settings_and_stable_geojson_ids(tmp_path: Path, measured) -> None:
    import uuid

    from openpyxl import load_workbook

    img, labels, cells, images = measured
    settings = {"threshold": float("nan"), "nested": {"inf": float("inf")}, "path": tmp_path}
    export.write_xlsx(cells.iloc[:0], images.iloc[1:], settings, tmp_path / "empty.xlsx")
    wb = load_workbook(tmp_path / "empty.xlsx")
    assert _sheet_rows(wb["Cells"]) == [list(cells.columns)]
    rec = dict(_sheet_rows(wb["Settings"])[1:])
    assert rec["threshold"] is None and rec["path"] == str(tmp_path)
    export.write_csv(cells.iloc[:0], tmp_path / "empty.csv", settings)
    assert json.loads(export.companion_paths(tmp_path / "empty.csv")[1].read_text())["nested"] == {"inf": None}
    a = json.loads(export.write_geojson(labels, cells, tmp_path / "a.geojson", settings).read_text())
    b = json.loads(export.write_geojson(labels, cells, tmp_path / "b.geojson", settings).read_text())
    ids = [f["id"] for f in a["features"]]
    assert ids == [f["id"] for f in b["features"]] and len(set(ids)) == len(ids)
    assert all(uuid.UUID(i) for i in ids)


def test_label_tiff_records_extra_metadata(tmp_path: Path) -> None:
    labels = np.zeros((16, 16), dtype=np.int32)
    labels[3:9, 3:9] = 1
    out = export.write_label_tiff(labels, tmp_path / "l.tif", None, {"encoder": "x"}, metadata={"source": "a.tif"})
    with tifffile.TiffFile(out) as tif:
        info = json.loads(tif.imagej_metadata["Info"])
        assert info["source"] == "a.tif" and info["encoder"] == "x" and "unit" not in tif.imagej_metadata
    assert read_image(out).pixel_size_um is None


def test_awkward_text_stays_text_in_excel(tmp_path: Path) -> None:
    from openpyxl import load_workbook

    cells = pd.DataFrame({"image": ["=HYPERLINK(\"x\")", "bell\x07.tif"], "cell_id": [1, 2], "area_px": [3.0, np.nan]})
    export.write_xlsx(cells, None, {"long": "x" * 40_000}, tmp_path / "t.xlsx")
    wb = load_workbook(tmp_path / "t.xlsx")
    rows = _sheet_rows(wb["Cells"])
    assert rows[1][0] == "'=HYPERLINK(\"x\")" and wb["Cells"]["A2"].data_type == "s"  # OWASP escape
    assert rows[2] == ["bell.tif", 2, None]
    assert len(dict(_sheet_rows(wb["Settings"])[1:])["long"]) == 32767


def test_roi_of_a_cell_with_a_hole_or_in_pieces_is_exactly_its_pixels(tmp_path: Path) -> None:
    """Such a cell is one composite ROI (ImageJ's ShapeRoi: its rings filled by the even-odd rule);
    before, only the outer ring of the largest piece was written and Fiji measured the hole as cell."""
    import roifile
    from skimage.measure import points_in_poly

    labels = np.zeros((60, 60), np.int32)
    labels[5:25, 5:25] = 1
    labels[12:18, 12:18] = 0  # a hole
    labels[30:40, 30:40] = labels[45:55, 45:55] = 2  # two pieces
    labels[40:50, 5:15] = 3  # plain: a polygon ROI as before
    rois = roifile.roiread(export.write_imagej_rois(labels, tmp_path / "r.zip"))
    centres = np.stack(np.meshgrid(np.arange(60) + 0.5, np.arange(60) + 0.5), -1).reshape(-1, 2)  # (x, y)
    for roi in rois:
        cell = int(roi.name.split("_")[1])
        rings = roi.coordinates(multi=True) if roi.composite else [roi.coordinates()]
        inside = np.zeros(len(centres), bool)
        for ring in rings:
            inside ^= points_in_poly(centres, ring)  # even-odd, as ImageJ's ShapeRoi(float[]) fills
        np.testing.assert_array_equal(inside.reshape(60, 60), labels == cell)
        assert roi.composite == (cell != 3) and roi.roitype == (roifile.ROI_TYPE.RECT if cell != 3 else roi.roitype)


def test_outlines_of_huge_label_ids(tmp_path: Path) -> None:
    """Label ids up to 2e9 (measuring accepts them) give outlines too; find_objects would allocate a slot per id."""
    labels = np.zeros((40, 40), np.int64)
    labels[2:10, 2:10], labels[20:30, 20:30] = 2_000_000_000, 7
    assert [i for i, _ in export.cell_polygons(labels)] == [7, 2_000_000_000]
    feats = json.loads(export.write_geojson(labels, None, tmp_path / "g.geojson").read_text())["features"]
    assert len(feats) == 2
