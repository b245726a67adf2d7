"""The project index: one SQLite database (WAL, exclusive), its schema, migrations and paths.

See the package docstring for why SQLite. :class:`Store` owns the connection, the project
lock and the mapping between stored paths (POSIX, relative to the project folder when the
file is inside it) and real paths.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import json
import logging
import os
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .. import __version__
from ..core.fileio import real_path
from .errors import NotAProjectError, ProjectDamagedError, ProjectError, ProjectVersionError
from .lock import ProjectLock

log = logging.getLogger(__name__)

DB_NAME = "project.efficell"
LOCK_NAME = "project.lock"
SUBDIRS = ("images", "annotations", "results", "adapters", "exports")
BACKUPS = 3  # rolling copies of the index: project.efficell.backup1 (newest) .. backup3
_SQLITE_MAGIC = b"SQLite format 3\x00"


def now_iso() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def to_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def from_json(text: str | None, default: Any = None) -> Any:
    if text is None or text == "":
        return default
    try:
        return json.loads(text)
    except ValueError:
        log.warning("ignoring unreadable JSON in the project index: %.80s", text)
        return default


# ----------------------------------------------------------------------------- schema


def _v1(conn: sqlite3.Connection) -> None:
    """Initial schema."""
    for sql in (
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "CREATE TABLE sets (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, created TEXT NOT NULL)",
        """CREATE TABLE images (
            id INTEGER PRIMARY KEY,
            set_id INTEGER NOT NULL REFERENCES sets(id) ON DELETE CASCADE,
            path TEXT NOT NULL,
            size INTEGER NOT NULL,
            mtime REAL,
            quick_hash TEXT NOT NULL,
            sha256 TEXT,
            width INTEGER NOT NULL,
            height INTEGER NOT NULL,
            channels INTEGER NOT NULL,
            channel_names TEXT NOT NULL DEFAULT '[]',
            pixel_size_um REAL,
            rgb INTEGER NOT NULL DEFAULT 0,
            planes TEXT,
            status TEXT NOT NULL DEFAULT 'new'
                CHECK (status IN ('new', 'segmented', 'annotated', 'reviewed')),
            added TEXT NOT NULL,
            UNIQUE (set_id, path))""",
        "CREATE INDEX images_by_set ON images(set_id, id)",
        """CREATE TABLE runs (
            id INTEGER PRIMARY KEY,
            set_id INTEGER REFERENCES sets(id) ON DELETE SET NULL,
            settings TEXT NOT NULL,
            identity TEXT NOT NULL,
            created TEXT NOT NULL)""",
        """CREATE TABLE results (
            id INTEGER PRIMARY KEY,
            image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
            run_id INTEGER REFERENCES runs(id) ON DELETE SET NULL,
            path TEXT NOT NULL,
            n_cells INTEGER NOT NULL,
            settings TEXT NOT NULL,
            identity TEXT NOT NULL,
            seconds REAL,
            created TEXT NOT NULL)""",
        "CREATE INDEX results_by_image ON results(image_id, id)",
        """CREATE TABLE annotations (
            id INTEGER PRIMARY KEY,
            image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
            version INTEGER NOT NULL,
            path TEXT NOT NULL,
            n_cells INTEGER NOT NULL,
            note TEXT NOT NULL DEFAULT '',
            created TEXT NOT NULL,
            UNIQUE (image_id, version))""",
        """CREATE TABLE adapters (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            encoder TEXT NOT NULL,
            path TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            size INTEGER NOT NULL,
            training_images TEXT NOT NULL DEFAULT '[]',
            metrics TEXT NOT NULL DEFAULT '{}',
            metadata TEXT NOT NULL DEFAULT '{}',
            created TEXT NOT NULL)""",
    ):
        conn.execute(sql)


def _v2(conn: sqlite3.Connection) -> None:
    """Scenes: a file with several scenes (CZI scenes, ND2 positions, OME-TIFF images) is one image
    per scene. ``scene`` is the scene's index (NULL for a single-scene file), ``scene_name`` its
    name; the same file may appear once per scene in a set. SQLite cannot change a UNIQUE
    constraint in place, so the table is rebuilt (foreign keys are off while migrating, so the
    annotations and results that point at image ids stay)."""
    cols = ("id, set_id, path, size, mtime, quick_hash, sha256, width, height, channels, channel_names, "
            "pixel_size_um, rgb, planes, status, added")
    for sql in (
        """CREATE TABLE images_v2 (
            id INTEGER PRIMARY KEY,
            set_id INTEGER NOT NULL REFERENCES sets(id) ON DELETE CASCADE,
            path TEXT NOT NULL,
            scene INTEGER,
            scene_name TEXT,
            size INTEGER NOT NULL,
            mtime REAL,
            quick_hash TEXT NOT NULL,
            sha256 TEXT,
            width INTEGER NOT NULL,
            height INTEGER NOT NULL,
            channels INTEGER NOT NULL,
            channel_names TEXT NOT NULL DEFAULT '[]',
            pixel_size_um REAL,
            rgb INTEGER NOT NULL DEFAULT 0,
            planes TEXT,
            status TEXT NOT NULL DEFAULT 'new'
                CHECK (status IN ('new', 'segmented', 'annotated', 'reviewed')),
            added TEXT NOT NULL)""",
        f"INSERT INTO images_v2({cols}) SELECT {cols} FROM images",
        "DROP TABLE images",
        "ALTER TABLE images_v2 RENAME TO images",
        # A single-scene file (scene NULL) once per set, and each scene of a file once per set.
        "CREATE UNIQUE INDEX images_unique ON images(set_id, path, ifnull(scene, -1))",
        "CREATE INDEX images_by_set ON images(set_id, id)",
    ):
        conn.execute(sql)


def _v3(conn: sqlite3.Connection) -> None:
    """``copies``: the files the project copied into its folder, recorded when it copied them;
    ``file_journal``: label and adapter files in flight (see ``Store.journal``).

    Only these may ever be deleted by the project (when no image uses them any more). Schema 1
    told its own copies from the user's files by an ``images/`` prefix, which a user's own
    ``images/`` folder or a ``..`` spelling also has: an older project gets no rows here, so no
    original is ever deleted (copies made by an older EffiCell stay on disk when their image is
    removed).
    """
    conn.execute("""CREATE TABLE copies (
        path TEXT PRIMARY KEY,
        size INTEGER NOT NULL,
        quick_hash TEXT NOT NULL,
        created TEXT NOT NULL)""")
    # Files in flight: a label or adapter file about to be written, or one whose row is gone
    # and that is about to be deleted. After a crash, tidy() deletes exactly these (when no row
    # uses them): a file the index does not know is never deleted.
    conn.execute("CREATE INDEX images_by_path ON images(path)")  # "does any image still use this file?"
    conn.execute("""CREATE TABLE file_journal (
        path TEXT PRIMARY KEY,
        action TEXT NOT NULL CHECK (action IN ('write', 'delete')),
        created TEXT NOT NULL)""")


# MIGRATIONS[i] brings a database from schema version i to i + 1. Append only; never edit
# a released entry. The schema version of this EffiCell is len(MIGRATIONS).
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_v1, _v2, _v3]
SCHEMA_VERSION = len(MIGRATIONS)


def schema_version() -> int:
    """The schema version this EffiCell writes (the number of migrations it knows)."""
    return len(MIGRATIONS)


# ----------------------------------------------------------------------------- store


class Store:
    """The open index of one project: connection + lock + paths. Thread-safe (one RLock)."""

    def __init__(self, root: Path, conn: sqlite3.Connection, lock: ProjectLock) -> None:
        self.root = root
        self._root_resolved = real_path(root)
        self._root_str = str(root)
        self._conn: sqlite3.Connection | None = conn
        self._lock = lock
        self.mutex = threading.RLock()  # guards the connection
        self.write_lock = threading.RLock()  # serialises file-then-index writes (version numbers)
        self.unclean_shutdown = False  # the last session ended without close() (crash, kill)
        self._changes_at_open = 0
        self._root_identity = _identity(root)  # the folder itself, wherever it is renamed to

    # ------------------------------------------------------------------ open / create

    @classmethod
    def create(cls, root: str | Path, name: str | None = None) -> Store:
        root = Path(root).absolute()
        if root.exists() and not root.is_dir():
            raise ProjectError(f"{root}: is a file, not a folder; choose a folder for the project")
        if (root / DB_NAME).exists():
            raise ProjectError(f"{root}: a project already exists here; open it instead")
        try:
            root.mkdir(parents=True, exist_ok=True)
            for sub in SUBDIRS:
                (root / sub).mkdir(exist_ok=True)
        except OSError as exc:
            raise ProjectError(f"{root}: cannot create the project folder ({exc.strerror or exc})") from exc
        store = cls._connect(root, creating=True)
        with store.tx() as conn:
            for key, value in (("project_id", uuid.uuid4().hex), ("name", name or root.name),
                               ("created", now_iso()), ("created_by", __version__)):
                conn.execute("INSERT INTO meta(key, value) VALUES (?, ?)", (key, value))
        return store

    @classmethod
    def open(cls, root: str | Path) -> Store:
        root = Path(root).absolute()
        if not root.is_dir():
            raise NotAProjectError(f"{root}: folder not found")
        db = root / DB_NAME
        if not db.is_file():
            raise NotAProjectError(f"{root}: no EffiCell project here ({DB_NAME} is missing)")
        check_index_file(root)  # before SQLite sees it: it would take an empty file for a new database
        unclean = (root / f"{DB_NAME}-wal").exists()  # a clean close removes the WAL file
        store = cls._connect(root, creating=False)
        store.unclean_shutdown = unclean
        for sub in SUBDIRS:  # a copied project may have lost empty folders
            with contextlib.suppress(OSError):
                (root / sub).mkdir(exist_ok=True)
        return store

    @classmethod
    def _connect(cls, root: Path, creating: bool) -> Store:
        lock = ProjectLock(root / LOCK_NAME, str(root))
        lock.acquire()
        try:
            conn = sqlite3.connect(root / DB_NAME, check_same_thread=False, isolation_level=None, timeout=10)
        except sqlite3.Error as exc:
            lock.release()
            raise NotAProjectError(f"{root / DB_NAME}: cannot open the project index ({exc})") from exc
        store = cls(root, conn, lock)
        try:
            # EXCLUSIVE before the first WAL access: the WAL index lives in process memory, so
            # WAL works on network shares too (no shared-memory file).
            conn.execute("PRAGMA locking_mode=EXCLUSIVE")
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                log.warning("%s: SQLite refused WAL mode (using %s)", root, mode)
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            if not creating:
                problem = quick_check(conn)
                if problem:
                    raise damaged(root, problem)
            store._migrate(creating)
            if not creating and not store.meta("project_id"):
                raise damaged(root, "its project record is missing")
        except sqlite3.DatabaseError as exc:
            store.close(backup=False)
            db = root / DB_NAME
            if not (os.access(db, os.W_OK) and os.access(root, os.W_OK)):  # SQLite says "disk I/O error"
                raise ProjectError(f"{db}: the project index is read-only (no permission to write it or its folder); "
                                   "nothing is damaged. Give write permission, or copy the project folder somewhere "
                                   "you can write and open the copy") from exc
            raise damaged(root, str(exc)) from exc
        except BaseException:
            store.close(backup=False)
            raise
        store._changes_at_open = conn.total_changes
        return store

    def _migrate(self, creating: bool) -> None:
        conn = self.conn
        have = int(conn.execute("PRAGMA user_version").fetchone()[0])
        want = schema_version()
        if have == 0 and not creating:
            tables = conn.execute("SELECT count(*) FROM sqlite_master WHERE type='table'").fetchone()[0]
            if tables:
                raise NotAProjectError(f"{self.root / DB_NAME}: this database is not an EffiCell project")
            # never turned into a new, empty project: that would hide every file the lost index knew
            raise damaged(self.root, "it is empty (holds no project)")
        if have > want:
            writer = self.meta("app_version") or "a newer version"
            raise ProjectVersionError(
                f"{self.root}: this project was saved by EffiCell {writer} (project format {have}); "
                f"this EffiCell {__version__} reads formats up to {want}. Update EffiCell to open it."
            )
        if have < want and have > 0:
            backup = self.root / f"{DB_NAME}.bak-v{have}"
            log.info("migrating %s from format %d to %d (backup: %s)", self.root, have, want, backup.name)
            dst = sqlite3.connect(backup)
            try:
                conn.backup(dst)
            finally:
                dst.close()
        # Foreign keys off while migrating: a migration that rebuilds a table (SQLite's way to
        # change a constraint) must not cascade-delete the rows that point into it.
        conn.execute("PRAGMA foreign_keys=OFF")
        try:
            for version in range(have, want):
                with self.tx() as c:
                    MIGRATIONS[version](c)
                    bad = c.execute("PRAGMA foreign_key_check").fetchall()
                    if bad:
                        raise sqlite3.DatabaseError(f"migration to format {version + 1} left {len(bad)} dangling reference(s)")
                    c.execute(f"PRAGMA user_version = {version + 1}")
        finally:
            conn.execute("PRAGMA foreign_keys=ON")
        if have != want or self.meta("app_version") != __version__:
            self.set_meta("app_version", __version__)
            self.set_meta("schema_version", str(want))

    # ------------------------------------------------------------------ connection

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise ProjectError(f"{self.root}: the project is closed")
        return self._conn

    @property
    def closed(self) -> bool:
        return self._conn is None

    @contextlib.contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: all of it is committed, or none of it (also on a crash).

        SQLite errors leave as :class:`ProjectError` naming the index (see :func:`index_error`).
        """
        with self.mutex:
            conn = self.conn
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise index_error(self.root, exc) from exc
            try:
                yield conn
            except BaseException as exc:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise index_error(self.root, exc) from exc
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise index_error(self.root, exc) from exc

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self.mutex:
            try:
                cur = self.conn.execute(sql, params)
                cur.row_factory = sqlite3.Row
                return cur.fetchall()
            except sqlite3.Error as exc:
                raise index_error(self.root, exc) from exc

    def one(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def meta(self, key: str) -> str | None:
        row = self.one("SELECT value FROM meta WHERE key = ?", (key,))
        return None if row is None else str(row["value"])

    def set_meta(self, key: str, value: str) -> None:
        with self.tx() as conn:
            conn.execute("INSERT INTO meta(key, value) VALUES (?, ?) "
                         "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    @functools.cached_property
    def project_id(self) -> str:
        return self.meta("project_id") or ""

    def close(self, backup: bool = True) -> None:
        """Close; with ``backup`` and anything changed this session, first a rolling backup."""
        with self.mutex:
            conn, self._conn = self._conn, None
            if conn is not None:
                try:
                    if backup and conn.total_changes > self._changes_at_open:
                        try:
                            self.check_root()
                        except ProjectError as exc:  # no backup written into a re-created old folder
                            log.warning("%s", exc)
                        else:
                            backup_index(conn, self.root)
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                except sqlite3.Error as exc:
                    log.warning("%s: checkpoint on close failed: %s", self.root, exc)
                finally:
                    conn.close()
            self._lock.release()

    # ------------------------------------------------------------------ file journal

    def journal(self, conn: sqlite3.Connection, stored: Iterable[str], action: str) -> None:
        """Inside a transaction: these files are in flight (``write``: about to be written and
        then recorded; ``delete``: their rows are gone and the files go next)."""
        now = now_iso()
        conn.executemany("INSERT OR REPLACE INTO file_journal(path, action, created) VALUES (?, ?, ?)",
                         [(s, action, now) for s in stored])

    def settle(self, conn: sqlite3.Connection, stored: Iterable[str]) -> None:
        """Inside a transaction: these files are no longer in flight."""
        conn.executemany("DELETE FROM file_journal WHERE path = ?", [(s,) for s in stored])

    def check_root(self) -> None:
        """Raise a :class:`ProjectError` when the project folder is no longer where it was opened
        (renamed, moved or deleted meanwhile): a file written by its old path would re-create the
        old folders and be lost to the project, whose index went with the folder."""
        if self._root_identity is not None and _identity(self.root) != self._root_identity:
            raise ProjectError(f"{self.root}: the project folder was moved, renamed or deleted while it was open; "
                               "nothing was saved. Close the project and open it where it is now")

    def intend_write(self, stored: str) -> None:
        """Record (committed) that a file is about to be written; its recording ``settle``s it."""
        self.check_root()
        with self.tx() as conn:
            self.journal(conn, [stored], "write")

    def free_label_path(self, folder: Path, letter: str, number: int) -> tuple[Path, int]:
        """``folder/<letter><number>.tif`` with the first number from ``number`` whose file is free:
        absent, or left by an interrupted write of this index (journaled). Any other file there is
        one this index does not know (an older or lost index's): it is never overwritten."""
        while True:
            path = folder / f"{letter}{number:06d}.tif"
            if not os.path.lexists(path) or self.one(
                    "SELECT 1 FROM file_journal WHERE path = ? AND action = 'write'", (self.to_stored(path),)):
                return path, number
            number += 1

    def settled(self, stored: Iterable[str]) -> None:
        """Files journaled for deletion are gone: forget them (own transaction)."""
        stored = list(stored)
        if stored:
            with self.tx() as conn:
                self.settle(conn, stored)

    # ------------------------------------------------------------------ paths

    def to_stored(self, path: str | Path) -> str:
        """How a path is kept in the index: resolved (``..`` and symlinks), POSIX and relative
        when inside the project, so one file has one spelling."""
        p = real_path(path)
        with contextlib.suppress(ValueError):
            return p.relative_to(self._root_resolved).as_posix()
        return str(p)

    @property
    def real_root(self) -> Path:
        return self._root_resolved

    def real(self, stored: str) -> Path:
        """The resolved path of a stored one (compare files by this, never by spelling)."""
        return real_path(self.from_stored(stored))

    def from_stored(self, stored: str) -> Path:
        if is_absolute_anywhere(stored):
            return Path(stored)
        return Path(self._root_str, stored)  # stored is POSIX; "/" is a separator on Windows too

    def is_inside(self, stored: str) -> bool:
        return not is_absolute_anywhere(stored)


def is_absolute_anywhere(path: str) -> bool:
    """True for absolute POSIX paths and for Windows paths (``C:\\x``, ``\\\\server\\share``).

    Plain string tests: this runs once per image when a project lists its images.
    """
    if path.startswith(("/", "\\\\")):
        return True
    return len(path) > 2 and path[1] == ":" and path[2] in "/\\" and path[0].isalpha()


# ----------------------------------------------------------------------------- integrity and backups


def damaged(root: Path, problem: str) -> ProjectDamagedError:
    """The error for an index that cannot be used: the file, the problem, and what to do."""
    return ProjectDamagedError(
        f"{root / DB_NAME}: the project index is damaged ({problem}); nothing in the project folder was "
        f"changed. Rebuild it with `efficell project repair {root}` (it keeps the damaged file aside) or "
        f"restore a backup ({DB_NAME}.backup1 is the newest)", problem)


def check_index_file(root: Path) -> None:
    """Refuse an index file that is empty or not SQLite, before SQLite opens (and would change) it."""
    db = root / DB_NAME
    try:
        with open(db, "rb") as fh:
            head = fh.read(len(_SQLITE_MAGIC))
    except OSError as exc:
        if isinstance(exc, PermissionError):
            raise NotAProjectError(f"{db}: cannot read the project index (permission denied)") from exc
        raise NotAProjectError(f"{db}: cannot read the project index ({exc.strerror or exc})") from exc
    if not head:
        raise damaged(root, "it is empty (0 bytes): it was never written completely")
    if head != _SQLITE_MAGIC:
        raise damaged(root, "it is not an SQLite database; or not an EffiCell project")


def quick_check(conn: sqlite3.Connection) -> str:
    """'' when SQLite's quick integrity check passes, else its first complaint."""
    rows = conn.execute("PRAGMA quick_check(3)").fetchall()
    first = str(rows[0][0]) if rows else "no answer"
    # SQLite's complaints span lines ("*** in database main ***\nPage 5: ..."): one line for messages
    return "" if first == "ok" else "; ".join(" ".join(str(r[0]).split()) for r in rows)


def index_error(root: Path, exc: sqlite3.Error) -> ProjectError:
    """A SQLite error as the project's own error: the index file named, what to do said."""
    db = root / DB_NAME
    text = str(exc) or type(exc).__name__
    low = text.lower()
    if "full" in low:  # SQLITE_FULL: "database or disk is full"
        return ProjectError(f"{db}: the disk is full; free some space and try again (the last change was not saved)")
    if "locked" in low or "busy" in low:
        return ProjectError(f"{db}: the project index is busy ({text}); try again")
    if "readonly" in low or "read-only" in low:
        return ProjectError(f"{db}: the project index cannot be written (read-only file or folder)")
    if isinstance(exc, sqlite3.OperationalError) and "disk i/o" in low:
        return ProjectError(f"{db}: the disk reported an error while using the project index ({text}); "
                            f"check the disk, then `efficell project repair {root}` if the project no longer opens")
    return damaged(root, text)


def backup_paths(root: str | Path) -> list[Path]:
    """The rolling backups of a project's index that exist, newest first."""
    root = Path(root)
    return [p for p in (root / f"{DB_NAME}.backup{k}" for k in range(1, BACKUPS + 1)) if p.is_file()]


def _identity(folder: Path) -> tuple[int, int] | None:
    """(device, inode) of a folder; None when it cannot be read."""
    try:
        st = os.stat(folder)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def backup_index(conn: sqlite3.Connection, root: Path) -> Path | None:
    """Copy the index with SQLite's online backup API into ``backup1`` (older ones shift down).

    The copy is checked before it replaces anything: a damaged index never pushes out the
    last good backup. Returns the backup, or None when it could not be made (logged).
    """
    tmp = root / f".{DB_NAME}.backup.part"
    try:
        dst = sqlite3.connect(tmp)
        try:
            conn.backup(dst)
            problem = quick_check(dst)
        finally:
            dst.close()
        if problem:
            log.warning("%s: index failed its check (%s); older backups kept", root, problem)
            tmp.unlink()
            return None
        for k in range(BACKUPS - 1, 0, -1):
            older = root / f"{DB_NAME}.backup{k}"
            if older.exists():
                os.replace(older, root / f"{DB_NAME}.backup{k + 1}")
        os.replace(tmp, root / f"{DB_NAME}.backup1")
        return root / f"{DB_NAME}.backup1"
    except (OSError, sqlite3.Error) as exc:
        log.warning("%s: could not back up the project index: %s", root, exc)
        with contextlib.suppress(OSError):
            tmp.unlink()
        return None
