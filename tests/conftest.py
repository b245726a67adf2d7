"""Shared fixtures: paths to the real test images (copied from ../shared/data with attribution)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

TEST_DATA = Path(__file__).parent / "data"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SHARED_FORMATS = Path(__file__).resolve().parents[2] / "shared" / "formats"


@pytest.fixture(scope="session")
def test_data() -> Path:
    return TEST_DATA


@pytest.fixture(scope="session")
def dsb_pairs() -> list[tuple[Path, Path]]:
    """(image, mask) pairs of small DSB2018 fluorescence nuclei images (CC0)."""
    d = TEST_DATA / "dsb2018_fluo"
    return [(p, d / "masks" / p.name) for p in sorted((d / "images").glob("*.tif"))]


@pytest.fixture(scope="session")
def phase_pairs() -> list[tuple[Path, Path]]:
    """(image, mask) pairs of Usiigaci phase-contrast cells (MIT)."""
    d = TEST_DATA / "usiigaci_phase"
    return [(p, d / "masks" / p.name) for p in sorted((d / "images").glob("*.tif"))]


@pytest.fixture(scope="session")
def formats_dir() -> Path:
    """../shared/formats: real microscope files (CZI, ND2, LIF, OIB, DV, OME-TIFF; licences in its
    README, so they are read in place, never copied into the repository)."""
    if not (SHARED_FORMATS / "README.md").is_file():
        pytest.skip(f"real microscope files not found at {SHARED_FORMATS} (../shared/formats beside the checkout)")
    return SHARED_FORMATS


@pytest.fixture(scope="session")
def formats_expected() -> dict:
    """What EffiCell must read from each file of ../shared/formats (tests/data/formats_expected.json)."""
    import json

    table = json.loads((TEST_DATA / "formats_expected.json").read_text(encoding="utf-8"))
    table.pop("_about")
    return table


@pytest.fixture(autouse=True)
def _isolated_user_dirs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Weights cache and settings never touch the real user folders during tests."""
    home = tmp_path_factory.mktemp("efficell_home")
    monkeypatch.setenv("EFFICELL_HOME", str(home))


@pytest.fixture(scope="session")
def random_adapter_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An adapter file with random weights for the *small* compact encoder (fast; for plumbing tests)."""
    import torch

    from efficell_app.core.encoders import build_encoder
    from efficell_app.core.model import build_adapters
    from efficell_app.core.model.adapter_io import AdapterMeta, save_adapter

    torch.manual_seed(0)
    enc = build_encoder("efficell_compact", weights=None, small=True)
    ad = build_adapters(enc.out_channels, enc.stride)
    path = tmp_path_factory.mktemp("adapters") / "random_small.safetensors"
    meta = AdapterMeta(encoder="efficell_compact", encoder_sha256="random", in_channels=enc.out_channels,
                       stride=enc.stride, config=ad.config.to_dict(), name="random-small")
    save_adapter(path, ad, meta)
    return path


@pytest.fixture()
def random_segmenter(random_adapter_file: Path):
    """A real Segmenter (small compact encoder, random weights, CPU): exercises every code path quickly."""
    import torch

    from efficell_app.core.encoders import build_encoder
    from efficell_app.core.model import EffiCellModel
    from efficell_app.core.model.adapter_io import load_adapter
    from efficell_app.core.pipeline import Segmenter

    torch.manual_seed(0)
    enc = build_encoder("efficell_compact", weights=None, small=True)
    ad, meta, sha = load_adapter(random_adapter_file, "efficell_compact", "random")
    return Segmenter(EffiCellModel(enc, ad), meta, sha, random_adapter_file, "cpu")


@pytest.fixture()
def pointwise_segmenter(random_segmenter):  # noqa: ANN001, ANN201
    """``random_segmenter`` with the 1x1-convolution stand-in network (:class:`standins.PointwiseModel`):
    its labels are a pure function of the pixels, so strips, tiles and memory maps must reproduce them."""
    from efficell_app.core.standins import PointwiseModel

    random_segmenter.predictor.model = PointwiseModel()
    random_segmenter.predictor.tile = 128
    random_segmenter.predictor.overlap = 32
    return random_segmenter


@pytest.fixture(scope="session")
def dask_client():
    """A real Dask ``LocalCluster`` of 2 worker processes (one task each) and its client, shared by the
    cluster tests (starting one takes seconds); skipped without the ``cluster`` extra."""
    pytest.importorskip("distributed", reason="the cluster extra is not installed: pip install 'efficell[cluster]'")
    import logging

    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        yield client
