"""Fixtures for project tests: a fresh project, a folder of real images, a simple segmenter."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from efficell_app.project import Project


@pytest.fixture()
def project(tmp_path: Path) -> Iterator[Project]:
    p = Project.create(tmp_path / "proj")
    yield p
    p.close()


@pytest.fixture()
def image_folder(tmp_path: Path, dsb_pairs: list[tuple[Path, Path]], phase_pairs: list[tuple[Path, Path]]) -> Path:
    """Real images in nested folders, plus files that are not images."""
    root = tmp_path / "experiment"
    (root / "plate1").mkdir(parents=True)
    (root / "plate2" / "well_b").mkdir(parents=True)
    for img, _ in dsb_pairs[:3]:
        shutil.copy(img, root / "plate1" / img.name)
    for img, _ in phase_pairs[:1]:
        shutil.copy(img, root / "plate2" / "well_b" / img.name)
    (root / "notes.txt").write_text("microscope settings")
    (root / "plate1" / "analysis.csv").write_text("a,b\n1,2\n")
    (root / "plate2" / "broken.tif").write_bytes(b"II*\x00 this is not really a tiff")
    (root / ".DS_Store").write_bytes(b"\x00")
    return root


@dataclass
class _Result:
    labels: np.ndarray
    n_cells: int
    diameter: float
    settings: dict[str, Any]
    seconds: float


@dataclass
class ThresholdSegmenter:
    """A small real segmenter with the Segmenter interface: Otsu threshold + connected components."""

    calls: list[Path] = field(default_factory=list)
    fail_on: str = ""

    @property
    def identity(self) -> dict[str, Any]:
        return {"app_version": "test", "encoder": "otsu", "encoder_sha256": "0" * 64, "adapter": None,
                "adapter_sha256": None}

    def segment(self, img: Any, diameter: float | None = None, channels: Any = None, cancel: Any = None,
                progress: Any = None) -> _Result:
        from skimage.filters import threshold_otsu
        from skimage.measure import label

        if cancel is not None:
            cancel.raise_if_cancelled()
        if self.fail_on and img.path is not None and self.fail_on in img.path.name:
            raise RuntimeError("simulated failure")
        self.calls.append(img.path)
        t0 = time.perf_counter()
        x = img.data[0].astype(np.float32)
        labels = label(x > threshold_otsu(x)).astype(np.int32)
        n = int(labels.max())
        return _Result(labels, n, diameter or 0.0, {"method": "otsu", "diameter": diameter},
                       time.perf_counter() - t0)


@pytest.fixture()
def segmenter() -> ThresholdSegmenter:
    return ThresholdSegmenter()


def make_adapter_file(path: Path, encoder: str = "compact", seed: int = 0, **meta: str) -> Path:
    """A small safetensors file standing in for a trained adapter (the library treats it as opaque)."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    save_file({"decoder.weight": rng.normal(size=(8, 4)).astype(np.float32),
               "decoder.bias": np.zeros(8, np.float32)}, str(path), metadata={"encoder": encoder, **meta})
    return path


@pytest.fixture()
def adapter_file(tmp_path: Path):  # noqa: ANN201 - returns the factory
    """``adapter_file(name, encoder="compact", seed=0, **metadata) -> Path`` in a temporary folder."""

    def make(name: str = "adapter.safetensors", encoder: str = "compact", seed: int = 0, **meta: str) -> Path:
        return make_adapter_file(tmp_path / name, encoder, seed, **meta)

    return make
