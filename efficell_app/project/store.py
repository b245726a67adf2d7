"""The project index: one SQLite database (WAL, exclusive), its schema, migrations and paths.

See the package docstring for why SQLite. :class:`Store` owns the connection, the project
lock and the mapping between stored paths (POSIX, relative to the project folder when the
file is inside it) and real paths.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .. import __version__
from ..core.fileio import real_path
from .errors import NotAProjectError, ProjectError, ProjectVersionError
from .lock import ProjectLock

log = logging.getLogger(__name__)

DB_NAME = "project.efficell"
LOCK_NAME = "project.lock"
SUBDIRS = ("images", "annotations", "results", "adapters", "exports")


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
    """``copies``: the files the project copied into its folder, recorded when it copied them.

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


# MIGRATIONS[i] brings a database from schema version i to i + 1. Append only; never edit
# a released entry. The schema version of this EffiCell is len(MIGRATIONS).
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_v1, _v2]
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
        if not (root / DB_NAME).is_file():
            raise NotAProjectError(f"{root}: no EffiCell project here ({DB_NAME} is missing)")
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
            store._migrate(creating)
        except sqlite3.DatabaseError as exc:
            store.close()
            raise NotAProjectError(f"{root / DB_NAME}: the project index is damaged or not an EffiCell "
                                   f"project ({exc}); restore it from a backup") from exc
        except BaseException:
            store.close()
            raise
        return store

    def _migrate(self, creating: bool) -> None:
        conn = self.conn
        have = int(conn.execute("PRAGMA user_version").fetchone()[0])
        want = schema_version()
        if have == 0 and not creating:
            tables = conn.execute("SELECT count(*) FROM sqlite_master WHERE type='table'").fetchone()[0]
            if tables:
                raise NotAProjectError(f"{self.root / DB_NAME}: this database is not an EffiCell project")
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
        for version in range(have, want):
            with self.tx() as c:
                MIGRATIONS[version](c)
                c.execute(f"PRAGMA user_version = {version + 1}")
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
        """A write transaction: all of it is committed, or none of it (also on a crash)."""
        with self.mutex:
            conn = self.conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self.mutex:
            cur = self.conn.execute(sql, params)
            cur.row_factory = sqlite3.Row
            return cur.fetchall()

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

    def close(self) -> None:
        with self.mutex:
            conn, self._conn = self._conn, None
            if conn is not None:
                try:
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                except sqlite3.Error as exc:
                    log.warning("%s: checkpoint on close failed: %s", self.root, exc)
                finally:
                    conn.close()
            self._lock.release()

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
