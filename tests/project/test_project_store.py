"""Opening, locking, versions and moving of project folders."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from efficell_app.project import (NotAProjectError, Project, ProjectError, ProjectLockedError, ProjectVersionError,
                                  store)


def test_create_makes_layout_and_reopens(tmp_path: Path) -> None:
    root = tmp_path / "My project"
    with Project.create(root, name="Lab A") as p:
        assert p.name == "Lab A"
        info = p.info()
        assert info["schema_version"] == str(store.SCHEMA_VERSION)
    for sub in store.SUBDIRS:
        assert (root / sub).is_dir()
    with Project.open(root) as p:
        assert p.name == "Lab A"
        assert p.info()["project_id"] == info["project_id"]
    assert Project.is_project(root)


def test_wal_and_integrity(project: Project) -> None:
    mode = project._store.query("PRAGMA journal_mode")[0][0]
    assert mode == "wal"
    assert project._store.query("PRAGMA integrity_check")[0][0] == "ok"


def test_create_refuses_existing_project(tmp_path: Path) -> None:
    Project.create(tmp_path / "p").close()
    with pytest.raises(ProjectError, match="already exists"):
        Project.create(tmp_path / "p")


def test_open_non_project(tmp_path: Path) -> None:
    with pytest.raises(NotAProjectError, match="folder not found"):
        Project.open(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotAProjectError, match="missing"):
        Project.open(tmp_path / "empty")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / store.DB_NAME).write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(NotAProjectError, match="damaged"):
        Project.open(tmp_path / "junk")
    # The lock was released: the same folder can be tried again (still refused the same way).
    with pytest.raises(NotAProjectError):
        Project.open(tmp_path / "junk")


def test_second_open_in_same_process_is_refused(project: Project) -> None:
    with pytest.raises(ProjectLockedError, match="already open"):
        Project.open(project.root)
    project.close()
    with Project.open(project.root) as again:  # closed: the lock is free
        assert not again.closed


def test_closed_project_says_so(project: Project) -> None:
    project.close()
    with pytest.raises(ProjectError, match="closed"):
        project.list_sets()
    project.close()  # twice is fine


def test_newer_project_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "p"
    Project.create(root).close()
    conn = sqlite3.connect(root / store.DB_NAME)
    conn.execute(f"PRAGMA user_version = {store.SCHEMA_VERSION + 3}")
    conn.execute("UPDATE meta SET value = '9.0.0' WHERE key = 'app_version'")
    conn.commit()
    conn.close()
    with pytest.raises(ProjectVersionError) as err:
        Project.open(root)
    msg = str(err.value)
    assert "9.0.0" in msg and f"format {store.SCHEMA_VERSION + 3}" in msg and "Update EffiCell" in msg
    with pytest.raises(ProjectVersionError):  # and the refused open did not keep the lock
        Project.open(root)


def test_old_project_is_migrated_with_backup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, project: Project,
                                              image_folder: Path) -> None:
    project.add_folder(image_folder, "exp")
    root = project.root
    project.close()

    def v_next(conn: sqlite3.Connection) -> None:
        conn.execute("ALTER TABLE images ADD COLUMN comment TEXT NOT NULL DEFAULT ''")

    old = store.SCHEMA_VERSION
    monkeypatch.setattr(store, "MIGRATIONS", [*store.MIGRATIONS, v_next])
    with Project.open(root) as p:
        assert p.info()["schema_version"] == str(old + 1)
        assert p._store.query("PRAGMA user_version")[0][0] == old + 1
        cols = [r[1] for r in p._store.query("PRAGMA table_info(images)")]
        assert "comment" in cols
        assert len(p.list_images("exp")) == 4
    assert (root / f"{store.DB_NAME}.bak-v{old}").is_file()
    monkeypatch.setattr(store, "MIGRATIONS", store.MIGRATIONS[:old])
    with pytest.raises(ProjectVersionError):
        Project.open(root)


def test_copied_project_opens_elsewhere(tmp_path: Path, project: Project, image_folder: Path) -> None:
    """Everything inside the folder travels: copied images, annotations, results, adapters."""
    report = project.add_folder(image_folder, "copied", copy=True)
    ids = report.added
    labels = np.zeros((project.get_image(ids[0]).height, project.get_image(ids[0]).width), np.int32)
    labels[5:20, 5:20] = 7
    project.save_annotation(ids[0], labels)
    second = project.get_image(ids[1])
    project.record_result(second.id, np.ones((second.height, second.width), np.int32), {"x": 1}, {"encoder": "e"})
    project.close()
    shutil.copytree(project.root, tmp_path / "elsewhere" / "copy")
    shutil.rmtree(project.root)
    with Project.open(tmp_path / "elsewhere" / "copy") as p:
        assert not p.missing_images()
        recs = p.list_images("copied")
        assert all(r.inside_project and str(r.path).startswith(str(p.root)) for r in recs)
        assert np.array_equal(p.load_annotation(ids[0]), labels)
        assert p.load_labels(p.latest_result(ids[1])).min() == 1
        assert p.read_image(ids[0]).shape == (recs[0].height, recs[0].width)


def test_ten_thousand_images_open_fast(tmp_path: Path, image_folder: Path) -> None:
    """The index of a 10,000-image project opens and lists in well under 2 s
    (``benchmarks/project_open.py`` builds one through the API; here rows are cloned)."""
    import time

    root = tmp_path / "big"
    with Project.create(root) as p:
        p.add_folder(image_folder, "template")
        with p._store.tx() as conn:
            for s in range(5):
                conn.execute("INSERT INTO sets(name, created) VALUES (?, 'now')", (f"plate {s}",))
            cols = ("size, mtime, quick_hash, sha256, width, height, channels, channel_names, pixel_size_um, rgb, "
                    "planes, status, added")
            conn.execute(
                f"WITH RECURSIVE n(k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM n WHERE k < 9999) "
                f"INSERT INTO images(set_id, path, {cols}) "
                f"SELECT 2 + k % 5, '/data/plate' || (k % 5) || '/img' || k || '.tif', {cols} "
                f"FROM n, (SELECT * FROM images LIMIT 1)")
    t0 = time.perf_counter()
    with Project.open(root) as p:
        sets = p.list_sets()
        t_open = time.perf_counter() - t0
        images = p.list_images()
        t_list = time.perf_counter() - t0
    assert len(images) == 10_004 and sum(s.n_images for s in sets) == 10_004
    assert t_open < 0.5, t_open
    assert t_list < 2.0, t_list
