"""Image sets and their images: adding folders, per-image records, hashes, relinking."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath
from typing import Any

from ..core.cancel import CancelToken
from ..core.errors import ImageReadError, InputError
from ..core.fileio import atomic_path, quick_hash, real_path
from ..core.images import (
    ImageData,
    PlaneChoice,
    PlanesNeeded,
    display_name,
    find_images,
    read_image,
    scene_names,
)
from ..core.pairing import split_name
from .errors import NotFoundError, ProjectError
from .store import Store, from_json, is_absolute_anywhere, now_iso, to_json

log = logging.getLogger(__name__)

STATUSES = ("new", "segmented", "annotated", "reviewed")
FULL_HASH_LIMIT = 256 << 20  # files up to this size get their full SHA-256 when added
_COMMIT_EVERY = 50  # images per transaction while adding (a crash loses at most these)
_PROJECT_OWN = ("annotations", "results", "adapters", "exports")

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class SetInfo:
    id: int
    name: str
    n_images: int
    created: str


@dataclass(frozen=True)
class ImageRecord:
    """One image of a set, as recorded when it was added."""

    id: int
    set_name: str
    path: Path  # where the file is (absolute)
    stored_path: str  # as kept in the index: POSIX relative to the project, or absolute
    size: int
    quick_hash: str
    sha256: str | None
    width: int
    height: int
    channels: int
    channel_names: tuple[str, ...]
    pixel_size_um: float | None
    rgb: bool
    planes: PlaneChoice
    status: str
    added: str
    scene: int | None = None  # scene index in a multi-scene file (CZI scene, ND2 position, OME image)
    scene_name: str | None = None
    copied: bool = False  # the file is a copy the project made (table ``copies``), not the user's

    @property
    def name(self) -> str:
        """``file``, or ``file [scene]`` for one scene of a multi-scene file."""
        return display_name(self.path, self.scene_name if self.scene is not None else None)

    @property
    def inside_project(self) -> bool:
        return not is_absolute_anywhere(self.stored_path)


@dataclass
class AddReport:
    """What ``add_folder`` / ``add_files`` did: ids added, files skipped and why."""

    set_name: str
    added: list[int] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    duplicates: int = 0
    cancelled: bool = False
    #: skipped z-stacks / time series (also in ``skipped``): file -> the planes to choose from
    #: (``core.images.PlanesNeeded.sizes``); adding them again with a ``PlaneChoice`` works
    stacks: dict[Path, dict[str, int]] = field(default_factory=dict)
    #: the entries of ``skipped`` that are such stacks (a file, or ``file [scene]``): not problems yet
    stack_entries: set[Path] = field(default_factory=set)

    @property
    def n_added(self) -> int:
        return len(self.added)

    @property
    def n_skipped(self) -> int:
        return len(self.skipped)

    def problems(self) -> list[tuple[Path, str]]:
        """The skipped files that are problems: all but the stacks waiting for a plane choice."""
        return [(p, r) for p, r in self.skipped if p not in self.stack_entries]

    def reasons(self) -> dict[str, int]:
        """How many files were skipped for each kind of reason (extension details folded)."""
        out: dict[str, int] = {}
        for _, reason in self.skipped:
            key = re.sub(r"\s*\([^()]*\)$", "", reason)  # only the last parenthesis: "(.txt)", "(...)"
            out[key] = out.get(key, 0) + 1
        return out

    def summary(self) -> str:
        parts = [f"{self.n_added} image(s) added to '{self.set_name}'"]
        if self.duplicates:
            parts.append(f"{self.duplicates} already in the set")
        if self.skipped:
            why = ", ".join(f"{n} {r}" for r, n in sorted(self.reasons().items()))
            parts.append(f"{self.n_skipped} skipped ({why})")
        if self.cancelled:
            parts.append("cancelled before the end")
        return "; ".join(parts)


@dataclass
class RelinkReport:
    relinked: list[int] = field(default_factory=list)
    still_missing: list[tuple[int, Path]] = field(default_factory=list)
    mismatched: list[tuple[int, Path, str]] = field(default_factory=list)  # (id, candidate, why)


# ----------------------------------------------------------------------------- hashes


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------- sets


def clean_name(name: str, what: str = "set") -> str:
    """A user-given name of a ``what`` (set, adapter), stripped; ProjectError when empty or too long."""
    name = (name or "").strip()
    if not name:
        raise ProjectError(f"a{'n' if what[:1] in 'aeiou' else ''} {what} needs a name")
    if len(name) > 120:
        raise ProjectError(f"{what} name too long ({len(name)} characters, at most 120)")
    return name


def set_id(store: Store, name: str, create: bool = False) -> int:
    name = clean_name(name)
    row = store.one("SELECT id FROM sets WHERE name = ?", (name,))
    if row is not None:
        return int(row["id"])
    if not create:
        names = ", ".join(f"'{r['name']}'" for r in store.query("SELECT name FROM sets ORDER BY id")) or "none yet"
        raise NotFoundError(f"no image set named '{name}' in the project (sets: {names})")
    with store.tx() as conn:
        cur = conn.execute("INSERT INTO sets(name, created) VALUES (?, ?)", (name, now_iso()))
        return int(cur.lastrowid)


def list_sets(store: Store) -> list[SetInfo]:
    rows = store.query("SELECT s.id, s.name, s.created, count(i.id) AS n FROM sets s "
                       "LEFT JOIN images i ON i.set_id = s.id GROUP BY s.id ORDER BY s.id")
    return [SetInfo(int(r["id"]), str(r["name"]), int(r["n"]), str(r["created"])) for r in rows]


def rename_set(store: Store, old: str, new: str) -> None:
    new = clean_name(new)
    sid = set_id(store, old)
    if store.one("SELECT id FROM sets WHERE name = ? AND id != ?", (new, sid)):
        raise ProjectError(f"a set named '{new}' already exists")
    with store.tx() as conn:
        conn.execute("UPDATE sets SET name = ? WHERE id = ?", (new, sid))


def _safe_folder_name(name: str) -> str:
    safe = re.sub(r'[<>:"/\\|?*\x00-\x1f]+', "_", name).strip(" .")
    return safe or "set"


# ----------------------------------------------------------------------------- images

_IMAGE_COLUMNS = ("i.id, s.name AS set_name, i.path, i.size, i.quick_hash, i.sha256, i.width, i.height, "
                  "i.channels, i.channel_names, i.pixel_size_um, i.rgb, i.planes, i.status, i.added, "
                  "i.scene, i.scene_name, EXISTS (SELECT 1 FROM copies c WHERE c.path = i.path) AS copied")


@functools.lru_cache(maxsize=256)
def _names(text: str) -> tuple[str, ...]:
    return tuple(from_json(text, []) or ())


@functools.lru_cache(maxsize=64)
def _planes(text: str | None) -> PlaneChoice:
    d = from_json(text, {}) or {}
    return PlaneChoice(z=d.get("z"), t=d.get("t"))


def _record(store: Store, r: Any) -> ImageRecord:
    return ImageRecord(
        id=int(r["id"]), set_name=str(r["set_name"]), path=store.from_stored(r["path"]), stored_path=str(r["path"]),
        size=int(r["size"]), quick_hash=str(r["quick_hash"]), sha256=r["sha256"], width=int(r["width"]),
        height=int(r["height"]), channels=int(r["channels"]),
        channel_names=_names(r["channel_names"]), pixel_size_um=r["pixel_size_um"],
        rgb=bool(r["rgb"]), planes=_planes(r["planes"]), status=str(r["status"]),
        added=str(r["added"]), scene=None if r["scene"] is None else int(r["scene"]), scene_name=r["scene_name"],
        copied=bool(r["copied"]),
    )


def image_entry(rec: ImageRecord) -> dict[str, Any]:
    """An image's index row as JSON-able values (kept in its label files for ``project repair``)."""
    return {"id": rec.id, "set": rec.set_name, "path": rec.stored_path, "size": rec.size,
            "quick_hash": rec.quick_hash, "sha256": rec.sha256, "width": rec.width, "height": rec.height,
            "channels": rec.channels, "channel_names": list(rec.channel_names), "pixel_size_um": rec.pixel_size_um,
            "rgb": rec.rgb, "planes": {"z": rec.planes.z, "t": rec.planes.t}, "added": rec.added,
            "scene": rec.scene, "scene_name": rec.scene_name, "copied": rec.copied}


def list_images(store: Store, set_name: str | None = None, status: str | None = None) -> list[ImageRecord]:
    sql = f"SELECT {_IMAGE_COLUMNS} FROM images i JOIN sets s ON s.id = i.set_id"
    where: list[str] = []
    params: list[Any] = []
    if set_name is not None:
        where.append("i.set_id = ?")
        params.append(set_id(store, set_name))
    if status is not None:
        _check_status(status)
        where.append("i.status = ?")
        params.append(status)
    if where:
        sql += " WHERE " + " AND ".join(where)
    return [_record(store, r) for r in store.query(sql + " ORDER BY i.id", params)]


def get_image(store: Store, image_id: int) -> ImageRecord:
    r = store.one(f"SELECT {_IMAGE_COLUMNS} FROM images i JOIN sets s ON s.id = i.set_id WHERE i.id = ?",
                  (int(image_id),))
    if r is None:
        raise NotFoundError(f"no image with id {image_id} in the project")
    return _record(store, r)


def _check_status(status: str) -> None:
    if status not in STATUSES:
        raise ValueError(f"unknown status '{status}' (one of {', '.join(STATUSES)})")


def set_status(store: Store, image_id: int, status: str) -> None:
    _check_status(status)
    with store.tx() as conn:
        if conn.execute("UPDATE images SET status = ? WHERE id = ?", (status, int(image_id))).rowcount == 0:
            raise NotFoundError(f"no image with id {image_id} in the project")


def read_project_image(store: Store, image_id: int) -> ImageData:
    rec = get_image(store, image_id)
    return read_recorded_image(rec.path, rec.planes, rec.scene, stamp=(rec.size, rec.quick_hash))


def read_recorded_image(path: Path, planes: PlaneChoice, scene: int | None = None,
                        stamp: tuple[int, str] | None = None) -> ImageData:
    """The pixels of an image recorded in a project at ``path`` (scene ``scene`` of a multi-scene
    file); needs no open project: a unit of work on another machine reads its image with this.
    ``stamp``: the size and quick hash recorded when it was added; a file that no longer has them is
    refused, since the results and annotations recorded for it were made on other pixels (measured
    on these, they would be silently wrong)."""
    if not path.exists():
        raise ImageReadError(path, "file not found (moved or renamed? File > Find moved images…, or efficell project relink)")
    if stamp is not None:
        try:
            size = path.stat().st_size
            same = size == stamp[0] and quick_hash(path, size) == stamp[1]
        except OSError as exc:
            raise ImageReadError(path, f"cannot be read ({exc.strerror or exc})") from exc
        if not same:
            raise ImageReadError(path, "the file changed since it was added to the project (its size or content "
                                 "differs): its results and annotations were made on the earlier file. Put the "
                                 "earlier file back, or add this one again as a new image")
    return read_image(path, planes=planes, scene=scene)


def image_sha256(store: Store, image_id: int) -> str:
    rec = get_image(store, image_id)
    if rec.sha256:
        return rec.sha256
    try:
        digest = sha256_file(rec.path)
    except OSError as exc:
        raise ImageReadError(rec.path, f"cannot be read ({exc.strerror or exc})") from exc
    with store.tx() as conn:
        conn.execute("UPDATE images SET sha256 = ? WHERE id = ?", (digest, rec.id))
    return digest


def _probe_file(path: Path) -> dict[str, Any]:
    """What is recorded about a file (its hashes), whichever of its scenes is added."""
    st = path.stat()
    return {"size": st.st_size, "mtime": st.st_mtime, "quick_hash": quick_hash(path, st.st_size),
            "sha256": sha256_file(path) if st.st_size <= FULL_HASH_LIMIT else None}


def _probe(path: Path, planes: PlaneChoice, scene: int | None = None) -> dict[str, Any]:
    """What is recorded about one image (one scene of a file): reads it once."""
    img = read_image(path, planes=planes, scene=scene)
    return {
        "height": img.shape[0], "width": img.shape[1], "channels": img.n_channels,
        "channel_names": to_json(list(img.channel_names)), "pixel_size_um": img.pixel_size_um, "rgb": int(img.rgb),
    }


def _scenes_of(path: Path) -> list[int | None]:
    """Scene indices as recorded for ``path``: [None] for a single-scene file."""
    try:
        n = len(scene_names(path))
    except (InputError, OSError):
        return [None]
    return [None] if n == 1 else list(range(n))


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.stat().st_size == b.stat().st_size and quick_hash(a) == quick_hash(b)
    except OSError:
        return False


def _place(src: Path, dest: Path, taken: set[str], store: Store) -> Path | None:
    """A free copy target for ``src`` at or near ``dest``; ``None`` if ``src`` is already copied
    there for this set. Never a file that exists already: whoever put it there, it is kept."""
    stem, suffix = split_name(dest.name)
    k = 1
    while True:
        cand = dest if k == 1 else dest.with_name(f"{stem}_{k}{suffix}")
        if store.to_stored(cand) in taken:
            if _same_file(src, cand):
                return None
        elif not os.path.lexists(cand):
            return cand
        k += 1


def _copy_in(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def add_files(store: Store, files: Sequence[tuple[Path, Path | None]], set_name: str, *, copy: bool = False,
              planes: PlaneChoice | None = None, progress: Progress | None = None,
              cancel: CancelToken | None = None, report: AddReport | None = None) -> AddReport:
    """Add ``(file, copy_target)`` pairs to a set (created if needed); see ``Project.add_folder``."""
    planes = planes or PlaneChoice()
    sid = set_id(store, set_name, create=True)
    report = report or AddReport(set_name=clean_name(set_name))
    rows = store.query("SELECT path, scene FROM images WHERE set_id = ?", (sid,))
    existing = {str(r["path"]) for r in rows}
    existing_scenes = {(str(r["path"]), r["scene"]) for r in rows}
    own = [store.real_root / d for d in _PROJECT_OWN]
    pending: list[tuple[Any, ...]] = []
    last_commit = time.monotonic()

    def flush() -> None:
        nonlocal last_commit
        if not pending:
            return
        with store.tx() as conn:
            store.settle(conn, [row[1] for row in pending if row[-1]])  # the copies are recorded: no longer in flight
            for row in pending:
                row, copied = row[:-1], row[-1]
                cur = conn.execute(
                    "INSERT INTO images(set_id, path, size, mtime, quick_hash, sha256, height, width, channels, "
                    "channel_names, pixel_size_um, rgb, planes, added, scene, scene_name, status) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'new')", row)
                if copied:  # the record that makes this file the project's own
                    conn.execute("INSERT OR REPLACE INTO copies(path, size, quick_hash, created) VALUES (?, ?, ?, ?)",
                                 (row[1], row[2], row[4], row[13]))
                report.added.append(int(cur.lastrowid))
        pending.clear()
        last_commit = time.monotonic()

    planes_json = to_json({"z": planes.z, "t": planes.t}) if (planes.z is not None or planes.t is not None) else None

    def add_one(src: Path, target: Path | None) -> None:
        src = real_path(src)  # the door: one spelling per file ('..', symlinks, relative paths)
        if any(_is_under(src, d) for d in own):
            report.skipped.append((src, "is part of the project's own data (annotations, results, adapters)"))
            return
        copying = copy and target is not None
        if copying:
            dest = _place(src, real_path(target), existing, store)
            if dest is None:  # this very file was copied into the set before
                report.duplicates += 1
                return
        else:
            dest = src
        stored = store.to_stored(dest)
        if stored in existing and not copying:  # already added: count its images without reading them again
            known = _scenes_of(src)
            if all((stored, k) in existing_scenes for k in known):
                report.duplicates += len(known)
                return
        try:
            if copying:
                # journaled first: a copy the run was killed before recording goes at the next open (tidy)
                store.intend_write(stored)
                _copy_in(src, dest)
            names = scene_names(dest)
            file_info = _probe_file(dest)
        except (InputError, OSError) as exc:
            reason = exc.reason if isinstance(exc, InputError) else f"cannot be read ({exc.strerror or exc})"
            report.skipped.append((src, reason))
            if copying:
                with contextlib.suppress(OSError):
                    dest.unlink()
                store.settled([stored])
            return
        scenes: list[tuple[int | None, str | None]] = [(None, None)] if len(names) == 1 else list(enumerate(names))
        n_added = 0
        for scene, scene_name in scenes:
            if (stored, scene) in existing_scenes:
                report.duplicates += 1
                continue
            try:
                info = _probe(dest, planes, scene)
            except (InputError, OSError) as exc:
                reason = exc.reason if isinstance(exc, InputError) else f"cannot be read ({exc.strerror or exc})"
                entry = src if scene is None else Path(f"{src} [{scene_name}]")
                report.skipped.append((entry, reason))
                if isinstance(exc, PlanesNeeded):  # the plane choice is asked for once per file, every scene's axes
                    known = report.stacks.setdefault(src, {})
                    for ax, n in exc.sizes.items():
                        known[ax] = max(n, known.get(ax, 0))
                    report.stack_entries.add(entry)
                continue
            existing_scenes.add((stored, scene))
            n_added += 1
            pending.append((sid, stored, file_info["size"], file_info["mtime"], file_info["quick_hash"],
                            file_info["sha256"], info["height"], info["width"], info["channels"], info["channel_names"],
                            info["pixel_size_um"], info["rgb"], planes_json, now_iso(), scene, scene_name, copying))
        if n_added:
            existing.add(stored)
        elif copying and stored not in existing:
            with contextlib.suppress(OSError):
                dest.unlink()  # nothing of the copy was added
            store.settled([stored])
        if len(pending) >= _COMMIT_EVERY or time.monotonic() - last_commit > 2.0:
            flush()

    total = len(files)
    for done, (src, target) in enumerate(files, start=1):
        if cancel is not None and cancel.cancelled:
            report.cancelled = True
            break
        add_one(src, target)
        if progress is not None:
            progress(done, total)
    flush()
    if report.skipped:
        log.info("%s", report.summary())
    return report


def add_folder(store: Store, folder: str | Path, set_name: str, *, copy: bool = False,
               planes: PlaneChoice | None = None, progress: Progress | None = None,
               cancel: CancelToken | None = None) -> AddReport:
    """Add every image under ``folder`` (recursively); non-images are counted as skipped."""
    folder = real_path(folder)
    report = AddReport(set_name=clean_name(set_name))
    if not folder.is_dir():
        raise InputError(folder, "folder not found" if not folder.exists() else "is a file, not a folder")
    images, skipped = find_images([folder])
    report.skipped.extend(skipped)
    base = store.root / "images" / _safe_folder_name(report.set_name) / _safe_folder_name(folder.name)
    pairs = [(f, base.joinpath(*f.relative_to(folder).parts) if copy else None) for f in images]
    return add_files(store, pairs, set_name, copy=copy, planes=planes, progress=progress, cancel=cancel,
                     report=report)


def own_copies_to_delete(store: Store, stored_paths: Iterable[str]) -> list[str]:
    """Of the paths of images just removed from the index, the files the project may delete now
    (stored paths, journaled for deletion; their ``copies`` rows are gone).

    Only a file the project copied in itself (recorded in ``copies`` when it copied it), that no
    image left in the index still uses, and whose content is still that copy's (size and quick
    hash): a file someone put at that place since is kept. Call after the image rows are gone.
    """
    out: list[str] = []
    forget: list[str] = []
    for stored in dict.fromkeys(stored_paths):
        row = store.one("SELECT size, quick_hash FROM copies WHERE path = ?", (stored,))
        if row is None or store.one("SELECT 1 FROM images WHERE path = ?", (stored,)):
            continue
        forget.append(stored)
        path = store.from_stored(stored)
        try:
            same = path.is_file() and path.stat().st_size == row["size"] and quick_hash(path) == row["quick_hash"]
        except OSError:
            same = False
        if same:
            out.append(stored)
        elif path.exists():
            log.info("%s: kept (no longer the copy the project made)", path)
    if forget:
        with store.tx() as conn:
            conn.executemany("DELETE FROM copies WHERE path = ?", [(s,) for s in forget])
            store.journal(conn, out, "delete")
    return out


def _is_under(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
    except ValueError:
        return False
    return True


# ----------------------------------------------------------------------------- relink


def _norm(path: str) -> str:
    return str(path).replace("\\", "/").rstrip("/")


def _windowsish(path: str) -> bool:
    return bool(PureWindowsPath(path).drive)


def relink(store: Store, old_prefix: str | Path, new_folder: str | Path) -> RelinkReport:
    """Point every image recorded under ``old_prefix`` to the same relative place in ``new_folder``.

    A candidate file is accepted only when its size and quick hash match what was recorded, so
    a different image of the same name is never linked by mistake.
    """
    report = RelinkReport()
    prefix = _norm(str(old_prefix))
    fold = _windowsish(prefix)
    key = prefix.casefold() if fold else prefix
    new_folder = Path(new_folder).absolute()
    updates: list[tuple[str, int]] = []
    for r in store.query("SELECT id, path, size, quick_hash FROM images"):
        stored = _norm(str(r["path"]))
        cmp = stored.casefold() if fold else stored
        if cmp != key and not cmp.startswith(key + "/"):
            continue
        rest = [p for p in stored[len(prefix):].split("/") if p]
        candidate = new_folder.joinpath(*rest)
        if not candidate.is_file():
            report.still_missing.append((int(r["id"]), candidate))
            continue
        size = candidate.stat().st_size
        if size != int(r["size"]):
            report.mismatched.append((int(r["id"]), candidate, f"size differs ({size} bytes, recorded {r['size']})"))
            continue
        if quick_hash(candidate, size) != r["quick_hash"]:
            report.mismatched.append((int(r["id"]), candidate, "content differs from the image that was added"))
            continue
        updates.append((store.to_stored(candidate), int(r["id"])))
    if updates:
        with store.tx() as conn:
            conn.executemany("UPDATE images SET path = ? WHERE id = ?", updates)
            # a copy whose images now point elsewhere is no longer the project's to delete
            conn.execute("DELETE FROM copies WHERE NOT EXISTS (SELECT 1 FROM images i WHERE i.path = copies.path)")
    report.relinked = [i for _, i in updates]
    return report


def find_missing(store: Store, folder: str | Path) -> RelinkReport:
    """Look for every missing image (:func:`missing_images`) under ``folder`` and relink what is found:
    a file of the same name there gives the moved folder (:func:`relink_prefixes`), and :func:`relink`
    moves every image recorded under it that matches its recorded size and quick hash. What is
    still missing (or differs) is reported."""
    folder = real_path(folder)
    by_name: dict[str, list[Path]] = {}
    for f in folder.rglob("*"):
        if f.is_file():
            by_name.setdefault(f.name.casefold(), []).append(f)
    report, tried = RelinkReport(), set()
    for rec in missing_images(store):
        if rec.id in report.relinked:
            continue
        for candidate in by_name.get(rec.path.name.casefold(), []):
            pair = relink_prefixes(rec.stored_path, candidate)
            if (pair[0], str(pair[1])) in tried:
                continue
            tried.add((pair[0], str(pair[1])))
            report.relinked += relink(store, *pair).relinked
            if rec.id in report.relinked:
                break
    for r in missing_images(store):
        same_name = by_name.get(r.path.name.casefold(), [])
        if same_name:
            report.mismatched.append((r.id, same_name[0], "a file of that name is there, but not the image that was "
                                      "added (its size or content differs)"))
        else:
            report.still_missing.append((r.id, r.path))
    return report


def relink_prefixes(old_file: str | Path, new_file: str | Path) -> tuple[str, Path]:
    """From one image found again (old recorded path, new real path), the folders to relink.

    ``/data/exp1/img/a.tif`` found at ``/mnt/lab/exp1/img/a.tif`` gives
    ``("/data", Path("/mnt/lab"))``: the shared tail is dropped from both.
    """
    old_parts = [p for p in _norm(str(old_file)).split("/")]
    new_path = Path(new_file).absolute()
    new_parts = list(new_path.parts)
    n = 0
    while (n < len(old_parts) - 1 and n < len(new_parts) - 1
           and old_parts[-1 - n] == new_parts[-1 - n]):
        n += 1
    n = max(n, 1) if old_parts[-1] == new_parts[-1] else 0
    old_prefix = "/".join(old_parts[: len(old_parts) - n]) if n else "/".join(old_parts[:-1])
    new_folder = Path(*new_parts[: len(new_parts) - n]) if n else new_path.parent
    if "\\" in str(old_file):
        old_prefix = old_prefix.replace("/", "\\")
    return old_prefix, new_folder


def missing_images(store: Store, records: Iterable[ImageRecord] | None = None) -> list[ImageRecord]:
    records = list_images(store) if records is None else records
    return [r for r in records if not r.path.is_file()]
