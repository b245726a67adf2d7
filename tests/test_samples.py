"""The first-run sample project."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from efficell_app.core.errors import InputError
from efficell_app.core.images import read_mask
from efficell_app.core.resources import samples_dir
from efficell_app.project import Project
from efficell_app.samples import ANNOTATION_NOTE, create_sample_project, default_sample_project_dir, sample_images


def test_sample_images_are_grouped() -> None:
    items = sample_images()
    assert {s for _, _, s in items} == {"Fluorescent nuclei", "Phase-contrast cells"}
    assert all(mask is not None and mask.is_file() for _, mask, _ in items)


def test_create_sample_project(tmp_path: Path) -> None:
    lines: list[str] = []
    root = create_sample_project(tmp_path / "Sample", progress=lines.append)
    assert root == tmp_path / "Sample" and Project.is_project(root)
    with Project.open(root) as p:
        assert p.name == "EffiCell sample project"
        assert sorted(s.name for s in p.list_sets()) == ["Fluorescent nuclei", "Phase-contrast cells"]
        images = p.list_images()
        assert len(images) == len(sample_images())
        for rec in images:
            assert rec.path.is_relative_to(root)  # copied in: the project is self-contained
            ann = p.load_annotation(rec.id)
            shipped = read_mask(samples_dir() / "masks" / rec.path.name)
            assert ann is not None and np.array_equal(ann > 0, shipped > 0) and ann.max() == shipped.max()
            assert p.annotation_history(rec.id)[0].note == ANNOTATION_NOTE
    assert any("Phase-contrast" in line for line in lines)
    # calling it again (every start) leaves the existing project alone
    assert create_sample_project(root) == root


def test_create_with_segmenter_records_results(tmp_path: Path, random_segmenter) -> None:  # noqa: ANN001
    small = tmp_path / "samples" / "images"  # one small sample keeps the random model fast
    small.mkdir(parents=True)
    shutil.copy(samples_dir() / "images" / "nuclei_fluo_431b9b0c.tif", small)
    root = create_sample_project(tmp_path / "S", segmenter=random_segmenter, annotations=False, samples=small.parent,
                                 diameter=30.0)
    with Project.open(root) as p:
        for rec in p.list_images():
            assert p.load_annotation(rec.id) is None
            res = p.latest_result(rec.id)
            assert res is not None and p.load_labels(res).shape == (rec.height, rec.width)
        assert len(p.list_runs()) == 1


def test_failure_leaves_nothing_behind(tmp_path: Path) -> None:
    bad = tmp_path / "samples"
    (bad / "images").mkdir(parents=True)
    (bad / "images" / "nuclei_fluo_broken.tif").write_bytes(b"not a tiff")
    with pytest.raises(InputError, match="nuclei_fluo_broken.tif"):
        create_sample_project(tmp_path / "P", samples=bad)
    assert not (tmp_path / "P").exists()
    with pytest.raises(InputError, match="no sample images"):
        create_sample_project(tmp_path / "Q", samples=tmp_path / "empty")
    assert not (tmp_path / "Q").exists()


def test_default_dir_follows_efficell_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EFFICELL_HOME", str(tmp_path))
    assert default_sample_project_dir() == tmp_path / "Sample project"
