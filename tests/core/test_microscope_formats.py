"""Every real microscope file of ../shared/formats opens with the pixel size and channel names its
README records, one image per scene, or is refused with a reason that says what is not supported."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from efficell_app.core.errors import ImageReadError
from efficell_app.core.images import (
    IMAGE_SUFFIXES,
    PlaneChoice,
    PlanesNeeded,
    is_image_file,
    read_image,
    scene_names,
)

FILES = [  # kept in step with tests/data/formats_expected.json (checked below)
    "czi/CellDivision_T3_Z5_CH2_X240_Y170.czi", "czi/S3_1Pos_2Mosaic_T1_Z1_CH1.czi", "czi/WellD6-7_S2.czi",
    "czi/DAPI_GFP.czi", "czi/LLS7_small.czi", "czi/CellDivision_T3_Z6_CH1_X300_Y200_DCV_ZSTD.czi",
    "czi/nuc_small.czi", "nd2/example-multichannel.nd2", "nd2/example-timelapse.nd2", "nd2/example-zstack.nd2",
    "nd2/example-cerevisiae.nd2", "nd2/cluster.nd2", "lif/PR2729_frameOrderCombinedScanTypes.lif",
    "lif/LeicaLASX_wavelength-sweep_example.lif", "lif/testdata_2channel_xz.lif", "ome-tiff/s_1_t_1_c_1_z_1.ome.tiff",
    "ome-tiff/181003_multi_pos_time_course_1_MMStack.ome.tif", "ome-tiff/170918_tn_neutrophil_migration_wave.ome.tif",
    "ome-tiff/TZ_nucleus.ome.tif", "oib/test.oib", "dv/toxo.dv", "imagej-tiff/hela-cells.tif",
]


def planes_of(entry: dict) -> PlaneChoice:
    p = entry.get("planes", {})
    return PlaneChoice(z=p.get("z"), t=p.get("t"))


def test_the_table_covers_every_file(formats_dir: Path, formats_expected: dict) -> None:
    on_disk = sorted(str(p.relative_to(formats_dir)) for p in formats_dir.glob("*/*") if p.parent.name != "tools")
    assert on_disk == sorted(FILES) == sorted(formats_expected)
    assert all(is_image_file(formats_dir / f) for f in FILES)  # add-folder and drop take them all


@pytest.mark.parametrize("name", FILES)
def test_file_opens_as_the_readme_says_or_is_refused(formats_dir: Path, formats_expected: dict, name: str) -> None:
    path, entry = formats_dir / name, formats_expected[name]
    expected = entry["images"]
    scenes = scene_names(path)
    assert len(scenes) == len(expected)
    for k, want in enumerate(expected):
        scene = k if len(expected) > 1 else None
        if want["scene"] is not None:
            assert scenes[k] == want["scene"]
        if "refused" in want:
            with pytest.raises(ImageReadError) as err:
                read_image(path, planes_of(entry), scene=scene)
            reason = str(err.value)
            assert str(path) in reason and all(w.lower() in reason.lower() for w in want["refused"]), reason
            continue
        img = read_image(path, planes_of(entry), scene=scene)
        assert img.scene == want["scene"]
        assert img.shape == tuple(want["hw"])
        assert img.rgb == want.get("rgb", False)
        n = len(want["names"]) if want["names"] else want["channels"]
        assert img.n_channels == n
        if want["px"] is None:
            assert img.pixel_size_um is None  # unknown: no reader default (1.0 or 1 px) passes for a calibration
        else:
            assert img.pixel_size_um == pytest.approx(want["px"], rel=1e-5)
        if want["names"] is None:  # the file names none: ours, not a reader's invention ("Channel:0:0", "0")
            default = ("red", "green", "blue") if img.rgb else tuple(f"ch{i}" for i in range(n))
            assert img.channel_names == default
        else:
            assert img.channel_names == tuple(want["names"])


def test_microscope_suffixes_are_image_files() -> None:
    for suffix in (".czi", ".nd2", ".lif", ".oib", ".dv", ".CZI"):
        assert is_image_file(f"x{suffix}")
    assert ".czi" in IMAGE_SUFFIXES


# every vendor stack of ../shared/formats: the axes a read without a plane choice must name, all at once
STACKS = {"nd2/cluster.nd2": {"Z": 10, "T": 3}, "nd2/example-zstack.nd2": {"Z": 11},
          "nd2/example-timelapse.nd2": {"T": 53}, "czi/CellDivision_T3_Z5_CH2_X240_Y170.czi": {"Z": 5, "T": 3},
          "czi/LLS7_small.czi": {"Z": 3, "T": 2}, "dv/toxo.dv": {"Z": 17}, "ome-tiff/TZ_nucleus.ome.tif": {"Z": 5, "T": 4}}


@pytest.mark.parametrize("name", sorted(STACKS))
def test_a_stack_names_every_axis_to_choose_at_once(formats_dir: Path, name: str) -> None:
    """The window's plane dialog learns every axis from one read; the message names no option
    (the command line adds ``--z`` / ``--t`` itself)."""
    with pytest.raises(PlanesNeeded) as info:
        read_image(formats_dir / name)
    assert info.value.sizes == STACKS[name] and "--" not in str(info.value)
    if len(STACKS[name]) == 2:  # a choice for one axis: the other is still asked for
        with pytest.raises(PlanesNeeded) as info:
            read_image(formats_dir / name, PlaneChoice(t=0))
        assert info.value.sizes == {"Z": STACKS[name]["Z"]}
    z = "max" if "Z" in STACKS[name] else None
    t = 0 if "T" in STACKS[name] else None
    assert read_image(formats_dir / name, PlaneChoice(z=z, t=t)).data.ndim == 3


def test_stacks_need_a_plane_and_scenes_exist(formats_dir: Path) -> None:
    cluster = formats_dir / "nd2/cluster.nd2"  # T3 Z10 C2
    with pytest.raises(PlanesNeeded, match="10 z-planes and 3 time points; choose a z-plane or the maximum projection "
                                           "and a time point"):
        read_image(cluster)
    with pytest.raises(PlanesNeeded, match="10 z-planes; choose a z-plane or the maximum projection"):
        read_image(cluster, PlaneChoice(t=1))
    with pytest.raises(ImageReadError, match="z-plane 10 does not exist"):
        read_image(cluster, PlaneChoice(z=10, t=0))
    czi = formats_dir / "czi/S3_1Pos_2Mosaic_T1_Z1_CH1.czi"
    with pytest.raises(ImageReadError, match=r"holds 3 scenes \(TR1, P1, TR2\)"):
        read_image(czi)
    with pytest.raises(ImageReadError, match="scene 3 does not exist"):
        read_image(czi, scene=3)


def test_pixels_agree_with_the_format_libraries(formats_dir: Path) -> None:
    import nd2
    import tifffile

    path = formats_dir / "nd2/cluster.nd2"  # (T, Z, C, Y, X)
    raw = nd2.imread(path)
    np.testing.assert_array_equal(read_image(path, PlaneChoice(z=4, t=2)).data, raw[2, 4])
    np.testing.assert_array_equal(read_image(path, PlaneChoice(z="max", t=1)).data, raw[1].max(axis=0))
    mm = formats_dir / "ome-tiff/181003_multi_pos_time_course_1_MMStack.ome.tif"
    with tifffile.TiffFile(mm) as tif:  # Micro-Manager's own layout: T, R (position), Y, X
        stack = tif.series[0].asarray()
    for k in (0, 1):
        np.testing.assert_array_equal(read_image(mm, PlaneChoice(t=3), scene=k).data[0], stack[3, k])
    assert not np.array_equal(stack[3, 0], stack[3, 1])
