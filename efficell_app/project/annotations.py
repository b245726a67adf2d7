"""Annotations: label images drawn or corrected by the user, with their last versions.

Each save writes a new file ``annotations/<image id>/v<version>.tif`` (atomically) and then
records it in one transaction that also forgets versions beyond the history length. A crash
before the commit leaves an unreferenced file (overwritten by the next save); a crash after it
leaves the new version. Either way the project holds the last complete save. Model output is
stored elsewhere (``results/``), so a prediction can never overwrite an annotation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import NotFoundError
from .images import _IMAGE_COLUMNS, ImageRecord, _record, get_image, image_entry, set_id
from .labelfile import check_labels, count_cells, read_labels, remove_files, remove_stale_temps, write_labels
from .store import Store, now_iso

ANNOTATION_HISTORY = 10
KEPT_NOTE = "kept: "  # a version with a note starting so is never pruned (one the user replaced)


@dataclass(frozen=True)
class AnnotationVersion:
    image_id: int
    version: int
    path: Path
    n_cells: int
    note: str
    created: str


def _version(store: Store, r: Any) -> AnnotationVersion:
    return AnnotationVersion(int(r["image_id"]), int(r["version"]), store.from_stored(r["path"]), int(r["n_cells"]),
                             str(r["note"]), str(r["created"]))


def history_length(store: Store) -> int:
    value = store.meta("annotation_history")
    return max(1, int(value)) if value and value.isdigit() else ANNOTATION_HISTORY


def save_annotation(store: Store, image_id: int, labels: np.ndarray, note: str = "") -> AnnotationVersion:
    """Save a new version of an image's annotation; keeps the last ``history_length`` versions (and
    every version :func:`keep_annotation` kept)."""
    rec = get_image(store, image_id)
    labels = check_labels(labels, (rec.height, rec.width), what="annotation")
    keep = history_length(store)
    with store.write_lock:
        row = store.one("SELECT max(version) AS v FROM annotations WHERE image_id = ?", (rec.id,))
        version = int(row["v"] or 0) + 1 if row else 1
        folder = store.root / "annotations" / str(rec.id)
        remove_stale_temps(folder)
        path, version = store.free_label_path(folder, "v", version)
        stored = store.to_stored(path)
        created = now_iso()
        n = count_cells(labels)
        store.intend_write(stored)
        write_labels(path, labels, {"project_id": store.project_id, "kind": "annotation", "image_id": rec.id,
                                    "version": version, "n_cells": n, "note": note, "created": created,
                                    "image": image_entry(rec)})
        with store.tx() as conn:
            conn.execute("INSERT INTO annotations(image_id, version, path, n_cells, note, created) "
                         "VALUES (?, ?, ?, ?, ?, ?)", (rec.id, version, stored, n, note, created))
            old = conn.execute("SELECT id, path FROM annotations WHERE image_id = ? AND note NOT LIKE ? "
                               "ORDER BY version DESC LIMIT -1 OFFSET ?", (rec.id, KEPT_NOTE + "%", keep)).fetchall()
            conn.executemany("DELETE FROM annotations WHERE id = ?", [(r[0],) for r in old])
            conn.execute("UPDATE images SET status = 'annotated' WHERE id = ? AND status IN ('new', 'segmented')",
                         (rec.id,))
            store.settle(conn, [stored])
            store.journal(conn, [r[1] for r in old], "delete")
        remove_files([store.from_stored(r[1]) for r in old])
        store.settled([r[1] for r in old])
    return AnnotationVersion(rec.id, version, path, n, note, created)


def keep_annotation(store: Store, image_id: int, why: str) -> AnnotationVersion | None:
    """Keep the image's latest annotation version for good (out of the rolling history of autosaves):
    before the user replaces it (starting empty, from the prediction, from imported masks), so that the
    work replaced survives however many saves follow. Returns it; None when there is none."""
    with store.write_lock:
        r = store.one("SELECT image_id, version, path, n_cells, note, created FROM annotations WHERE image_id = ? "
                      "ORDER BY version DESC LIMIT 1", (int(image_id),))
        if r is None:
            return None
        if not str(r["note"]).startswith(KEPT_NOTE):
            with store.tx() as conn:
                conn.execute("UPDATE annotations SET note = ? WHERE image_id = ? AND version = ?",
                             (f"{KEPT_NOTE}{why} (was: {r['note']})", int(image_id), int(r["version"])))
        return annotation_history(store, image_id)[0]


def annotation_history(store: Store, image_id: int) -> list[AnnotationVersion]:
    """Saved versions of an image's annotation, newest first (empty when not annotated)."""
    rows = store.query("SELECT image_id, version, path, n_cells, note, created FROM annotations "
                       "WHERE image_id = ? ORDER BY version DESC", (int(image_id),))
    return [_version(store, r) for r in rows]


def load_annotation(store: Store, image_id: int, version: int | None = None) -> np.ndarray | None:
    """The latest (or a given) annotation version of an image; ``None`` when there is none."""
    if version is None:
        r = store.one("SELECT path FROM annotations WHERE image_id = ? ORDER BY version DESC LIMIT 1",
                      (int(image_id),))
    else:
        r = store.one("SELECT path FROM annotations WHERE image_id = ? AND version = ?", (int(image_id), version))
        if r is None:
            raise NotFoundError(f"image {image_id} has no annotation version {version}")
    return None if r is None else read_labels(store.from_stored(r["path"]))


def annotated_images(store: Store, set_name: str | None = None) -> list[ImageRecord]:
    """Images that have at least one saved annotation (the training data)."""
    sql = (f"SELECT {_IMAGE_COLUMNS} FROM images i JOIN sets s ON s.id = i.set_id "
           "WHERE EXISTS (SELECT 1 FROM annotations a WHERE a.image_id = i.id)")
    params: list[Any] = []
    if set_name is not None:
        sql += " AND i.set_id = ?"
        params.append(set_id(store, set_name))
    return [_record(store, r) for r in store.query(sql + " ORDER BY i.id", params)]


def annotation_files(store: Store, image_ids: list[int]) -> list[Path]:
    out: list[Path] = []
    for i in image_ids:
        out += [v.path for v in annotation_history(store, i)]
    return out
