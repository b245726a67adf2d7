"""Large images with bounded memory: memory-mapped TIFFs, sampled percentiles, strips on a memory map."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from efficell_app.core import images
from efficell_app.core.errors import ImageReadError
from efficell_app.core.images import ImageData, PlaneChoice, model_input, percentile_range, read_image, subsample_grid
from efficell_app.core.standins import cone_cells, same_partition
from efficell_app.core.strips import ModelInput, StripPlan, segment_in_strips

REPO = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------- memory-mapped reading


def test_uncompressed_tiff_is_memory_mapped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = np.random.default_rng(0).integers(0, 4000, (300, 200), dtype=np.uint16)
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, a)
    img = read_image(path, memmap=True)
    assert isinstance(img.data, np.memmap) and not img.data.flags.writeable
    assert img.data.shape == (1, 300, 200) and np.array_equal(img.data[0], a)
    with pytest.raises(ValueError):
        img.data[0, 0, 0] = 1  # read-only: the file is never written through the map
    # Automatic: small files are read into memory, files of at least MEMMAP_MIN_BYTES are mapped.
    assert not isinstance(read_image(path).data, np.memmap)
    assert not isinstance(read_image(path, memmap=False).data, np.memmap)
    monkeypatch.setattr(images, "MEMMAP_MIN_BYTES", a.nbytes)
    assert isinstance(read_image(path).data, np.memmap)


def test_memory_mapped_rgb_and_stacks_are_views(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 255, (120, 90, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    img = read_image(tmp_path / "rgb.tif", memmap=True)
    assert isinstance(img.data, np.memmap) and img.rgb
    assert np.array_equal(img.data, np.moveaxis(rgb, -1, 0))  # interleaved: a strided (C, H, W) view
    z = rng.integers(0, 4000, (5, 2, 64, 80), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "z.tif", z, imagej=True, metadata={"axes": "ZCYX"})
    plane = read_image(tmp_path / "z.tif", PlaneChoice(z=3), memmap=True)
    assert isinstance(plane.data, np.memmap) and np.array_equal(plane.data, z[3])
    mip = read_image(tmp_path / "z.tif", PlaneChoice(z="max"), memmap=True)
    assert np.array_equal(mip.data, z.max(axis=0))


@pytest.mark.parametrize("kwargs", [{"compression": "zlib"}, {"tile": (64, 64)}, {"byteorder": ">"}])
def test_compressed_tiled_or_swapped_tiffs_still_read(tmp_path: Path, kwargs: dict) -> None:
    a = np.random.default_rng(2).integers(0, 4000, (128, 192), dtype=np.uint16)
    path = tmp_path / "other.tif"
    tifffile.imwrite(path, a, **kwargs)
    img = read_image(path, memmap=True)
    assert not isinstance(img.data, np.memmap)
    assert np.array_equal(img.data[0], a)


def test_truncated_uncompressed_tiff_is_an_error_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "cut.tif"
    tifffile.imwrite(path, np.arange(300 * 200, dtype=np.uint16).reshape(300, 200))
    path.write_bytes(path.read_bytes()[:60_000])
    with pytest.raises(ImageReadError, match="cut.tif"):
        read_image(path, memmap=True)


def test_memory_mapped_float_with_nan_is_copied_and_fixed(tmp_path: Path) -> None:
    a = np.random.default_rng(3).random((64, 64)).astype(np.float32)
    a[3, 3] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", a)
    img = read_image(tmp_path / "nan.tif", memmap=True)
    assert np.isfinite(img.data).all() and any("NaN" in n for n in img.notes)


# ----------------------------------------------------------------------------- sampled percentiles


def rank_error(full: np.ndarray, value: float, q: float) -> float:
    """How far (in fractions of the pixels) ``value`` is from being the q-th percentile of ``full``."""
    n = full.size
    below = np.count_nonzero(full < value) / n
    upto = np.count_nonzero(full <= value) / n
    target = q / 100.0
    return 0.0 if below <= target <= upto else min(abs(below - target), abs(upto - target))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), h=st.integers(40, 400), w=st.integers(40, 400),
       kind=st.sampled_from(["uniform", "normal", "exponential", "blobs", "gradient"]),
       dtype=st.sampled_from([np.uint8, np.uint16, np.float32]), max_samples=st.integers(3_000, 20_000))
def test_subsampled_percentiles_are_close_to_the_whole_image(seed: int, h: int, w: int, kind: str, dtype: type,
                                                              max_samples: int) -> None:
    rng = np.random.default_rng(seed)
    if kind == "uniform":
        x = rng.random((h, w))
    elif kind == "normal":
        x = rng.normal(0.5, 0.15, (h, w))
    elif kind == "exponential":
        x = rng.exponential(0.1, (h, w))
    elif kind == "blobs":
        x = cone_cells(h, w, max(1, h * w // 2000), seed).astype(np.float64) / 4100 + rng.normal(0, 0.02, (h, w))
    else:
        x = np.linspace(0, 1, w)[None, :] * np.linspace(0.5, 1, h)[:, None] + rng.normal(0, 0.05, (h, w))
    scale = {np.uint8: 250, np.uint16: 60_000, np.float32: 1.0}[dtype]
    img = (np.clip(x, 0, 1) * scale).astype(dtype)
    sample = subsample_grid(img, max_samples)
    assert sample.size <= 1.3 * max_samples or img.size <= max_samples
    lo, hi = percentile_range(img, 1.0, 99.8, max_samples=max_samples)
    # Grid samples of >= 3,000 pixels: within 1.5 percentile ranks of the whole image's percentiles.
    assert rank_error(img, lo, 1.0) <= 0.015
    assert rank_error(img, hi, 99.8) <= 0.015
    if img.size <= max_samples:  # small images: exactly the whole image's percentiles
        assert (lo, hi) == tuple(float(v) for v in np.percentile(img.astype(np.float32), [1.0, 99.8]))


def test_default_sample_of_a_large_image_matches_and_reads_few_rows() -> None:
    rng = np.random.default_rng(4)
    img = rng.gamma(2.0, 300.0, (3000, 2500)).astype(np.uint16)  # 7.5 M pixels: sampled
    sample = subsample_grid(img)
    assert sample.base is img or sample.base is img.base  # a view: nothing is copied to sample
    assert 1_000_000 < sample.size <= 4_000_000 and sample.shape[0] < img.shape[0]
    lo, hi = percentile_range(img)
    assert rank_error(img, lo, 1.0) < 0.001 and rank_error(img, hi, 99.8) < 0.001


# ----------------------------------------------------------------------------- strips on a memory map


def test_strips_of_a_memory_mapped_image_equal_the_whole_image(pointwise_segmenter, tmp_path: Path) -> None:  # noqa: ANN001
    seg = pointwise_segmenter
    a = cone_cells(360, 240, 110, seed=5)
    tifffile.imwrite(tmp_path / "blobs.tif", a)
    mapped = read_image(tmp_path / "blobs.tif", memmap=True)
    assert isinstance(mapped.data, np.memmap)
    whole = seg.segment(ImageData(a[None]), diameter=24.0)  # in memory, unstriped
    assert whole.n_cells > 20 and "strips" not in whole.settings
    seg.strip_pixels = 100 * 100
    strips = seg.segment(mapped, diameter=24.0)
    assert "strips" in strips.settings
    assert same_partition(whole.labels, strips.labels)
    again = segment_in_strips(seg, ImageData(a[None]), 24.0, plan=StripPlan(**strips.settings["strips"]))
    assert np.array_equal(again.labels, strips.labels)  # memory map or array: the same labels
    # The model input rows of the map are those of the in-memory image.
    assert np.array_equal(ModelInput(mapped, None).rows(0, 360), model_input(ImageData(a[None])))


def test_strips_with_the_random_network_on_a_memory_map(random_segmenter, tmp_path: Path) -> None:  # noqa: ANN001
    import torch

    torch.set_num_threads(1)
    seg = random_segmenter
    seg.predictor.tile, seg.predictor.overlap = 128, 32
    a = cone_cells(260, 200, 50, seed=6)
    tifffile.imwrite(tmp_path / "b.tif", a)
    mapped = read_image(tmp_path / "b.tif", memmap=True)
    plan = StripPlan(core_rows=50, margin=40)
    got = segment_in_strips(seg, mapped, 24.0, plan=plan)
    ref = segment_in_strips(seg, ImageData(a[None]), 24.0, plan=plan)
    assert np.array_equal(got.labels, ref.labels)


# ----------------------------------------------------------------------------- bounded memory

_MEMORY_SCRIPT = textwrap.dedent('''
    import json, sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[3])
    import numpy as np, tifffile, torch
    torch.set_num_threads(1)
    from efficell_app.core import strips
    from efficell_app.core.encoders import build_encoder
    from efficell_app.core.images import read_image
    from efficell_app.core.model import EffiCellModel
    from efficell_app.core.model.adapter_io import load_adapter
    from efficell_app.core.pipeline import Segmenter
    from efficell_app.core.standins import PointwiseModel

    def status(key):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    enc = build_encoder("efficell_compact", weights=None, small=True)
    ad, meta, sha = load_adapter(Path(sys.argv[2]), "efficell_compact", "random")
    seg = Segmenter(EffiCellModel(enc, ad), meta, sha, None, "cpu")
    seg.predictor.model = PointwiseModel()
    seg.strip_pixels = 1
    strips.WINDOW_PIXELS = 600 * 1024
    img = read_image(sys.argv[1], memmap=True)
    # Warm up every code path on a small image first, so the baseline holds the libraries' own memory.
    from efficell_app.core.images import ImageData
    seg.segment(ImageData(np.asarray(img.data[:, :300, :300])), diameter=24.0)
    base = status("VmRSS")
    res = seg.segment(img, diameter=24.0)
    print(json.dumps({"growth": status("VmHWM") - base, "cells": res.n_cells, "mapped": isinstance(img.data, np.memmap),
                      "strips": res.settings.get("strips"), "labels": res.labels.nbytes}))
''')


@pytest.mark.slow
def test_strip_segmentation_of_a_3000_square_image_has_bounded_memory(tmp_path: Path, random_adapter_file: Path) -> None:
    """3,000 x 3,000 uint16 (memory-mapped) in strips of ~600 k pixels, with a pointwise stand-in network.

    Bound: what grows with the image is the int32 labels (4 B/px = 36 MB) and the file pages of
    the raw image (2 B/px = 18 MB). Everything else depends on the width only: the accumulators
    of one tile row (7 float32 maps x 640 rows = 54 MB), the labeller's buffer (4 maps x 1,024
    rows = 49 MB), one block of model input and of yielded dense rows (~60 MB) and the watershed
    of one 512-row window (~40 B/px x 1.5 M px = 60 MB): about 280 MB in all (measured: 267 MB).
    The unstriped path would need about 720 MB (3 input planes + 7 dense maps = 40 B/px, plus the
    watershed of all 9 M pixels). The growth must stay under 6 B/px + 300 MB = 354 MB.
    """
    n = 3000
    rng = np.random.default_rng(7)
    tile = cone_cells(500, 500, 220, seed=8)
    a = np.tile(tile, (n // 500, n // 500)) + rng.integers(0, 30, (n, n), dtype=np.uint16)
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, a)
    del a
    out = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, str(path), str(random_adapter_file), str(Path(__file__).parent)],
                         capture_output=True, text=True, check=False, cwd=REPO, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["mapped"] and r["strips"] is not None and r["cells"] > 1000
    bound = 6 * n * n + 300 * 2**20
    assert r["growth"] < bound, f"peak RSS grew by {r['growth'] / 2**20:.0f} MB (bound {bound / 2**20:.0f} MB)"
