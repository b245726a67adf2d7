"""Model output: runs (settings + model identity) and one label image per segmented image.

Results live in ``results/<image id>/r<result id>.tif``, apart from annotations. Each result
records the settings that reproduce it and the identity of the model (encoder and adapter with
their SHA-256), so a number in a spreadsheet can be traced to the exact model that made it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import NotFoundError
from .images import get_image, image_entry, set_id
from .labelfile import check_labels, count_cells, read_labels, remove_stale_temps, write_labels
from .store import Store, from_json, now_iso, to_json


@dataclass(frozen=True)
class RunRecord:
    """One batch segmentation (``segment_project``) or a group of single-image results."""

    id: int
    set_name: str | None
    settings: dict[str, Any]
    identity: dict[str, Any]
    created: str
    n_results: int


@dataclass(frozen=True)
class ResultRecord:
    id: int
    image_id: int
    run_id: int | None
    path: Path
    n_cells: int
    settings: dict[str, Any]
    identity: dict[str, Any]
    seconds: float | None
    created: str


def _result(store: Store, r: Any) -> ResultRecord:
    return ResultRecord(
        id=int(r["id"]), image_id=int(r["image_id"]), run_id=None if r["run_id"] is None else int(r["run_id"]),
        path=store.from_stored(r["path"]), n_cells=int(r["n_cells"]), settings=from_json(r["settings"], {}) or {},
        identity=from_json(r["identity"], {}) or {}, seconds=r["seconds"], created=str(r["created"]),
    )


def start_run(store: Store, settings: dict[str, Any], identity: dict[str, Any], set_name: str | None = None) -> int:
    sid = None if set_name is None else set_id(store, set_name)
    with store.tx() as conn:
        cur = conn.execute("INSERT INTO runs(set_id, settings, identity, created) VALUES (?, ?, ?, ?)",
                           (sid, to_json(settings), to_json(identity), now_iso()))
        return int(cur.lastrowid)


def discard_run_if_empty(store: Store, run_id: int) -> bool:
    """Forget a run that recorded no result (a batch cancelled before its first image); True if it went."""
    with store.tx() as conn:
        cur = conn.execute("DELETE FROM runs WHERE id = ? AND NOT EXISTS (SELECT 1 FROM results WHERE run_id = ?)",
                           (int(run_id), int(run_id)))
        return cur.rowcount > 0


def list_runs(store: Store) -> list[RunRecord]:
    rows = store.query("SELECT r.id, s.name AS set_name, r.settings, r.identity, r.created, "
                       "(SELECT count(*) FROM results x WHERE x.run_id = r.id) AS n "
                       "FROM runs r LEFT JOIN sets s ON s.id = r.set_id ORDER BY r.id")
    return [RunRecord(int(r["id"]), r["set_name"], from_json(r["settings"], {}) or {},
                      from_json(r["identity"], {}) or {}, str(r["created"]), int(r["n"])) for r in rows]


def record_result(store: Store, image_id: int, labels: np.ndarray, settings: dict[str, Any],
                  identity: dict[str, Any], run_id: int | None = None, seconds: float | None = None) -> Path:
    """Store a segmentation of an image; returns the label file. Marks a 'new' image 'segmented'."""
    rec = get_image(store, image_id)
    labels = check_labels(labels, (rec.height, rec.width), what="result")
    with store.write_lock:
        row = store.one("SELECT max(id) AS m FROM results")
        rid = int(row["m"] or 0) + 1 if row else 1
        folder = store.root / "results" / str(rec.id)
        remove_stale_temps(folder)
        path, rid = store.free_label_path(folder, "r", rid)
        stored = store.to_stored(path)
        n, created = count_cells(labels), now_iso()
        store.intend_write(stored)
        write_labels(path, labels, {"project_id": store.project_id, "kind": "result", "image_id": rec.id,
                                    "result_id": rid, "run_id": run_id, "n_cells": n, "settings": settings,
                                    "identity": identity, "seconds": seconds, "created": created,
                                    "image": image_entry(rec)})
        with store.tx() as conn:
            conn.execute("INSERT INTO results(id, image_id, run_id, path, n_cells, settings, identity, seconds, "
                         "created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (rid, rec.id, run_id, stored, n, to_json(settings), to_json(identity), seconds, created))
            conn.execute("UPDATE images SET status = 'segmented' WHERE id = ? AND status = 'new'", (rec.id,))
            store.settle(conn, [stored])
    return path


_COLS = "id, image_id, run_id, path, n_cells, settings, identity, seconds, created"


def list_results(store: Store, image_id: int) -> list[ResultRecord]:
    """Every stored result of an image, newest first."""
    rows = store.query(f"SELECT {_COLS} FROM results WHERE image_id = ? ORDER BY id DESC", (int(image_id),))
    return [_result(store, r) for r in rows]


def latest_result(store: Store, image_id: int) -> ResultRecord | None:
    r = store.one(f"SELECT {_COLS} FROM results WHERE image_id = ? ORDER BY id DESC LIMIT 1", (int(image_id),))
    return None if r is None else _result(store, r)


def get_result(store: Store, result_id: int) -> ResultRecord:
    r = store.one(f"SELECT {_COLS} FROM results WHERE id = ?", (int(result_id),))
    if r is None:
        raise NotFoundError(f"no result with id {result_id} in the project")
    return _result(store, r)


def load_result_labels(result: ResultRecord | Path | str) -> np.ndarray:
    path = result.path if isinstance(result, ResultRecord) else Path(result)
    return read_labels(path)


def delete_results(store: Store, image_id: int, keep_last: int = 0) -> int:
    """Forget an image's older results, keeping the newest ``keep_last``; returns how many went."""
    from .labelfile import remove_files

    with store.write_lock:
        with store.tx() as conn:
            old = conn.execute("SELECT id, path FROM results WHERE image_id = ? ORDER BY id DESC LIMIT -1 OFFSET ?",
                               (int(image_id), max(0, keep_last))).fetchall()
            conn.executemany("DELETE FROM results WHERE id = ?", [(r[0],) for r in old])
            store.journal(conn, [r[1] for r in old], "delete")
        remove_files([store.from_stored(r[1]) for r in old])
        store.settled([r[1] for r in old])
    return len(old)
