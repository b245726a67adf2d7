"""``efficell project repair``: rebuild a damaged or lost project index from what survives.

Sources, in this order (the first that knows a row wins):

1. the damaged index itself: every row SQLite can still read, table by table and, where a
   table is broken, row by row (it is kept aside as ``project.efficell.damaged-<time>``,
   never deleted or changed);
2. the newest rolling backup (``project.efficell.backup1..3``) that passes SQLite's check;
3. the label files: each annotation and result file written by this EffiCell carries its own
   index row and its image's row (``labelfile.write_labels``), so annotations, results and
   the images they belong to come back with their notes, settings and model identity. Older
   label files without that record are attached by their folder (the image id) and file
   name (version or result id) when that image is known from 1 or 2;
4. adapter files in ``adapters/`` that no library entry uses (name and encoder from the file).

What cannot be recovered: images with no annotation and no result that were added after the
newest backup, when the damaged index lost their rows; run records (one per batch) of such
images (results keep their own settings and model identity); annotation notes of label files
written before this record existed. Files that cannot be placed stay where they are and are
listed. Nothing on disk is deleted.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import NotAProjectError, ProjectDamagedError
from .labelfile import count_cells, read_label_record, read_labels
from .lock import ProjectLock
from .store import DB_NAME, LOCK_NAME, Store, backup_paths, now_iso, quick_check, to_json

log = logging.getLogger(__name__)

# tables in the order rows must go in (parents first); file_journal is never carried over:
# after a repair no file is in flight, and nothing unknown is deleted.
TABLES = ("meta", "sets", "images", "runs", "results", "annotations", "adapters", "copies")
_ROW_SCAN_GAP = 500  # row-by-row salvage stops after this many missing rowids in a row


@dataclass
class RepairReport:
    root: Path
    reason: str = ""  # why the index needed repair ("" = it did not)
    damaged_copy: Path | None = None
    counts: dict[str, int] = field(default_factory=dict)  # rows in the rebuilt index per table
    from_source: dict[str, dict[str, int]] = field(default_factory=dict)  # source -> table -> rows taken
    unplaced: list[tuple[Path, str]] = field(default_factory=list)  # files kept but not in the index

    @property
    def repaired(self) -> bool:
        return bool(self.reason)

    def summary(self) -> str:
        if not self.repaired:
            return f"{self.root}: the project index is healthy; nothing to repair"
        c = self.counts
        lines = [f"{self.root}: index rebuilt ({self.reason})",
                 f"  {c.get('images', 0)} image(s) in {c.get('sets', 0)} set(s), {c.get('annotations', 0)} "
                 f"annotation version(s), {c.get('results', 0)} result(s), {c.get('adapters', 0)} adapter(s)"]
        for source, tables in self.from_source.items():
            got = ", ".join(f"{n} {t}" for t, n in tables.items() if n)
            lines.append(f"  from {source}: {got or 'nothing'}")
        if self.damaged_copy is not None:
            lines.append(f"  the damaged index is kept as {self.damaged_copy.name}")
        for path, why in self.unplaced:
            lines.append(f"  kept, not in the index: {path} ({why})")
        return "\n".join(lines)


def diagnose(root: Path) -> str:
    """Why the project at ``root`` needs repair; "" when it opens (checked the way ``open`` does)."""
    if not (root / DB_NAME).is_file():
        return f"{DB_NAME} is missing"
    try:
        Store.open(root).close(backup=False)
    except ProjectDamagedError as exc:
        return f"the index was damaged: {exc.problem}"
    return ""


def repair_project(root: str | Path) -> RepairReport:
    """Rebuild the index of the project at ``root`` when it is damaged (see the module docstring)."""
    root = Path(root).absolute()
    if not root.is_dir():
        raise NotAProjectError(f"{root}: folder not found")
    if not (root / DB_NAME).exists() and not any((root / d).is_dir() for d in ("annotations", "results")):
        raise NotAProjectError(f"{root}: no EffiCell project here (no {DB_NAME}, no annotations/ or results/)")
    report = RepairReport(root)
    report.reason = diagnose(root)  # raises ProjectLockedError when it is open elsewhere
    if not report.reason:
        return report
    with tempfile.TemporaryDirectory(prefix="efficell-repair-") as tmp:
        lock = ProjectLock(root / LOCK_NAME, str(root))
        lock.acquire()
        try:
            damaged = _set_aside(root)
            work = _work_copy(damaged, Path(tmp)) if damaged is not None else None
        finally:
            lock.release()
        report.damaged_copy = damaged
        sources: list[tuple[str, dict[str, list[dict[str, Any]]]]] = []
        if work is not None:
            sources.append(("the damaged index", _salvage(work)))
        for b in backup_paths(root):
            rows = _salvage(b, readonly=True) if _healthy(b) else None
            if rows is not None:
                sources.append((b.name, rows))
                break
        meta = _merged_meta(sources)
        if "project_id" not in meta:  # no index row survived: the label files say whose they are
            found = _label_project_id(root)
            if found:
                meta["project_id"] = found
        store = Store.create(root, meta.get("name"))
        try:
            _rebuild(store, sources, meta, report)
        finally:
            store.close()
    return report


# ----------------------------------------------------------------------------- sources


def _set_aside(root: Path) -> Path | None:
    db = root / DB_NAME
    if not db.exists():
        return None
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    dest = root / f"{DB_NAME}.damaged-{stamp}"
    k = 2
    while dest.exists():
        dest, k = root / f"{DB_NAME}.damaged-{stamp}-{k}", k + 1
    os.replace(db, dest)
    for suffix in ("-wal", "-shm"):  # the WAL holds the last committed transactions: it goes along
        side = root / f"{DB_NAME}{suffix}"
        if side.exists():
            os.replace(side, Path(f"{dest}{suffix}"))
    return dest


def _work_copy(damaged: Path, tmp: Path) -> Path:
    """A copy to read from: opening a database may write to it (WAL recovery); the kept one stays as it is."""
    work = tmp / "damaged.db"
    shutil.copyfile(damaged, work)
    wal = Path(f"{damaged}-wal")
    if wal.exists():
        shutil.copyfile(wal, Path(f"{work}-wal"))
    return work


def _healthy(path: Path) -> bool:
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            return not quick_check(conn)
    except sqlite3.Error:
        return False


def _salvage(path: Path, readonly: bool = False) -> dict[str, list[dict[str, Any]]]:
    """Every row SQLite can still read, per table (a broken table is read row by row)."""
    out: dict[str, list[dict[str, Any]]] = {}
    uri = f"file:{path}?mode=ro" if readonly else f"file:{path}"
    try:
        conn = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as exc:
        log.info("%s: cannot be opened (%s)", path, exc)
        return out
    with contextlib.closing(conn):
        conn.row_factory = sqlite3.Row
        for table in TABLES:
            out[table] = list(_rows(conn, table))
    return out


def _rows(conn: sqlite3.Connection, table: str) -> Iterator[dict[str, Any]]:
    try:
        yield from (dict(r) for r in conn.execute(f"SELECT * FROM {table}").fetchall())
        return
    except sqlite3.Error as exc:
        log.info("table %s cannot be read whole (%s); reading it row by row", table, exc)
    rowid, misses = 1, 0
    while misses < _ROW_SCAN_GAP:
        try:
            row = conn.execute(f"SELECT * FROM {table} WHERE rowid = ?", (rowid,)).fetchone()
        except sqlite3.Error:
            row = None
        if row is None:
            misses += 1
        else:
            misses = 0
            yield dict(row)
        rowid += 1


def _merged_meta(sources: list[tuple[str, dict[str, list[dict[str, Any]]]]]) -> dict[str, str]:
    meta: dict[str, str] = {}
    for _, rows in sources:
        for r in rows.get("meta", []):
            if isinstance(r.get("key"), str) and r.get("value") is not None:
                meta.setdefault(r["key"], str(r["value"]))
    return meta


def _label_project_id(root: Path) -> str:
    """The project id most label files in the folder carry ("" when none does)."""
    votes: dict[str, int] = {}
    for sub in ("annotations", "results"):
        for f in sorted((root / sub).glob("*/*.tif")) if (root / sub).is_dir() else ():
            rec = read_label_record(f)
            if rec and rec.get("project_id"):
                votes[str(rec["project_id"])] = votes.get(str(rec["project_id"]), 0) + 1
    return max(votes, key=lambda k: votes[k]) if votes else ""


# ----------------------------------------------------------------------------- rebuild


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [str(r[1]) for r in conn.execute(f"PRAGMA table_info({table})")]


def _insert(conn: sqlite3.Connection, table: str, row: dict[str, Any], cols: list[str]) -> bool:
    keys = [c for c in cols if c in row]
    try:
        cur = conn.execute(f"INSERT OR IGNORE INTO {table}({', '.join(keys)}) VALUES ({', '.join('?' * len(keys))})",
                           [row[k] for k in keys])
    except sqlite3.Error as exc:  # a garbled salvaged row, a row whose parent was lost
        log.info("row of %s not restored (%s): %.200s", table, exc, row)
        return False
    return cur.rowcount > 0


def _rebuild(store: Store, sources: list[tuple[str, dict[str, list[dict[str, Any]]]]], meta: dict[str, str],
             report: RepairReport) -> None:
    conn = store.conn
    with store.tx() as c:
        for key, value in meta.items():  # the project keeps its identity (project_id, name, created)
            if key not in ("schema_version", "app_version"):
                c.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))
        for name, rows in sources:
            got = report.from_source.setdefault(name, {})
            for table in TABLES[1:]:
                cols = _columns(conn, table)
                got[table] = sum(_insert(c, table, _fit_parents(c, table, r), cols) for r in rows.get(table, []))
        got = report.from_source.setdefault("label files", {})
        for key, n in _from_label_files(store, c, report).items():
            got[key] = n
        got_ad = _from_adapter_files(store, c, report)
        if got_ad:
            report.from_source.setdefault("adapter files", {})["adapters"] = got_ad
        # statuses follow what each image now has
        c.execute("UPDATE images SET status = 'annotated' WHERE status IN ('new', 'segmented') AND "
                  "EXISTS (SELECT 1 FROM annotations a WHERE a.image_id = images.id)")
        c.execute("UPDATE images SET status = 'segmented' WHERE status = 'new' AND "
                  "EXISTS (SELECT 1 FROM results r WHERE r.image_id = images.id)")
        c.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('repaired', ?)", (now_iso(),))
    for table in ("sets", "images", "annotations", "results", "adapters"):
        report.counts[table] = int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def _fit_parents(c: sqlite3.Connection, table: str, row: dict[str, Any]) -> dict[str, Any]:
    """A salvaged row whose set or run was lost: its image goes to set 'recovered', its result keeps
    its own settings and identity without a run."""
    if table == "images" and not c.execute("SELECT 1 FROM sets WHERE id = ?", (row.get("set_id"),)).fetchone():
        return {**row, "set_id": _set_id(c, "recovered")}
    if table == "results" and row.get("run_id") is not None \
            and not c.execute("SELECT 1 FROM runs WHERE id = ?", (row["run_id"],)).fetchone():
        return {**row, "run_id": None}
    if table == "runs" and row.get("set_id") is not None \
            and not c.execute("SELECT 1 FROM sets WHERE id = ?", (row["set_id"],)).fetchone():
        return {**row, "set_id": None}
    return row


def _set_id(c: sqlite3.Connection, name: str) -> int:
    row = c.execute("SELECT id FROM sets WHERE name = ?", (name,)).fetchone()
    if row is not None:
        return int(row[0])
    return int(c.execute("INSERT INTO sets(name, created) VALUES (?, ?)", (name, now_iso())).lastrowid)


def _image_from_record(c: sqlite3.Connection, entry: dict[str, Any]) -> int | None:
    """The image a label file's record names: its row again (same id), or the row already there."""
    try:
        image_id = int(entry["id"])
        if c.execute("SELECT 1 FROM images WHERE id = ?", (image_id,)).fetchone():
            return image_id
        sid = _set_id(c, str(entry.get("set") or "recovered"))
        scene = None if entry.get("scene") is None else int(entry["scene"])
        same = c.execute("SELECT id FROM images WHERE set_id = ? AND path = ? AND ifnull(scene, -1) = ?",
                         (sid, entry["path"], -1 if scene is None else scene)).fetchone()
        if same is not None:
            return int(same[0])
        planes = entry.get("planes") or {}
        c.execute("INSERT INTO images(id, set_id, path, size, quick_hash, sha256, width, height, channels, "
                  "channel_names, pixel_size_um, rgb, planes, status, added, scene, scene_name) "
                  "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'new', ?, ?, ?)",
                  (image_id, sid, str(entry["path"]), int(entry["size"]), str(entry["quick_hash"]), entry.get("sha256"),
                   int(entry["width"]), int(entry["height"]), int(entry["channels"]),
                   to_json(list(entry.get("channel_names") or [])), entry.get("pixel_size_um"),
                   int(bool(entry.get("rgb"))),
                   to_json(planes) if (planes.get("z") is not None or planes.get("t") is not None) else None,
                   str(entry.get("added") or now_iso()), scene, entry.get("scene_name")))
        if entry.get("copied"):
            c.execute("INSERT OR IGNORE INTO copies(path, size, quick_hash, created) VALUES (?, ?, ?, ?)",
                      (str(entry["path"]), int(entry["size"]), str(entry["quick_hash"]), now_iso()))
        return image_id
    except (KeyError, TypeError, ValueError, sqlite3.Error) as exc:
        log.info("image record not restored (%s): %.200s", exc, entry)
        return None


def _from_label_files(store: Store, c: sqlite3.Connection, report: RepairReport) -> dict[str, int]:
    got = {"images": 0, "annotations": 0, "results": 0}
    known = {str(r[0]) for t in ("annotations", "results") for r in c.execute(f"SELECT path FROM {t}")}
    project_id = str(c.execute("SELECT value FROM meta WHERE key = 'project_id'").fetchone()[0])
    for sub, letter in (("annotations", "v"), ("results", "r")):
        base = store.root / sub
        for f in sorted(base.glob(f"*/{letter}*.tif")) if base.is_dir() else ():
            stored = store.to_stored(f)
            if stored in known or not f.stem[1:].isdigit():
                continue
            number = int(f.stem[1:])
            rec = read_label_record(f)
            if rec is not None and rec.get("project_id") not in (None, project_id):
                report.unplaced.append((f, "written by another project"))
                continue
            try:
                labels = read_labels(f)
            except Exception as exc:  # noqa: BLE001 - any unreadable file is listed, never deleted
                report.unplaced.append((f, f"unreadable: {exc}"))
                continue
            had_images = int(c.execute("SELECT count(*) FROM images").fetchone()[0])
            if rec is not None and isinstance(rec.get("image"), dict):
                image_id = _image_from_record(c, rec["image"])
            else:
                image_id = int(f.parent.name) if f.parent.name.isdigit() else None
                if image_id is not None and not c.execute("SELECT 1 FROM images WHERE id = ?", (image_id,)).fetchone():
                    image_id = None
            got["images"] += int(c.execute("SELECT count(*) FROM images").fetchone()[0]) - had_images
            if image_id is None:
                report.unplaced.append((f, "its image is not known to any surviving record"))
                continue
            shape = c.execute("SELECT height, width FROM images WHERE id = ?", (image_id,)).fetchone()
            if tuple(shape) != labels.shape:
                report.unplaced.append((f, f"is {labels.shape[0]}x{labels.shape[1]} but its image is "
                                           f"{shape[0]}x{shape[1]}"))
                continue
            rec = rec or {}
            created = str(rec.get("created") or _dt.datetime.fromtimestamp(f.stat().st_mtime).astimezone()
                          .isoformat(timespec="seconds"))
            if sub == "annotations":
                ok = _insert(c, "annotations", {"image_id": image_id, "version": number, "path": stored,
                                                "n_cells": count_cells(labels), "note": str(rec.get("note") or ""),
                                                "created": created},
                             ["image_id", "version", "path", "n_cells", "note", "created"])
            else:
                run_id = rec.get("run_id")
                if run_id is not None and not c.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone():
                    _insert(c, "runs", {"id": run_id, "settings": to_json(rec.get("settings") or {}),
                                        "identity": to_json(rec.get("identity") or {}), "created": created},
                            ["id", "settings", "identity", "created"])
                ok = _insert(c, "results", {"id": number, "image_id": image_id, "run_id": run_id, "path": stored,
                                            "n_cells": count_cells(labels),
                                            "settings": to_json(rec.get("settings") or {"recovered": True}),
                                            "identity": to_json(rec.get("identity") or {}),
                                            "seconds": rec.get("seconds"), "created": created},
                             ["id", "image_id", "run_id", "path", "n_cells", "settings", "identity", "seconds",
                              "created"])
            if ok:
                got[sub] += 1
            else:
                report.unplaced.append((f, "its version or result number is taken by another file"))
    return got


def _from_adapter_files(store: Store, c: sqlite3.Connection, report: RepairReport) -> int:
    from .adapters import core_metadata, read_safetensors_header
    from .images import sha256_file

    known = {str(r[0]) for r in c.execute("SELECT path FROM adapters")}
    n = 0
    for f in sorted((store.root / "adapters").glob("*.safetensors")):
        stored = store.to_stored(f)
        if stored in known:
            continue
        try:
            header, _ = read_safetensors_header(f)
        except Exception as exc:  # noqa: BLE001 - listed, never deleted
            report.unplaced.append((f, str(exc)))
            continue
        core = core_metadata(header)
        meta = header.get("__metadata__") or {}
        encoder = core.get("encoder") or (meta.get("encoder") if isinstance(meta, dict) else None)
        if not encoder:
            report.unplaced.append((f, "the adapter file does not say which encoder it was trained for"))
            continue
        base = str(core.get("name") or f.stem.rsplit("-", 1)[0] or f.stem)
        name, k = base, 2
        while c.execute("SELECT 1 FROM adapters WHERE name = ?", (name,)).fetchone():
            name, k = f"{base} ({k})", k + 1
        images = (core.get("training") or {}).get("images") if isinstance(core.get("training"), dict) else None
        c.execute("INSERT INTO adapters(name, encoder, path, sha256, size, training_images, metrics, metadata, "
                  "created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                  (name, str(encoder), stored, sha256_file(f), f.stat().st_size,
                   to_json([str(x) for x in images] if isinstance(images, list) else []),
                   to_json(core.get("metrics") if isinstance(core.get("metrics"), dict) else {}),
                   to_json({"recovered": True}), now_iso()))
        n += 1
    return n


__all__ = ["RepairReport", "diagnose", "repair_project"]
