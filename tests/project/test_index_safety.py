"""Issue 18, cases 2 and 4: a damaged project index is refused, never taken for an empty project,
and nothing the index does not know is deleted; rolling backups and ``efficell project repair``.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tifffile

from efficell_app.project import NotAProjectError, Project, ProjectError, store

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="uses SIGKILL and POSIX file modes")


def _images(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        tifffile.imwrite(folder / f"img{i:03d}.tif", np.random.default_rng(i).integers(0, 255, (24, 32), dtype=np.uint8))
    return folder


def _labels(k: int) -> np.ndarray:
    lab = np.zeros((24, 32), np.int32)
    lab[2:2 + k % 10 + 3, 3:12] = 1
    lab[14:20, 15 + k % 5:30] = 2
    return lab


def _labelled(root: Path, src: Path, n: int = 6) -> dict[str, bytes]:
    """A project with n images, each with two annotation versions and a result; returns its label files."""
    with Project.create(root) as p:
        ids = p.add_folder(_images(src, n), "s").added
        run = p.start_run({"diameter": 12}, {"encoder": "test"}, "s")
        for i in ids:
            p.save_annotation(i, _labels(i), note=f"first {i}")
            p.save_annotation(i, _labels(i + 1), note=f"second {i}")
            p.record_result(i, _labels(i + 2), {"diameter": 12}, {"encoder": "test"}, run_id=run)
    return _label_files(root)


def _label_files(root: Path) -> dict[str, bytes]:
    return {str(f.relative_to(root)): f.read_bytes() for sub in ("annotations", "results")
            for f in sorted((root / sub).rglob("*.tif"))}


_HOLD = textwrap.dedent("""
    import sys, time
    from efficell_app.project import Project
    p = Project.open(sys.argv[1])
    print("open", flush=True)
    time.sleep(120)
""")


def _unclean(root: Path) -> None:
    """Leave the project as a killed EffiCell does: opened, then SIGKILLed (its WAL stays)."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(root)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "open"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert (root / f"{store.DB_NAME}-wal").exists()


# ----------------------------------------------------------------------------- 2. empty index


@pytest.mark.parametrize("unclean", [False, True], ids=["clean", "after-kill"])
def test_zero_byte_index_is_refused_and_nothing_is_deleted(tmp_path: Path, unclean: bool) -> None:
    root = tmp_path / "P"
    files = _labelled(root, tmp_path / "src")
    if unclean:
        _unclean(root)
    (root / store.DB_NAME).write_bytes(b"")
    with pytest.raises(NotAProjectError) as err:
        Project.open(root)
    msg = str(err.value)
    assert str(root / store.DB_NAME) in msg and "empty" in msg and "repair" in msg
    assert _label_files(root) == files
    assert (root / store.DB_NAME).stat().st_size == 0  # not turned into an empty project either


def test_tidy_after_a_crash_keeps_label_files_an_older_index_does_not_know(tmp_path: Path) -> None:
    """An index restored from an older copy, then an unclean shutdown: the newer annotations stay."""
    root = tmp_path / "P"
    with Project.create(root) as p:
        i = p.add_folder(_images(tmp_path / "src", 1), "s").added[0]
        p.save_annotation(i, _labels(1))
    old = (root / store.DB_NAME).read_bytes()
    with Project.open(root) as p:
        for k in range(2, 5):
            p.save_annotation(i, _labels(k))
        p.record_result(i, _labels(9), {}, {})
    files = _label_files(root)
    (root / store.DB_NAME).write_bytes(old)  # the user restores yesterday's copy of the index
    _unclean(root)
    with Project.open(root) as p:
        assert [h.version for h in p.annotation_history(i)] == [1]
        assert p.tidy() == 0
    assert _label_files(root) == files


# ----------------------------------------------------------------------------- 4. corruption


def _corrupt_middle_pages(db: Path, seed: int = 0) -> None:
    data = bytearray(db.read_bytes())
    page = int.from_bytes(data[16:18], "big") or 65536
    n = len(data) // page
    assert n >= 6, n
    rng = np.random.default_rng(seed)
    for k in (n // 2, n // 2 + 1):
        data[k * page:(k + 1) * page] = rng.integers(0, 256, page, dtype=np.uint8).tobytes()
    db.write_bytes(bytes(data))


def _big_project(root: Path, src: Path) -> None:
    """Enough rows for a multi-page index."""
    with Project.create(root) as p:
        ids = p.add_folder(_images(src, 40), "s").added
        for i in ids:
            p.record_result(i, _labels(i), {"diameter": 12, "note": "x" * 200}, {"encoder": "test" * 20})
            p.save_annotation(i, _labels(i + 1), note="y" * 100)


def test_corrupt_index_is_refused_on_open_with_a_clear_message(tmp_path: Path) -> None:
    root = tmp_path / "P"
    _big_project(root, tmp_path / "src")
    files = _label_files(root)
    _corrupt_middle_pages(root / store.DB_NAME)
    with pytest.raises(NotAProjectError) as err:
        Project.open(root)
    msg = str(err.value)
    assert str(root / store.DB_NAME) in msg and "damaged" in msg and "efficell project repair" in msg
    assert _label_files(root) == files


def test_corrupt_index_through_the_cli_is_one_line(tmp_path: Path) -> None:
    root = tmp_path / "P"
    _big_project(root, tmp_path / "src")
    _corrupt_middle_pages(root / store.DB_NAME)
    proc = subprocess.run([sys.executable, "-m", "efficell_app", "export", "--project", str(root), "--out",
                           str(tmp_path / "t.xlsx")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "DatabaseError" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and str(root / store.DB_NAME) in errors[0] and "repair" in errors[0]
    assert not (tmp_path / "t.xlsx").exists()


class _BrokenConnection:
    """A connection whose database file went bad under it (what SQLite then raises)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
        if sql.lstrip().upper().startswith(("INSERT", "SELECT MAX")):
            raise sqlite3.DatabaseError("database disk image is malformed")
        return self._conn.execute(sql, *args)

    def __getattr__(self, name: str) -> object:
        return getattr(self._conn, name)


def test_database_errors_become_project_errors_naming_the_index(tmp_path: Path) -> None:
    root = tmp_path / "P"
    with Project.create(root) as p:
        i = p.add_folder(_images(tmp_path / "src", 1), "s").added[0]
        real = p._store._conn
        p._store._conn = _BrokenConnection(real)  # type: ignore[assignment]
        try:
            with pytest.raises(ProjectError) as err:
                p.save_annotation(i, _labels(1))
        finally:
            p._store._conn = real
        assert not isinstance(err.value, sqlite3.Error)
        assert str(root / store.DB_NAME) in str(err.value) and "repair" in str(err.value)


# ----------------------------------------------------------------------------- backups and repair


def test_rolling_backups_of_the_index(tmp_path: Path) -> None:
    root = tmp_path / "P"
    with Project.create(root) as p:
        i = p.add_folder(_images(tmp_path / "src", 1), "s").added[0]
    for k in range(1, 6):
        with Project.open(root) as p:
            p.save_annotation(i, _labels(k))
    with Project.open(root):
        pass  # nothing changed: no new backup, the older ones are kept
    backups = store.backup_paths(root)
    assert [b.name for b in backups] == [f"{store.DB_NAME}.backup{k}" for k in range(1, store.BACKUPS + 1)]
    versions = []
    for b in backups:
        with sqlite3.connect(f"file:{b}?mode=ro", uri=True) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            versions.append(conn.execute("SELECT max(version) FROM annotations").fetchone()[0])
    assert versions == [5, 4, 3]  # newest first


def _repair(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "efficell_app", "project", "repair", str(root)],
                          capture_output=True, text=True, timeout=300)


def _check_recovered(root: Path, n: int) -> None:
    with Project.open(root) as p:
        images = p.list_images()
        assert len(images) == n
        for rec in images:
            hist = p.annotation_history(rec.id)
            assert [h.version for h in hist] == [2, 1]
            assert hist[0].note == f"second {rec.id}"
            assert np.array_equal(p.load_annotation(rec.id), _labels(rec.id + 1))
            res = p.latest_result(rec.id)
            assert res is not None and np.array_equal(p.load_labels(res), _labels(rec.id + 2))
            assert res.identity == {"encoder": "test"} and res.settings == {"diameter": 12}


def test_repair_rebuilds_a_zero_byte_index_from_label_files(tmp_path: Path) -> None:
    root = tmp_path / "P"
    files = _labelled(root, tmp_path / "src")
    for b in store.backup_paths(root):
        b.unlink()  # no backup to start from: everything comes from the label files
    (root / store.DB_NAME).write_bytes(b"")
    proc = _repair(root)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "6 image(s)" in proc.stdout and "12 annotation version(s)" in proc.stdout and "6 result(s)" in proc.stdout
    damaged = list(root.glob(f"{store.DB_NAME}.damaged-*"))
    assert len(damaged) == 1 and damaged[0].stat().st_size == 0  # the old index is kept aside, never deleted
    assert _label_files(root) == files
    _check_recovered(root, 6)


def test_repair_of_a_corrupt_index_keeps_what_a_backup_and_the_files_know(tmp_path: Path) -> None:
    root = tmp_path / "P"
    _big_project(root, tmp_path / "src")
    older = {b.name: b.read_bytes() for b in store.backup_paths(root)}
    with Project.open(root) as p:  # a later session
        extra = p.add_folder(_images(tmp_path / "more", 2), "late").added
        p.save_annotation(extra[0], _labels(3), note="late")
    for b in store.backup_paths(root):  # as if the backups predated that session
        b.unlink()
    for name, data in older.items():
        (root / name).write_bytes(data)
    files = _label_files(root)
    _corrupt_middle_pages(root / store.DB_NAME, seed=1)
    proc = _repair(root)
    assert proc.returncode == 0, proc.stderr
    assert _label_files(root) == files
    with Project.open(root) as p:
        assert p._store.query("PRAGMA integrity_check")[0][0] == "ok"
        assert len(p.list_images()) >= 41  # the 40 of the backup, and the late image that has labels
        late = [r for r in p.list_images() if r.name == "img000.tif" and r.path.parent.name == "more"]
        assert len(late) == 1 and p.annotation_history(late[0].id)[0].note == "late"
        for rec in p.list_images("s"):
            assert p.load_annotation(rec.id) is not None and p.latest_result(rec.id) is not None


def test_repair_refuses_a_healthy_project_and_a_non_project(tmp_path: Path) -> None:
    root = tmp_path / "P"
    Project.create(root).close()
    proc = _repair(root)
    assert proc.returncode == 0 and "nothing to repair" in proc.stdout
    proc = _repair(tmp_path / "nothing")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and "error:" in proc.stderr
