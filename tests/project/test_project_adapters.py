"""The adapter library: add, rename, delete, export and import as one file."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from efficell_app.core.errors import AdapterError
from efficell_app.core.model.adapter_io import META_KEY, AdapterMeta, read_adapter_meta
from efficell_app.project import Project, ProjectError


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _core_adapter(path: Path, name: str = "nuclei v1") -> Path:
    """A file with the metadata efficell_app.core writes (tensors are small random arrays)."""
    meta = AdapterMeta(encoder="compact", encoder_sha256="random", in_channels=(32, 64), stride=8, config={},
                       name=name, metrics={"AP50": 0.81}, training={"images": ["a.tif", "b.tif"]})
    rng = np.random.default_rng(3)
    save_file({"w": rng.normal(size=(16, 16)).astype(np.float32)}, str(path), metadata={META_KEY: meta.to_json()})
    return path


def test_add_list_rename_delete(project: Project, adapter_file) -> None:  # noqa: ANN001
    f = adapter_file("trained.safetensors")
    info = project.add_adapter(f, "HeLa nuclei", "compact", ["img1.tif", "img2.tif"], {"AP50": 0.9, "F1": 0.93},
                               {"epochs": 40})
    assert info.path.parent == project.root / "adapters" and info.path.is_file()
    assert info.sha256 == _sha(f) and info.size == f.stat().st_size
    assert info.training_images == ("img1.tif", "img2.tif") and info.metrics["F1"] == 0.93
    assert info.metadata == {"epochs": 40}
    with pytest.raises(ProjectError, match="already exists"):
        project.add_adapter(f, "HeLa nuclei", "compact")
    project.add_adapter(adapter_file("other.safetensors", seed=1), "A first", "compact")
    assert [a.name for a in project.list_adapters()] == ["A first", "HeLa nuclei"]
    renamed = project.rename_adapter("HeLa nuclei", "HeLa nuclei (40x)")
    assert renamed.id == info.id and project.get_adapter(info.id).name == "HeLa nuclei (40x)"
    with pytest.raises(ProjectError, match="already exists"):
        project.rename_adapter(info.id, "A first")
    project.delete_adapter("HeLa nuclei (40x)")
    assert not info.path.exists() and (project.root / "adapters").is_dir()
    with pytest.raises(KeyError):
        project.get_adapter("HeLa nuclei (40x)")


def test_not_an_adapter_is_refused(project: Project, tmp_path: Path) -> None:
    bad = tmp_path / "notes.safetensors"
    bad.write_text("hello")
    with pytest.raises(AdapterError, match="not an adapter file"):
        project.add_adapter(bad, "x", "compact")
    plain = tmp_path / "plain.safetensors"
    save_file({"w": np.zeros(3, np.float32)}, str(plain))
    with pytest.raises(AdapterError, match="which encoder"):
        project.add_adapter(plain, "x")
    assert project.list_adapters() == []


def test_fields_default_to_the_files_own_metadata(project: Project, tmp_path: Path) -> None:
    info = project.add_adapter(_core_adapter(tmp_path / "a.safetensors"))
    assert (info.name, info.encoder) == ("nuclei v1", "compact")
    assert info.metrics == {"AP50": 0.81} and info.training_images == ("a.tif", "b.tif")


def test_export_unchanged_entry_is_byte_identical(project: Project, tmp_path: Path) -> None:
    src = _core_adapter(tmp_path / "a.safetensors")
    project.add_adapter(src)
    out = project.export_adapter("nuclei v1", tmp_path)
    assert out == tmp_path / "nuclei_v1.safetensors"
    assert _sha(out) == _sha(src)


def test_export_import_roundtrip_carries_the_entry(project: Project, tmp_path: Path, adapter_file) -> None:  # noqa: ANN001
    src = _core_adapter(tmp_path / "a.safetensors")
    project.add_adapter(src)
    project.rename_adapter("nuclei v1", "Lab nuclei")
    out = project.export_adapter("Lab nuclei", tmp_path / "shared.safetensors")
    # Still a valid adapter for the core, with identical tensors.
    assert read_adapter_meta(out).encoder == "compact"
    assert np.array_equal(load_file(str(out))["w"], load_file(str(src))["w"])
    other = Project.create(tmp_path / "other lab")
    try:
        imported = other.import_adapter(out)
        assert imported.name == "Lab nuclei" and imported.encoder == "compact"
        assert imported.metrics == {"AP50": 0.81} and imported.training_images == ("a.tif", "b.tif")
        again = other.import_adapter(out)
        assert again.name == "Lab nuclei (2)"
        plain = other.import_adapter(adapter_file("legacy.safetensors", encoder="vit_b"))
        assert (plain.name, plain.encoder) == ("legacy", "vit_b")
    finally:
        other.close()
