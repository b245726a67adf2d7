"""Per-cell measurements checked against independent computations on real images."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from scipy import ndimage as ndi
from scipy.spatial import ConvexHull
from skimage.measure import perimeter as sk_perimeter
from skimage.measure import regionprops

from efficell_app.core.errors import InputError
from efficell_app.core.images import ImageData, read_image, read_mask
from efficell_app.core.measure import column_names, measure_cells, summarize_image


def _corners(mask: np.ndarray) -> np.ndarray:
    """All corners (x, y) of a mask's pixel squares."""
    r, c = np.nonzero(mask)
    return np.concatenate([np.stack([c + dx, r + dy], 1) for dx in (0, 1) for dy in (0, 1)]).astype(float)


def _reference(labels: np.ndarray, channels: np.ndarray) -> dict[int, dict[str, float]]:
    """Measurements of every cell computed one cell at a time with scikit-image / numpy / scipy."""
    ref: dict[int, dict[str, float]] = {}
    h, w = labels.shape
    for p in regionprops(labels):
        r0, c0, r1, c1 = p.bbox
        mask = labels[r0:r1, c0:c1] == p.label
        pts = _corners(mask)
        hull = ConvexHull(pts)
        hv = pts[hull.vertices]
        feret = float(np.sqrt(((hv[:, None] - hv[None]) ** 2).sum(-1).max()))
        r, c = np.nonzero(mask)
        r, c = r + r0, c + c0
        cov = np.cov(np.stack([c, r]).astype(float), bias=True)
        evals, evecs = np.linalg.eigh(cov)
        vx, vy = evecs[:, 1]
        perim = sk_perimeter(mask, 4)
        row = {
            "area": float(mask.sum()),
            "cx": c.mean() + 0.5, "cy": r.mean() + 0.5,
            "perimeter": perim,
            "equivalent_diameter": p.equivalent_diameter_area,
            "major": p.axis_major_length, "minor": p.axis_minor_length,
            "eccentricity": p.eccentricity,
            "orientation": math.degrees(math.atan2(-vy, vx)) % 180.0,
            "anisotropy": evals[1] - evals[0],
            "solidity": mask.sum() / hull.volume, "sk_solidity": p.solidity,
            "feret": feret, "sk_feret": p.feret_diameter_max,
            "circularity": min(1.0, 4 * math.pi * mask.sum() / perim**2) if perim > 0 else math.nan,
            "touches": bool(r.min() == 0 or c.min() == 0 or r.max() == h - 1 or c.max() == w - 1),
        }
        for k, ch in enumerate(channels):
            v = ch[r0:r1, c0:c1][mask]
            row.update({f"{k}_mean": v.mean(), f"{k}_median": np.median(v), f"{k}_min": v.min(),
                        f"{k}_max": v.max(), f"{k}_std": v.std(), f"{k}_integrated": v.sum(dtype=np.float64)})
        ref[p.label] = row
    return ref


def _angle_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = np.abs(a - b) % 180.0
    return np.minimum(d, 180.0 - d)


def _check_against_reference(df, labels: np.ndarray, channels: np.ndarray, names: list[str], unit: str = "px",
                             px: float = 1.0) -> None:
    ref = _reference(labels, channels)
    assert list(df["cell_id"]) == sorted(ref)
    get = lambda key: np.array([ref[i][key] for i in df["cell_id"]], dtype=float)  # noqa: E731
    a2 = "um2" if unit == "um" else "px"
    np.testing.assert_allclose(df[f"area_{a2}"], get("area") * px * px, rtol=1e-12)
    np.testing.assert_allclose(df["centroid_x_px"], get("cx"), atol=1e-9)
    np.testing.assert_allclose(df["centroid_y_px"], get("cy"), atol=1e-9)
    np.testing.assert_allclose(df[f"perimeter_{unit}"], get("perimeter") * px, rtol=1e-9)
    np.testing.assert_allclose(df[f"equivalent_diameter_{unit}"], get("equivalent_diameter") * px, rtol=1e-9)
    np.testing.assert_allclose(df[f"major_axis_length_{unit}"], get("major") * px, rtol=1e-7, atol=1e-7)
    np.testing.assert_allclose(df[f"minor_axis_length_{unit}"], get("minor") * px, rtol=1e-7, atol=1e-6)
    np.testing.assert_allclose(df["eccentricity"], get("eccentricity"), atol=1e-6)
    defined = get("anisotropy") > 1e-6  # the angle of a round cell is undefined
    assert (_angle_diff(df["orientation_deg"].to_numpy()[defined], get("orientation")[defined]) < 1e-6).all()
    assert ((df["orientation_deg"] >= 0) & (df["orientation_deg"] < 180)).all()
    np.testing.assert_allclose(df["solidity"], get("solidity"), rtol=1e-9)
    assert (df["solidity"] <= 1.0 + 1e-12).all()
    # scikit-image rasterises its hull, so its solidity is close but not equal.
    assert np.median(np.abs(df["solidity"] - get("sk_solidity"))) < 0.05
    np.testing.assert_allclose(df[f"feret_max_{unit}"], get("feret") * px, rtol=1e-9)
    # scikit-image measures Feret on the 0.5 iso-contour, pixel corners lie < 1 px further out.
    assert (np.abs(df[f"feret_max_{unit}"] / px - get("sk_feret")) <= 1.0).all()
    np.testing.assert_allclose(df["circularity"], get("circularity"), rtol=1e-9)
    assert list(df["touches_border"]) == [bool(ref[i]["touches"]) for i in df["cell_id"]]
    for k, name in enumerate(names):
        for stat in ("mean", "median", "min", "max", "std", "integrated"):
            np.testing.assert_allclose(df[f"{name}_{stat}"], get(f"{k}_{stat}"), rtol=1e-9, atol=1e-9,
                                       err_msg=f"{name}_{stat}")


def test_every_column_matches_independent_computation_on_real_images(dsb_pairs, phase_pairs) -> None:
    for image_path, mask_path in dsb_pairs[:2] + phase_pairs[:1]:
        img = read_image(image_path)
        labels = read_mask(mask_path)
        df = measure_cells(labels, img, image_name=image_path.name, mask_path=mask_path)
        assert list(df.columns) == column_names(None, list(img.channel_names))
        assert (df["image"] == image_path.name).all()
        _check_against_reference(df, labels, img.data, list(img.channel_names))


def test_multichannel_float_and_signed_raw_values_with_pixel_size(dsb_pairs) -> None:
    image_path, mask_path = dsb_pairs[0]
    raw = read_image(image_path).data[0]
    labels = read_mask(mask_path)
    rng = np.random.default_rng(1)
    channels = np.stack([
        raw.astype(np.float32) * np.float32(0.37) - np.float32(20.0),     # float32, negative values
        (raw.astype(np.int16) - 100),                                      # signed integers
        raw.astype(np.float64) + rng.normal(0, 1e-3, raw.shape),           # float64 (lexsort path)
    ]).astype(np.float64)
    # ImageData wants one dtype; check the float32 and int16 paths on their own too.
    img = ImageData(channels, path=image_path, pixel_size_um=0.25)
    df = measure_cells(labels, img, channel_names=["GFP", "DAPI", "far red"])
    assert "area_um2" in df and "perimeter_um" in df and "centroid_x_um" in df and "area_px" not in df
    np.testing.assert_allclose(df["centroid_x_um"], df["centroid_x_px"] * 0.25)
    _check_against_reference(df, labels, channels, ["GFP", "DAPI", "far_red"], unit="um", px=0.25)
    for arr in (channels[:1].astype(np.float32), channels[1:2].astype(np.int16)):
        df1 = measure_cells(labels, ImageData(arr), channel_names=["x"])
        ref = _reference(labels, arr)
        for stat in ("median", "min", "max"):
            np.testing.assert_allclose(df1[f"x_{stat}"], [ref[i][f"0_{stat}"] for i in df1["cell_id"]], rtol=1e-6)


def test_pixel_size_argument_overrides_metadata_and_units_follow(phase_pairs) -> None:
    image_path, mask_path = phase_pairs[0]
    img = read_image(image_path)
    labels = read_mask(mask_path)
    px_df = measure_cells(labels, ImageData(img.data))  # no pixel size known
    um_df = measure_cells(labels, img, pixel_size_um=0.65)
    assert {"area_px", "perimeter_px", "feret_max_px"} <= set(px_df.columns) and "area_um2" not in px_df
    assert {"area_um2", "perimeter_um", "feret_max_um", "centroid_x_um"} <= set(um_df.columns)
    np.testing.assert_allclose(um_df["area_um2"], px_df["area_px"] * 0.65**2)
    for c in ("perimeter", "equivalent_diameter", "major_axis_length", "minor_axis_length", "feret_max"):
        np.testing.assert_allclose(um_df[f"{c}_um"], px_df[f"{c}_px"] * 0.65)
    for c in ("orientation_deg", "eccentricity", "solidity", "circularity", "centroid_x_px"):
        np.testing.assert_allclose(um_df[c], px_df[c])
    tagged = ImageData(img.data, pixel_size_um=0.8)  # from metadata when not given
    assert measure_cells(labels, tagged)["area_um2"].iloc[0] == pytest.approx(px_df["area_px"].iloc[0] * 0.64)


def test_non_consecutive_and_huge_label_values_keep_their_ids() -> None:
    labels = np.zeros((40, 50), dtype=np.int64)
    labels[2:10, 3:9] = 7
    labels[20:30, 20:45] = 2_000_000_000
    labels[35:40, 0:3] = 3
    img = ImageData(np.arange(2000, dtype=np.uint16).reshape(1, 40, 50))
    df = measure_cells(labels, img)
    assert list(df["cell_id"]) == [3, 7, 2_000_000_000]
    np.testing.assert_allclose(df["area_px"], [15, 48, 250])
    assert list(df["touches_border"]) == [True, False, False]
    np.testing.assert_allclose(df["solidity"], 1.0)
    np.testing.assert_allclose(df["feret_max_px"], [math.hypot(3, 5), math.hypot(6, 8), math.hypot(25, 10)])
    np.testing.assert_allclose(df["ch0_min"], [35 * 50, 2 * 50 + 3, 20 * 50 + 20])


def test_single_pixel_and_line_cells() -> None:
    labels = np.zeros((10, 10), dtype=np.int32)
    labels[5, 5] = 1
    labels[1, 1:8] = 2
    df = measure_cells(labels, None)
    assert not any(c.endswith("_mean") for c in df.columns)
    one, line = df.iloc[0], df.iloc[1]
    assert one.area_px == 1 and one.solidity == 1 and math.isnan(one.circularity)
    assert one.feret_max_px == pytest.approx(math.sqrt(2))
    assert line.feret_max_px == pytest.approx(math.hypot(7, 1))
    assert line.orientation_deg == pytest.approx(0.0)
    assert line.eccentricity == pytest.approx(1.0)


def test_zero_cells_gives_empty_table_and_count_zero_summary(dsb_pairs) -> None:
    img = read_image(dsb_pairs[0][0])
    labels = np.zeros(img.shape, dtype=np.int32)
    df = measure_cells(labels, img, image_name="empty.tif")
    assert len(df) == 0 and list(df.columns) == column_names(None, list(img.channel_names))
    row = summarize_image(df, 0, None, list(img.channel_names), "empty.tif")
    assert row["cell_count"] == 0 and row["image"] == "empty.tif"
    assert math.isnan(row["mean_area_px"]) and math.isnan(row["median_area_px"])
    assert math.isnan(row[f"mean_intensity_{img.channel_names[0]}"])


def test_summary_values(dsb_pairs) -> None:
    image_path, mask_path = dsb_pairs[1]
    img = read_image(image_path)
    labels = read_mask(mask_path)
    df = measure_cells(labels, img, pixel_size_um=0.5, channel_names=["DAPI"])
    row = summarize_image(df, len(df), 0.5, ["DAPI"], image_path.name)
    areas = np.bincount(labels.ravel())[1:] * 0.25
    assert row["cell_count"] == labels.max()
    assert row["mean_area_um2"] == pytest.approx(areas.mean())
    assert row["median_area_um2"] == pytest.approx(np.median(areas))
    means = [img.data[0][labels == i].mean() for i in range(1, labels.max() + 1)]
    assert row["mean_intensity_DAPI"] == pytest.approx(np.mean(means))
    assert row["pixel_size_um"] == 0.5


def test_mismatched_sizes_refused_naming_both_files(dsb_pairs, phase_pairs) -> None:
    img = read_image(dsb_pairs[0][0])
    mask_path = phase_pairs[0][1]
    labels = read_mask(mask_path)
    with pytest.raises(InputError) as err:
        measure_cells(labels, img, mask_path=mask_path)
    msg = str(err.value)
    assert str(mask_path) in msg and str(dsb_pairs[0][0]) in msg
    assert f"{labels.shape[0]}x{labels.shape[1]}" in msg


def test_wrong_number_of_channel_names_is_refused(dsb_pairs) -> None:
    img = read_image(dsb_pairs[0][0])
    labels = read_mask(dsb_pairs[0][1])
    with pytest.raises(InputError, match="2 channel name"):
        measure_cells(labels, img, channel_names=["a", "b"])


def test_duplicate_and_awkward_channel_names_become_unique_columns() -> None:
    labels = np.zeros((12, 12), dtype=np.int32)
    labels[2:6, 2:6] = 1
    img = ImageData(np.ones((3, 12, 12), dtype=np.uint8))
    df = measure_cells(labels, img, channel_names=["GFP", "GFP", "area x"])
    assert {"GFP_mean", "GFP_2_mean", "ch_area_x_mean"} <= set(df.columns)
    assert df.columns.is_unique


def synthetic_cells(n: int = 10_000, size: int = 4096, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` non-touching-ish ellipses of 8-18 px radius on a jittered grid, and a uint16 image."""
    from skimage.draw import ellipse

    rng = np.random.default_rng(seed)
    labels = np.zeros((size, size), np.int32)
    g = int(np.ceil(np.sqrt(n)))
    step = size / g
    k = 0
    for i in range(g):
        for j in range(g):
            if k >= n:
                break
            cy = (i + 0.5) * step + rng.uniform(-step / 4, step / 4)
            cx = (j + 0.5) * step + rng.uniform(-step / 4, step / 4)
            rr, cc = ellipse(cy, cx, rng.uniform(8, 18), rng.uniform(8, 18), shape=labels.shape,
                             rotation=rng.uniform(0, np.pi))
            k += 1
            labels[rr, cc] = k
    image = (rng.normal(1000, 50, labels.shape) + (labels > 0) * 500).clip(0, 65535).astype(np.uint16)
    return labels, image


@pytest.mark.slow
def test_ten_thousand_cells_in_4k_image_take_a_few_seconds() -> None:
    labels, image = synthetic_cells()
    t = time.perf_counter()
    df = measure_cells(labels, ImageData(image[None]))
    seconds = time.perf_counter() - t
    assert len(df) == 10_000
    assert seconds < 15, f"measuring 10,000 cells took {seconds:.1f} s"
    # Spot-check a few cells against the reference on their crop.
    for cid in (1, 5000, 10_000):
        (sl,) = ndi.find_objects((labels == cid).astype(np.int8))
        mask = labels[sl] == cid
        v = image[sl][mask]
        row = df[df.cell_id == cid].iloc[0]
        assert row.area_px == mask.sum() and row.ch0_median == np.median(v) and row.ch0_std == pytest.approx(v.std())
        assert row.perimeter_px == pytest.approx(sk_perimeter(mask, 4))



def test_a_large_image_measured_in_bands_gives_the_numbers_of_measuring_it_whole(monkeypatch) -> None:
    """Memory: an image larger than a band is measured band by band (each cell whole, in the band
    of its top row). Cells that reach across many bands, a cell in two pieces far apart, cells on
    the bottom edge, huge label values and NaN pixels give exactly the numbers of one pass."""
    import efficell_app.core.measure as measure

    rng = np.random.default_rng(7)
    h, w = 160, 90
    labels = np.zeros((h, w), np.uint32)
    labels[5:150, 10:14] = 3  # a tall thin cell across most bands
    labels[20:26, 40:60] = 9
    labels[120:126, 40:60] = 9  # ... and its second piece, far below
    labels[150:160, 60:75] = 4_000_000_000  # on the bottom edge, with a huge id
    labels[0:8, 80:90] = 12  # the top-right corner
    for k in range(40):  # blobs, some touching each other
        cy, cx, r = rng.integers(0, h), rng.integers(20, w), rng.integers(2, 7)
        yy, xx = np.ogrid[:h, :w]
        blob = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & (labels == 0)
        labels[blob] = 100 + k
    channels = rng.normal(500, 80, (2, h, w))  # float64: the reference sums in the values' type
    bad = np.zeros(channels.shape, bool)
    bad[0, 21, 45] = True  # a NaN of the file inside cell 9, replaced by the reader (and left out of intensities)
    channels[bad] = channels.min()
    image = ImageData(channels, channel_names=["dapi", "gfp"], replaced=bad)
    whole = measure_cells(labels, image, pixel_size_um=0.5)
    monkeypatch.setattr(measure, "BAND_PIXELS", 7 * w)  # bands of 7 rows: 22 of them
    assert len(measure._cell_bands(labels, measure.BAND_PIXELS)) > 15
    banded = measure_cells(labels, image, pixel_size_um=0.5)
    import pandas as pd

    pd.testing.assert_frame_equal(banded, whole, check_exact=True)
    assert {3, 9, 12, 4_000_000_000} <= set(banded["cell_id"])
    assert banded.set_index("cell_id").loc[4_000_000_000, "touches_border"]
    assert banded.set_index("cell_id").loc[9, "area_um2"] == 2 * 6 * 20 * 0.25
    cell9 = labels == 9
    assert banded.set_index("cell_id").loc[9, "dapi_mean"] == pytest.approx(channels[0][cell9 & ~bad[0]].mean())
    small_ids = np.where(labels == 4_000_000_000, 99, labels)  # scikit-image's reference allocates per label value
    checked = banded.drop(columns=[c for c in banded if c.startswith("dapi_")])
    checked["cell_id"] = checked["cell_id"].replace(4_000_000_000, 99)
    _check_against_reference(checked.sort_values("cell_id"), small_ids, channels[1:], ["gfp"], unit="um", px=0.5)
