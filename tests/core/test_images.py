"""Image and mask readers: every supported layout, and the bad-input suite (each error names the file)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from efficell_app.core.errors import ImageReadError
from efficell_app.core.images import PlaneChoice, PlanesNeeded, find_images, model_input, read_image, read_mask

RNG = np.random.default_rng(0)


def rand(shape: tuple[int, ...], dtype: type = np.uint16, top: int = 4000) -> np.ndarray:
    return RNG.integers(0, top, shape).astype(dtype)


def refused(path: Path, *words: str, **kw: object) -> ImageReadError:
    """Reading ``path`` fails with a one-line message that names the file and contains ``words``."""
    with pytest.raises(ImageReadError) as info:
        read_image(path, **kw)  # type: ignore[arg-type]
    msg = str(info.value)
    assert str(path) in msg, msg
    assert "\n" not in msg, msg
    for w in words:
        assert w in msg, msg
    return info.value


# ----------------------------------------------------------------------------- TIFF layouts


def test_tiff_2d(tmp_path: Path) -> None:
    a = rand((40, 50))
    tifffile.imwrite(tmp_path / "a.tif", a)
    img = read_image(tmp_path / "a.tif")
    assert img.data.shape == (1, 40, 50) and img.data.dtype == np.uint16
    np.testing.assert_array_equal(img.data[0], a)
    assert not img.rgb and img.notes == [] and img.path == tmp_path / "a.tif"


def test_tiff_cyx_with_axes_metadata(tmp_path: Path) -> None:
    a = rand((3, 32, 40))
    tifffile.imwrite(tmp_path / "c.tif", a, photometric="minisblack", metadata={"axes": "CYX"})
    img = read_image(tmp_path / "c.tif")
    assert img.data.shape == (3, 32, 40) and not img.rgb
    np.testing.assert_array_equal(img.data, a)


def test_tiff_cyx_plain_pages(tmp_path: Path) -> None:
    a = rand((2, 32, 40))
    tifffile.imwrite(tmp_path / "c.tif", a, photometric="minisblack", metadata=None)
    img = read_image(tmp_path / "c.tif")
    assert img.data.shape == (2, 32, 40)
    np.testing.assert_array_equal(img.data, a)


@pytest.mark.parametrize("n", [2, 3, 4])
def test_tiff_yxc_channel_last(tmp_path: Path, n: int) -> None:
    a = rand((32, 40, n))
    tifffile.imwrite(tmp_path / "c.tif", a, photometric="minisblack", metadata=None)
    img = read_image(tmp_path / "c.tif")
    assert img.data.shape == (n, 32, 40) and not img.rgb
    np.testing.assert_array_equal(img.data, np.moveaxis(a, -1, 0))
    # An explicit choice overrides the guess.
    forced = read_image(tmp_path / "c.tif", channel_axis=-1)
    np.testing.assert_array_equal(forced.data, img.data)


def test_plain_stack_of_many_planes_asks_or_takes_the_z_choice(tmp_path: Path) -> None:
    a = rand((9, 32, 40))
    p = tmp_path / "stack.tif"
    tifffile.imwrite(p, a, photometric="minisblack", metadata=None)
    err = refused(p, "9 planes", "channels, z-planes or time points")
    assert isinstance(err, PlanesNeeded) and err.unlabelled and err.sizes == {"Z": 9}
    assert "--" not in str(err) and err.command_line == "--z N|max or --t N"  # the window shows no CLI option
    np.testing.assert_array_equal(read_image(p, planes=PlaneChoice(z=4)).data[0], a[4])
    np.testing.assert_array_equal(read_image(p, planes=PlaneChoice(z="max")).data[0], a.max(axis=0))


def test_ome_tiff_pixel_size_and_channel_names(tmp_path: Path) -> None:
    a = rand((2, 32, 40))
    p = tmp_path / "x.ome.tif"
    tifffile.imwrite(p, a, ome=True, metadata={"axes": "CYX", "PhysicalSizeX": 0.325, "PhysicalSizeXUnit": "µm",
                                                "PhysicalSizeY": 0.325, "Channel": {"Name": ["DAPI", "GFP"]}})
    img = read_image(p)
    assert img.data.shape == (2, 32, 40)
    assert img.channel_names == ("DAPI", "GFP")
    assert img.pixel_size_um == pytest.approx(0.325)
    np.testing.assert_array_equal(img.data, a)


def test_ome_tiff_nanometre_unit(tmp_path: Path) -> None:
    p = tmp_path / "nm.ome.tif"
    tifffile.imwrite(p, rand((32, 40)), ome=True, metadata={"axes": "YX", "PhysicalSizeX": 650, "PhysicalSizeXUnit": "nm"})
    assert read_image(p).pixel_size_um == pytest.approx(0.65)


def test_imagej_hyperstack_z_choice_and_micron_unit(tmp_path: Path) -> None:
    a = rand((5, 2, 32, 40))  # ZCYX
    p = tmp_path / "hyper.tif"
    tifffile.imwrite(p, a, imagej=True, resolution=(1 / 0.65, 1 / 0.65), metadata={"axes": "ZCYX", "unit": "micron"})
    err = refused(p, "5 z-planes", "maximum projection")
    assert isinstance(err, PlanesNeeded) and err.sizes == {"Z": 5} and "--" not in str(err)
    assert err.command_line == "--z N or --z max"
    one = read_image(p, planes=PlaneChoice(z=1))
    assert one.data.shape == (2, 32, 40) and one.pixel_size_um == pytest.approx(0.65)
    np.testing.assert_array_equal(one.data, a[1])
    mip = read_image(p, planes=PlaneChoice.parse(z="max"))
    np.testing.assert_array_equal(mip.data, a.max(axis=0))
    refused(p, "z-plane 7 does not exist", planes=PlaneChoice(z=7))


def test_time_series_needs_t(tmp_path: Path) -> None:
    a = rand((4, 32, 40))
    p = tmp_path / "movie.tif"
    tifffile.imwrite(p, a, imagej=True, metadata={"axes": "TYX"})
    err = refused(p, "4 time points", "choose a time point")
    assert isinstance(err, PlanesNeeded) and err.sizes == {"T": 4} and err.command_line == "--t N"
    np.testing.assert_array_equal(read_image(p, planes=PlaneChoice(t=2)).data[0], a[2])


def test_five_d_ome_stack_with_both_choices(tmp_path: Path) -> None:
    a = rand((2, 3, 2, 16, 16), np.uint8, 255)
    p = tmp_path / "tzc.ome.tif"
    tifffile.imwrite(p, a, ome=True, metadata={"axes": "TZCYX"})
    err = refused(p, "3 z-planes and 2 time points")
    assert isinstance(err, PlanesNeeded) and err.sizes == {"Z": 3, "T": 2}
    err = refused(p, "3 z-planes", planes=PlaneChoice(t=1))
    assert isinstance(err, PlanesNeeded) and err.sizes == {"Z": 3}
    img = read_image(p, planes=PlaneChoice(z="max", t=1))
    np.testing.assert_array_equal(img.data, a[1].max(axis=0))


def test_five_d_plain_array_refused(tmp_path: Path) -> None:
    p = tmp_path / "5d.tif"
    tifffile.imwrite(p, rand((2, 3, 2, 16, 16), np.uint8, 255))
    refused(p, "5-D")


# ----------------------------------------------------------------------------- PNG / JPEG / colour


def test_png_8_and_16_bit(tmp_path: Path) -> None:
    a16 = rand((30, 40), np.uint16, 65535)
    Image.fromarray(a16).save(tmp_path / "a16.png")
    img = read_image(tmp_path / "a16.png")
    assert img.data.dtype == np.uint16 and img.data.shape == (1, 30, 40)
    np.testing.assert_array_equal(img.data[0], a16)
    a8 = rand((30, 40), np.uint8, 255)
    Image.fromarray(a8).save(tmp_path / "a8.png")
    img8 = read_image(tmp_path / "a8.png")
    assert img8.data.dtype == np.uint8
    np.testing.assert_array_equal(img8.data[0], a8)


def test_jpeg_gray_and_colour(tmp_path: Path) -> None:
    g = np.tile(np.linspace(0, 255, 40, dtype=np.uint8), (30, 1))
    Image.fromarray(g).save(tmp_path / "g.jpg", quality=95)
    img = read_image(tmp_path / "g.jpg")
    assert img.data.shape == (1, 30, 40) and np.abs(img.data[0].astype(int) - g).max() < 8
    rgb = np.stack([g, 255 - g, np.full_like(g, 128)], axis=-1)
    Image.fromarray(rgb).save(tmp_path / "c.jpeg", quality=95)
    assert read_image(tmp_path / "c.jpeg").rgb


def test_rgb_histology_stays_rgb(tmp_path: Path) -> None:
    rgb = np.stack([rand((30, 40), np.uint8, 255) for _ in range(3)], axis=-1)
    for name in ("he.png", "he.tif"):
        if name.endswith(".png"):
            Image.fromarray(rgb).save(tmp_path / name)
        else:
            tifffile.imwrite(tmp_path / name, rgb)
        img = read_image(tmp_path / name)
        assert img.rgb and img.data.shape == (3, 30, 40) and img.channel_names == ("red", "green", "blue")
        np.testing.assert_array_equal(img.data, np.moveaxis(rgb, -1, 0))
        assert model_input(img).shape == (3, 30, 40)


def test_rgba_png_drops_alpha(tmp_path: Path) -> None:
    rgba = np.stack([rand((30, 40), np.uint8, 255) for _ in range(4)], axis=-1)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    img = read_image(tmp_path / "a.png")
    assert img.rgb and img.data.shape == (3, 30, 40)


def test_grayscale_saved_as_rgb_is_collapsed(tmp_path: Path) -> None:
    g = rand((30, 40), np.uint8, 255)
    rgb = np.stack([g, g, g], axis=-1)
    Image.fromarray(rgb).save(tmp_path / "g.png")
    tifffile.imwrite(tmp_path / "g.tif", rgb)
    for name in ("g.png", "g.tif"):
        img = read_image(tmp_path / name)
        assert not img.rgb and img.data.shape == (1, 30, 40)
        np.testing.assert_array_equal(img.data[0], g)


# ----------------------------------------------------------------------------- values


def test_float_with_nan_and_inf_gets_a_note(tmp_path: Path) -> None:
    a = RNG.random((32, 40)).astype(np.float32) + 1.0
    a[0, 0], a[1, 1], a[2, 2] = np.nan, np.inf, -np.inf
    p = tmp_path / "f.tif"
    tifffile.imwrite(p, a)
    img = read_image(p)
    assert np.isfinite(img.data).all()
    assert any("3 NaN/infinite" in n for n in img.notes)
    assert img.data[0, 0, 0] == pytest.approx(np.nanmin(np.where(np.isfinite(a), a, np.nan)))
    assert np.isfinite(model_input(img)).all()


def test_all_nan_refused(tmp_path: Path) -> None:
    p = tmp_path / "nan.tif"
    tifffile.imwrite(p, np.full((16, 16), np.nan, np.float32))
    refused(p, "NaN")


def test_constant_image_gets_a_note(tmp_path: Path) -> None:
    p = tmp_path / "const.tif"
    tifffile.imwrite(p, np.zeros((16, 16), np.uint16))
    img = read_image(p)
    assert any("constant" in n for n in img.notes)
    assert (model_input(img) == 0).all()


@pytest.mark.parametrize(("dtype", "word"), [(bool, "boolean"), (np.complex64, "complex")])
def test_bool_and_complex_refused(tmp_path: Path, dtype: type, word: str) -> None:
    p = tmp_path / f"x_{np.dtype(dtype).name}.tif"
    tifffile.imwrite(p, (rand((16, 16)) > 2000).astype(dtype))
    refused(p, word)


@pytest.mark.parametrize("shape", [(1, 1), (2, 2), (1, 10000), (10000, 1)])
def test_tiny_and_degenerate_images_refused(tmp_path: Path, shape: tuple[int, int]) -> None:
    p = tmp_path / f"{shape[0]}x{shape[1]}.tif"
    tifffile.imwrite(p, np.ones(shape, np.uint8))
    refused(p, f"{shape[0]}x{shape[1]}")
    q = tmp_path / f"{shape[0]}x{shape[1]}.png"
    Image.fromarray(np.ones(shape, np.uint8)).save(q)
    refused(q, f"{shape[0]}x{shape[1]}")


# ----------------------------------------------------------------------------- broken files


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_truncated_tiff(tmp_path: Path, compression: str | None) -> None:
    p = tmp_path / "cut.tif"
    tifffile.imwrite(p, rand((64, 80)), compression=compression)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    refused(p, "damaged or truncated")


def test_truncated_png(tmp_path: Path) -> None:
    p = tmp_path / "cut.png"
    Image.fromarray(rand((64, 80), np.uint8, 255)).save(p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    refused(p)


@pytest.mark.parametrize("name", ["empty.tif", "empty.png", "empty.jpg"])
def test_zero_byte_file(tmp_path: Path, name: str) -> None:
    p = tmp_path / name
    p.write_bytes(b"")
    refused(p, "0 bytes")


@pytest.mark.parametrize("name", ["notes.tif", "notes.png", "notes.jpg"])
def test_text_file_with_image_extension(tmp_path: Path, name: str) -> None:
    p = tmp_path / name
    p.write_text("plate 3, well B7: re-image tomorrow\n" * 20)
    refused(p, "cannot be read as an image")


def test_missing_folder_and_unsupported_extension(tmp_path: Path) -> None:
    refused(tmp_path / "nope.tif", "not found")
    refused(tmp_path, "folder")
    p = tmp_path / "data.ims"
    p.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    refused(p, "unsupported file type")
    czi = tmp_path / "data.czi"  # a CZI cut short after its magic: the CZI reader's reason, named as CZI
    czi.write_bytes(b"ZISRAWFILE" + bytes(100))
    refused(czi, "cannot be read as Zeiss CZI (")


# ----------------------------------------------------------------------------- paths


def test_unicode_path(tmp_path: Path) -> None:
    d = tmp_path / "Zellkerne μm 細胞 ünïcödé"
    d.mkdir()
    p = d / "Probe_α-β 核.tif"
    tifffile.imwrite(p, rand((20, 30)))
    assert read_image(p).data.shape == (1, 20, 30)
    bad = d / "défaut 壊れた.tif"
    bad.write_bytes(b"garbage" * 10)
    refused(bad)


def test_very_long_path(tmp_path: Path) -> None:
    d = tmp_path / ("experiment_" + "x" * 100) / ("condition_" + "y" * 100)
    d.mkdir(parents=True)
    p = d / ("image_" + "z" * 60 + ".tif")
    assert len(str(p)) > 200
    tifffile.imwrite(p, rand((20, 30)))
    assert read_image(p).data.shape == (1, 20, 30)
    bad = d / ("broken_" + "w" * 60 + ".tif")
    bad.write_bytes(b"")
    refused(bad, "0 bytes")
    Image.fromarray(rand((20, 30), np.uint16, 9)).save(d / "m.png")
    assert read_mask(d / "m.png", shape=(20, 30)).shape == (20, 30)


def test_find_images_lists_and_skips(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    tifffile.imwrite(tmp_path / "sub" / "a.tif", rand((16, 16)))
    Image.fromarray(rand((16, 16), np.uint8, 255)).save(tmp_path / "b.png")
    (tmp_path / "readme.txt").write_text("x")
    (tmp_path / ".hidden.tif").write_bytes(b"")
    images, skipped = find_images([tmp_path])
    assert sorted(p.name for p in images) == ["a.tif", "b.png"]
    assert [p.name for p, _ in skipped] == ["readme.txt"]


# ----------------------------------------------------------------------------- masks


def mask_refused(path: Path, *words: str, **kw: object) -> None:
    with pytest.raises(ImageReadError) as info:
        read_mask(path, **kw)  # type: ignore[arg-type]
    msg = str(info.value)
    assert str(path) in msg, msg
    for w in words:
        assert w in msg, msg


def test_mask_read_ok(tmp_path: Path, dsb_pairs) -> None:
    m = read_mask(dsb_pairs[0][1])
    assert m.dtype == np.int32 and m.ndim == 2 and m.max() > 10
    p = tmp_path / "b.png"
    blob = np.zeros((20, 20), bool)
    blob[2:6, 2:6] = blob[10:15, 10:15] = True
    Image.fromarray(blob).save(p)
    lab = read_mask(p)
    assert lab.max() == 2  # a binary mask is labelled into objects


def test_a_uint32_mask_is_read_without_a_second_copy(tmp_path: Path) -> None:
    """A slide's uint32 labels (1 GB at 16384²) become int32 in place: the same values, and the
    reading takes about the mask once (a copy to int32 doubled it)."""
    import tracemalloc

    labels = np.zeros((1024, 1024), np.uint32)
    labels[:512, :512], labels[600:700, 600:700], labels[-1, -1] = 7, 2**31 - 1, 65535
    tifffile.imwrite(tmp_path / "m.tif", labels)
    tracemalloc.start()
    try:
        got = read_mask(tmp_path / "m.tif")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got.dtype == np.int32 and np.array_equal(got, labels.astype(np.int64))
    assert peak < 1.5 * labels.nbytes, peak

def test_mask_negative_labels_refused(tmp_path: Path) -> None:
    p = tmp_path / "neg.tif"
    tifffile.imwrite(p, np.array([[0, -1], [2, 3]] * 8, np.int16))
    mask_refused(p, "negative")


def test_mask_non_integer_labels_refused(tmp_path: Path) -> None:
    p = tmp_path / "frac.tif"
    a = np.zeros((16, 16), np.float32)
    a[2:5, 2:5] = 1.5
    tifffile.imwrite(p, a)
    mask_refused(p, "non-integer")
    a[2:5, 2:5] = np.nan
    tifffile.imwrite(p, a)
    mask_refused(p, "non-integer")
    a[2:5, 2:5] = 3.0
    tifffile.imwrite(p, a)
    assert read_mask(p).max() == 3


def test_mask_size_mismatch_named(tmp_path: Path) -> None:
    p = tmp_path / "m.tif"
    tifffile.imwrite(p, np.zeros((20, 30), np.uint16))
    mask_refused(p, "20x30", "40x50", shape=(40, 50))


def test_bad_mask_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty_masks.tif"
    empty.write_bytes(b"")
    mask_refused(empty, "0 bytes")
    text = tmp_path / "text_masks.png"
    text.write_text("no mask here")
    mask_refused(text, "cannot be read")
    stack = tmp_path / "stack_masks.tif"
    tifffile.imwrite(stack, np.zeros((3, 16, 16), np.uint16), photometric="minisblack")
    mask_refused(stack, "2-D")
    cplx = tmp_path / "c_masks.tif"
    tifffile.imwrite(cplx, np.zeros((16, 16), np.complex64))
    mask_refused(cplx, "type")
    mask_refused(tmp_path / "gone.tif", "not found")
