"""Issue 18, case 1: a project never deletes a file it did not copy in itself.

Paths are normalised and resolved once, when they enter the project; whether a file is the
project's own copy is decided from the record written when the project copied it (the
``copied`` column, schema 2), never from how its path is spelled.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from efficell_app.project import Project, store


def _tif(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, np.random.default_rng(seed).integers(0, 255, (32, 40), dtype=np.uint8))
    return path


def _files(folder: Path) -> dict[str, bytes]:
    return {str(f.relative_to(folder)): f.read_bytes() for f in sorted(folder.rglob("*")) if f.is_file()}


def test_a_reference_spelled_through_images_is_not_deleted(tmp_path: Path) -> None:
    """(a) ``P/images/../../user/raw.tif`` is the user's file: remove_image keeps it."""
    raw = _tif(tmp_path / "user" / "raw.tif")
    with Project.create(tmp_path / "P") as p:
        spelled = p.root / "images" / ".." / ".." / "user" / "raw.tif"
        report = p.add_files([spelled], "s")
        assert report.n_added == 1
        rec = p.get_image(report.added[0])
        assert rec.path == raw.resolve() and ".." not in rec.stored_path
        p.remove_image(rec.id)
    assert raw.is_file()


def test_b_user_folder_named_images_inside_the_project_is_kept(tmp_path: Path) -> None:
    """(b) A project made in a folder that already has the user's ``images/day1``."""
    root = tmp_path / "P"
    originals = [_tif(root / "images" / "day1" / f"cell{i}.tif", i) for i in range(3)]
    before = _files(root / "images")
    with Project.create(root) as p:
        ids = p.add_folder(root / "images" / "day1", "day1").added
        assert len(ids) == 3
        p.remove_image(ids[0])
        p.delete_set("day1")
        assert p.list_images() == []
    assert all(f.is_file() for f in originals)
    assert _files(root / "images") == before


def test_c_own_data_spelled_through_images_is_refused(tmp_path: Path) -> None:
    """(c) ``images/../results/...`` is the project's own data, however it is spelled."""
    user = _tif(tmp_path / "user" / "a.tif")
    with Project.create(tmp_path / "P") as p:
        i = p.add_files([user], "s").added[0]
        res = p.record_result(i, np.ones((32, 40), np.int32), {}, {})
        spelled = p.root / "images" / ".." / "results" / res.parent.name / res.name
        report = p.add_files([spelled], "t")
        assert report.n_added == 0
        assert any("project's own data" in why for _, why in report.skipped)
        report = p.add_folder(p.root / "images" / ".." / "results", "t")
        assert report.n_added == 0
        assert res.is_file()


def test_d_one_file_under_several_spellings_is_one_record(tmp_path: Path) -> None:
    raw = _tif(tmp_path / "user" / "sub" / "raw.tif")
    (tmp_path / "user" / "other").mkdir()
    spellings = [raw, tmp_path / "user" / "other" / ".." / "sub" / "raw.tif",
                 tmp_path / "user" / "sub" / "." / ".." / "sub" / "raw.tif"]
    os.symlink(raw, tmp_path / "user" / "link.tif")
    spellings.append(tmp_path / "user" / "link.tif")
    with Project.create(tmp_path / "P") as p:
        first = p.add_files(spellings[:1], "s")
        rest = p.add_files(spellings[1:], "s")
        assert first.n_added == 1 and rest.n_added == 0 and rest.duplicates == 3
        assert len(p.list_images("s")) == 1
        # a relative spelling from another working folder is the same file too
        cwd = Path.cwd()
        try:
            os.chdir(tmp_path / "user" / "other")
            assert p.add_files([Path("..") / "sub" / "raw.tif"], "s").duplicates == 1
        finally:
            os.chdir(cwd)


def test_copies_are_deleted_but_only_when_nothing_else_uses_them(tmp_path: Path) -> None:
    src = _tif(tmp_path / "user" / "exp" / "a.tif")
    with Project.create(tmp_path / "P") as p:
        i = p.add_folder(src.parent, "copied", copy=True).added[0]
        copy = p.get_image(i).path
        assert copy.is_file() and copy != src
        j = p.add_files([copy], "ref").added[0]  # the same copy referenced from another set
        p.delete_set("copied")
        assert copy.is_file(), "a copy still used by another set was deleted"
        p.remove_image(j)
        assert not copy.exists(), "the project's own copy was left behind"
    assert src.is_file()


def test_a_copy_the_user_replaced_is_kept(tmp_path: Path) -> None:
    src = _tif(tmp_path / "user" / "exp" / "a.tif")
    with Project.create(tmp_path / "P") as p:
        i = p.add_folder(src.parent, "copied", copy=True).added[0]
        copy = p.get_image(i).path
        _tif(copy, seed=7)  # the user wrote their own file at that place
        p.remove_image(i)
        assert copy.is_file()


def _v1_project(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A project written by EffiCell with schema 1, holding an image it copied in (which schema 1
    told from a user's file only by its ``images/`` prefix)."""
    with monkeypatch.context() as m:
        m.setattr(store, "MIGRATIONS", store.MIGRATIONS[:1])
        with Project.create(root) as p:
            assert "copied" not in [r[1] for r in p._store.query("PRAGMA table_info(images)")]
            dest = _tif(root / "images" / "old" / "exp" / "a.tif")
            with p._store.tx() as conn:
                conn.execute("INSERT INTO sets(name, created) VALUES ('old', 'x')")
                conn.execute("INSERT INTO images(set_id, path, size, quick_hash, width, height, channels, added) "
                             "VALUES (1, 'images/old/exp/a.tif', ?, 'q', 40, 32, 1, 'x')", (dest.stat().st_size,))


def test_projects_of_schema_1_are_migrated_and_keep_every_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Schema 1 cannot tell a copy from a user's ``images/`` folder: after the migration every old
    image counts as the user's (never deleted), and the migration backs the index up first."""
    root = tmp_path / "P"
    _v1_project(root, monkeypatch)
    with Project.open(root) as p:
        assert int(p.info()["schema_version"]) == store.SCHEMA_VERSION >= 2
        p.delete_set("old")
    assert (root / "images" / "old" / "exp" / "a.tif").is_file()
    assert (root / f"{store.DB_NAME}.bak-v1").is_file()
    with sqlite3.connect(root / f"{store.DB_NAME}.bak-v1") as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks")
def test_a_symlink_into_the_project_is_not_a_copy(tmp_path: Path) -> None:
    """A user's symlink ``P/images/day1 -> /data/day1``: the files behind it are the user's."""
    data = tmp_path / "data" / "day1"
    originals = [_tif(data / f"c{i}.tif", i) for i in range(2)]
    root = tmp_path / "P"
    (root / "images").mkdir(parents=True)
    os.symlink(data, root / "images" / "day1")
    with Project.create(root) as p:
        ids = p.add_folder(root / "images" / "day1", "day1").added
        assert len(ids) == 2 and all(p.get_image(i).path.parent == data.resolve() for i in ids)
        p.delete_set("day1")
    assert all(f.is_file() for f in originals)
