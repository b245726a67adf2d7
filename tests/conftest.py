"""Shared fixtures: paths to the real test images (copied from ../shared/data with attribution)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

TEST_DATA = Path(__file__).parent / "data"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


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


@pytest.fixture(autouse=True)
def _isolated_user_dirs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Weights cache and settings never touch the real user folders during tests."""
    home = tmp_path_factory.mktemp("efficell_home")
    monkeypatch.setenv("EFFICELL_HOME", str(home))
