"""The :class:`Project` object: one open project folder (see the package docstring)."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.cancel import CancelToken
from ..core.fileio import real_path
from ..core.images import ImageData, PlaneChoice, is_image_file
from . import adapters as _ad
from . import annotations as _an
from . import images as _im
from . import problems as _pb
from . import results as _rs
from .labelfile import read_labels, remove_files, remove_stale_temps
from .measuring import FoundLabels, find_labels, measure_project_image
from .store import DB_NAME, Store

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

_ANNOTATION_FILE = re.compile(r"v\d{6,}\.tif")  # annotations.save_annotation
_RESULT_FILE = re.compile(r"r\d{6,}\.tif")  # results.record_result


class Project:
    """An open project. Create with :meth:`create` or :meth:`open`; thread-safe; ``close()`` when done."""

    def __init__(self, store: Store) -> None:
        self._store = store

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def create(cls, folder: str | Path, name: str | None = None) -> Project:
        """Make a new project in ``folder`` (created if needed) and open it."""
        return cls(Store.create(folder, name))

    @classmethod
    def open(cls, folder: str | Path) -> Project:
        """Open an existing project; raises ProjectLockedError / ProjectVersionError / NotAProjectError.

        After a crash of the last session (its WAL file is still there) or when the index
        journaled a file write that did not finish, what those writes left is removed
        (:meth:`tidy`); files the index does not know are never touched.
        """
        project = cls(Store.open(folder))
        store = project._store
        if store.unclean_shutdown or store.one("SELECT 1 FROM file_journal LIMIT 1"):
            n = project.tidy()
            log.info("%s: the last session did not finish every file write; %d unfinished file(s) removed", folder, n)
        return project

    @staticmethod
    def is_project(folder: str | Path) -> bool:
        return (Path(folder) / DB_NAME).is_file()

    def close(self) -> None:
        self._store.close()

    @property
    def closed(self) -> bool:
        return self._store.closed

    def __enter__(self) -> Project:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Project({str(self.root)!r}{', closed' if self.closed else ''})"

    @property
    def root(self) -> Path:
        return self._store.root

    @property
    def name(self) -> str:
        return self._store.meta("name") or self.root.name

    @property
    def exports_dir(self) -> Path:
        return self.root / "exports"

    def info(self) -> dict[str, str]:
        """Project metadata: project_id, name, created, created_by, app_version, schema_version."""
        return {str(r["key"]): str(r["value"]) for r in self._store.query("SELECT key, value FROM meta")}

    def tidy(self) -> int:
        """Finish what interrupted writes left; returns how many files were removed.

        Removed are temporary files, and the files the index itself journaled as in flight
        (written but not recorded, or forgotten but not yet deleted when the process died) that
        no row uses. A file the index does not know is never deleted (it may be one a lost or
        older index knew: ``efficell project repair`` can bring it back); it is only counted in
        the log. Holds the write lock, so a save in progress is never touched.
        """
        n = 0
        store = self._store
        with store.write_lock:
            journal = [str(r["path"]) for r in store.query("SELECT path FROM file_journal")]
            for stored in journal:
                if not self._uses(stored):
                    path = store.from_stored(stored)
                    if path.is_file():
                        remove_files([path])
                        n += 1
            store.settled(journal)
            for sub in ("annotations", "results"):
                base = self.root / sub
                for d in (base.iterdir() if base.is_dir() else ()):
                    if d.is_dir():
                        n += remove_stale_temps(d)
            unknown = self.unindexed_label_files()
            if unknown:
                log.warning("%s: %d label file(s) the index does not know were kept (e.g. %s); "
                            "`efficell project repair` can add them back", self.root, len(unknown), unknown[0])
        return n + sum(remove_stale_temps(self.root / d) for d in ("adapters", "exports"))

    def _uses(self, stored: str) -> bool:
        sql = " UNION ALL ".join(f"SELECT 1 FROM {t} WHERE path = ?" for t in ("annotations", "results", "adapters",
                                                                                 "images"))
        return bool(self._store.query(sql, (stored,) * 4))

    def unindexed_label_files(self) -> list[Path]:
        """Label files in ``annotations/`` and ``results/`` that no index row refers to."""
        store = self._store
        known = {str(r["path"]) for table in ("annotations", "results")
                 for r in store.query(f"SELECT path FROM {table}")}
        out: list[Path] = []
        for sub, pattern in (("annotations", _ANNOTATION_FILE), ("results", _RESULT_FILE)):
            base = self.root / sub
            for d in (sorted(base.iterdir()) if base.is_dir() else ()):
                if d.is_dir():
                    out += [f for f in sorted(d.iterdir())
                            if pattern.fullmatch(f.name) and store.to_stored(f) not in known]
        return out

    # ------------------------------------------------------------------ sets

    def create_set(self, name: str) -> _im.SetInfo:
        sid = _im.set_id(self._store, name, create=True)
        return next(s for s in self.list_sets() if s.id == sid)

    def list_sets(self) -> list[_im.SetInfo]:
        return _im.list_sets(self._store)

    def rename_set(self, old: str, new: str) -> None:
        _im.rename_set(self._store, old, new)

    def delete_set(self, name: str) -> None:
        """Delete a set with its images' annotations and results (and images copied into the project)."""
        sid = _im.set_id(self._store, name)
        self._remove_images([r.id for r in self.list_images(name)])
        with self._store.tx() as conn:
            conn.execute("DELETE FROM sets WHERE id = ?", (sid,))

    # ------------------------------------------------------------------ images

    def add_folder(self, path: str | Path, set_name: str, copy: bool = False, planes: PlaneChoice | None = None,
                   progress: _im.Progress | None = None, cancel: CancelToken | None = None) -> _im.AddReport:
        """Add every image under ``path`` recursively; ``copy`` copies them into ``images/<set>/``."""
        return _im.add_folder(self._store, path, set_name, copy=copy, planes=planes, progress=progress, cancel=cancel)

    def add_files(self, paths: Sequence[str | Path], set_name: str, copy: bool = False,
                  planes: PlaneChoice | None = None, progress: _im.Progress | None = None,
                  cancel: CancelToken | None = None) -> _im.AddReport:
        """Add image files (folders among them are expanded recursively)."""
        report = _im.AddReport(set_name=set_name.strip())
        pairs: list[tuple[Path, Path | None]] = []
        base = self.root / "images" / _im._safe_folder_name(report.set_name)
        for p in map(real_path, paths):  # the door: one spelling per file
            if p.is_dir():
                found, skipped = _im.find_images([p])
                report.skipped.extend(skipped)
                pairs += [(f, base / p.name / f.relative_to(p)) for f in found]
            elif p.is_file() and not is_image_file(p):
                report.skipped.append((p, f"not an image file ({p.suffix or 'no extension'})"))
            else:
                pairs.append((p, base / p.name))
        return _im.add_files(self._store, pairs, set_name, copy=copy, planes=planes, progress=progress,
                             cancel=cancel, report=report)

    def list_images(self, set_name: str | None = None, status: str | None = None) -> list[_im.ImageRecord]:
        return _im.list_images(self._store, set_name, status)

    def get_image(self, image_id: int) -> _im.ImageRecord:
        return _im.get_image(self._store, image_id)

    def read_image(self, image_id: int) -> ImageData:
        """The image's pixels (with the z/t plane chosen when it was added)."""
        return _im.read_project_image(self._store, image_id)

    def set_status(self, image_id: int, status: str) -> None:
        _im.set_status(self._store, image_id, status)

    def image_sha256(self, image_id: int) -> str:
        return _im.image_sha256(self._store, image_id)

    def remove_image(self, image_id: int) -> None:
        """Remove an image with its annotations and results (and its file only if it was copied
        into the project's ``images/`` folder; the user's own files are never deleted)."""
        self.get_image(image_id)
        self._remove_images([int(image_id)])

    def _remove_images(self, ids: list[int]) -> None:
        store = self._store
        with store.write_lock:
            recs = [_im.get_image(store, i) for i in ids]
            labels = [str(r["path"]) for i in ids for table in ("annotations", "results")
                      for r in store.query(f"SELECT path FROM {table} WHERE image_id = ?", (i,))]
            with store.tx() as conn:
                conn.executemany("DELETE FROM images WHERE id = ?", [(i,) for i in ids])  # rows of labels cascade
                store.journal(conn, labels, "delete")
            copies = _im.own_copies_to_delete(store, [r.stored_path for r in recs])  # never the user's files
            remove_files([store.from_stored(s) for s in labels + copies])
            store.settled(labels + copies)

    def missing_images(self, set_name: str | None = None) -> list[_im.ImageRecord]:
        """Images whose file is no longer where it was recorded (moved, renamed, drive not mounted)."""
        return _im.missing_images(self._store, self.list_images(set_name))

    def relink(self, old_prefix: str | Path, new_folder: str | Path) -> _im.RelinkReport:
        """Images recorded under ``old_prefix`` now live under ``new_folder`` (same sub-paths)."""
        return _im.relink(self._store, old_prefix, new_folder)

    def find_missing(self, folder: str | Path) -> _im.RelinkReport:
        """Relink the missing images found (same name, same size and content) under ``folder``."""
        return _im.find_missing(self._store, folder)

    # ------------------------------------------------------------------ results

    def start_run(self, settings: dict[str, Any], identity: dict[str, Any], set_name: str | None = None) -> int:
        return _rs.start_run(self._store, settings, identity, set_name)

    def discard_run_if_empty(self, run_id: int) -> bool:
        """Forget a run that recorded no result (cancelled before its first image)."""
        return _rs.discard_run_if_empty(self._store, run_id)

    def list_runs(self) -> list[_rs.RunRecord]:
        return _rs.list_runs(self._store)

    def record_result(self, image_id: int, labels: np.ndarray, settings: dict[str, Any], identity: dict[str, Any],
                      run_id: int | None = None, seconds: float | None = None) -> Path:
        """Store model output for an image (never touches its annotation); returns the label file."""
        return _rs.record_result(self._store, image_id, labels, settings, identity, run_id, seconds)

    def latest_result(self, image_id: int) -> _rs.ResultRecord | None:
        return _rs.latest_result(self._store, image_id)

    def list_results(self, image_id: int) -> list[_rs.ResultRecord]:
        return _rs.list_results(self._store, image_id)

    def delete_results(self, image_id: int, keep_last: int = 0) -> int:
        return _rs.delete_results(self._store, image_id, keep_last)

    def load_labels(self, result: _rs.ResultRecord | _an.AnnotationVersion | Path | str) -> np.ndarray:
        """Read the label image of a result or annotation version (or a label file path)."""
        if isinstance(result, (_rs.ResultRecord, _an.AnnotationVersion)):
            return read_labels(result.path)
        return read_labels(Path(result))

    # ------------------------------------------------------------------ annotations

    def save_annotation(self, image_id: int, labels: np.ndarray, note: str = "") -> _an.AnnotationVersion:
        """Save the user's label image as a new version (atomic; last 10 versions kept)."""
        return _an.save_annotation(self._store, image_id, labels, note)

    def load_annotation(self, image_id: int, version: int | None = None) -> np.ndarray | None:
        return _an.load_annotation(self._store, image_id, version)

    def keep_annotation(self, image_id: int, why: str = "replaced") -> _an.AnnotationVersion | None:
        """Keep the latest annotation version out of the rolling history (see ``annotations.keep_annotation``)."""
        return _an.keep_annotation(self._store, image_id, why)

    def annotation_history(self, image_id: int) -> list[_an.AnnotationVersion]:
        return _an.annotation_history(self._store, image_id)

    def annotated_images(self, set_name: str | None = None) -> list[_im.ImageRecord]:
        return _an.annotated_images(self._store, set_name)

    def stored_cell_counts(self) -> dict[int, int]:
        """Per image, the objects of the labels that count (the latest annotation, else the latest
        result; ``measuring.find_labels``) as recorded when they were saved: a count for every
        segmented or annotated image without reading a label file (the window's list on opening)."""
        rows = self._store.query(
            "SELECT i.id AS id, COALESCE("
            "(SELECT a.n_cells FROM annotations a WHERE a.image_id = i.id ORDER BY a.version DESC LIMIT 1), "
            "(SELECT r.n_cells FROM results r WHERE r.image_id = i.id ORDER BY r.id DESC LIMIT 1)) AS n FROM images i")
        return {int(r["id"]): int(r["n"]) for r in rows if r["n"] is not None}

    def labels_for(self, image_id: int, source: str = "auto") -> FoundLabels | None:
        """The labels that count for an image (THE rule, :func:`.measuring.find_labels`): the user's
        saved annotation if there is one, else the latest result; ``None`` when it has neither.
        ``source`` "annotation" or "result" restricts to one kind. ``.labels`` is the array."""
        return find_labels(self, image_id, source)

    def measure(self, image_id: int, source: str = "auto") -> tuple[pd.DataFrame, str] | None:
        """Per-cell measurements of an image (:func:`.measuring.measure_project_image`) and the labels'
        origin ("annotation vN" / "result N"); ``None`` when the image has no such labels.
        Computed on demand from the stored labels and the image, so they are never stale."""
        measured = measure_project_image(self, image_id, source=source)
        return None if measured is None else (measured.cells, measured.origin)

    # ------------------------------------------------------------------ adapters

    def add_adapter(self, file: str | Path, name: str | None = None, encoder: str | None = None,
                    training_images: Sequence[str] | None = None, metrics: dict[str, Any] | None = None,
                    metadata: dict[str, Any] | None = None) -> _ad.AdapterInfo:
        """Copy a trained adapter file into the library (missing fields come from the file's metadata)."""
        images = None if training_images is None else tuple(training_images)
        return _ad.add_adapter(self._store, file, name, encoder, images, metrics, metadata)

    def list_adapters(self) -> list[_ad.AdapterInfo]:
        return _ad.list_adapters(self._store)

    def get_adapter(self, key: str | int) -> _ad.AdapterInfo:
        return _ad.get_adapter(self._store, key)

    def rename_adapter(self, key: str | int, new_name: str) -> _ad.AdapterInfo:
        return _ad.rename_adapter(self._store, key, new_name)

    def delete_adapter(self, key: str | int) -> None:
        _ad.delete_adapter(self._store, key)

    def export_adapter(self, key: str | int, dest: str | Path) -> Path:
        return _ad.export_adapter(self._store, key, dest)

    def import_adapter(self, file: str | Path, name: str | None = None) -> _ad.AdapterInfo:
        return _ad.import_adapter(self._store, file, name)

    # ------------------------------------------------------------------ problems (the window's list)

    def list_problems(self) -> list[str]:
        return _pb.list_problems(self._store)

    def add_problems(self, lines: Sequence[str]) -> list[str]:
        return _pb.add_problems(self._store, lines)

    def clear_problems(self) -> None:
        _pb.clear_problems(self._store)


def open_project(folder: str | Path) -> Project:
    """Same as :meth:`Project.open` (usable as a context manager)."""
    return Project.open(folder)
