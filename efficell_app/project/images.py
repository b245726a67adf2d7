"""Image sets and their images: adding folders, per-image records, hashes, relinking."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import re
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath
from typing import Any

from ..core.cancel import CancelToken
from ..core.errors import ImageReadError, InputError
from ..core.fileio import atomic_path
from ..core.images import ImageData, PlaneChoice, PlanesNeeded, find_images, read_image
from ..core.pairing import split_name
from .errors import NotFoundError, ProjectError
from .store import Store, from_json, is_absolute_anywhere, now_iso, to_json

log = logging.getLogger(__name__)

STATUSES = ("new", "segmented", "annotated", "reviewed")
QUICK_HASH_BLOCK = 1 << 20  # quick hash: size + first and last MiB
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

    @property
    def name(self) -> str:
        return self.path.name

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

    @property
    def n_added(self) -> int:
        return len(self.added)

    @property
    def n_skipped(self) -> int:
        return len(self.skipped)

    def reasons(self) -> dict[str, int]:
        """How many files were skipped for each kind of reason (extension details folded)."""
        out: dict[str, int] = {}
        for _, reason in self.skipped:
            key = re.sub(r"\s*\(.*\)$", "", reason)
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


def quick_hash(path: Path, size: int | None = None) -> str:
    """SHA-256 of the size plus the first and last MiB: cheap even for multi-GB files.

    It identifies a file for relinking (same size and same ends); ``sha256_file`` is the
    full-content hash recorded for provenance.
    """
    size = path.stat().st_size if size is None else size
    h = hashlib.sha256(size.to_bytes(8, "little"))
    with open(path, "rb") as fh:
        h.update(fh.read(QUICK_HASH_BLOCK))
        if size > QUICK_HASH_BLOCK:
            fh.seek(max(QUICK_HASH_BLOCK, size - QUICK_HASH_BLOCK))
            h.update(fh.read(QUICK_HASH_BLOCK))
    return h.hexdigest()


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
                  "i.channels, i.channel_names, i.pixel_size_um, i.rgb, i.planes, i.status, i.added")


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
        added=str(r["added"]),
    )


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
    return read_recorded_image(rec.path, rec.planes)


def read_recorded_image(path: Path, planes: PlaneChoice) -> ImageData:
    """The pixels of an image recorded in a project at ``path`` (needs no open project: a unit
    of work on another machine reads its image with this)."""
    if not path.exists():
        raise ImageReadError(path, "file not found (moved or renamed? relink the folder in the project)")
    return read_image(path, planes=planes)


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


def _probe(path: Path, planes: PlaneChoice) -> dict[str, Any]:
    """Everything recorded about an image file (reads it once)."""
    img = read_image(path, planes=planes)
    st = path.stat()
    return {
        "size": st.st_size, "mtime": st.st_mtime, "quick_hash": quick_hash(path, st.st_size),
        "sha256": sha256_file(path) if st.st_size <= FULL_HASH_LIMIT else None,
        "height": img.shape[0], "width": img.shape[1], "channels": img.n_channels,
        "channel_names": to_json(list(img.channel_names)), "pixel_size_um": img.pixel_size_um, "rgb": int(img.rgb),
    }


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.stat().st_size == b.stat().st_size and quick_hash(a) == quick_hash(b)
    except OSError:
        return False


def _place(src: Path, dest: Path, taken: set[str], store: Store) -> Path | None:
    """A copy target for ``src`` near ``dest``: ``None`` if ``src`` is already copied there."""
    stem, suffix = split_name(dest.name)
    k = 1
    while True:
        cand = dest if k == 1 else dest.with_name(f"{stem}_{k}{suffix}")
        if store.to_stored(cand) in taken:
            if _same_file(src, cand):
                return None
        elif not cand.exists():
            return cand
        k += 1


def _copy_in(src: Path, dst: Path) -> None:
    if dst.is_file() and dst.stat().st_size == src.stat().st_size and quick_hash(dst) == quick_hash(src):
        return
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
    existing = {str(r["path"]) for r in store.query("SELECT path FROM images WHERE set_id = ?", (sid,))}
    own = [store.root / d for d in _PROJECT_OWN]
    pending: list[tuple[Any, ...]] = []
    last_commit = time.monotonic()

    def flush() -> None:
        nonlocal last_commit
        if not pending:
            return
        with store.tx() as conn:
            for row in pending:
                cur = conn.execute(
                    "INSERT INTO images(set_id, path, size, mtime, quick_hash, sha256, height, width, channels, "
                    "channel_names, pixel_size_um, rgb, planes, status, added) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'new', ?)", row)
                report.added.append(int(cur.lastrowid))
        pending.clear()
        last_commit = time.monotonic()

    planes_json = to_json({"z": planes.z, "t": planes.t}) if (planes.z is not None or planes.t is not None) else None

    def add_one(src: Path, target: Path | None) -> None:
        src = Path(src).absolute()
        if any(_is_under(src, d) for d in own):
            report.skipped.append((src, "is part of the project's own data (annotations, results, adapters)"))
            return
        dest = Path(target) if (copy and target is not None) else src
        stored = store.to_stored(dest)
        if stored in existing and dest != src:
            # Another file already took this name in the set's copy folder: the same image
            # again is a duplicate, a different one gets a free name ("x_2.tif").
            placed = _place(src, dest, existing, store)
            if placed is None:
                report.duplicates += 1
                return
            dest, stored = placed, store.to_stored(placed)
        if stored in existing:
            report.duplicates += 1
            return
        try:
            if dest != src:
                _copy_in(src, dest)
            info = _probe(dest, planes)
        except (InputError, OSError) as exc:
            reason = exc.reason if isinstance(exc, InputError) else f"cannot be read ({exc.strerror or exc})"
            report.skipped.append((src, reason))
            if isinstance(exc, PlanesNeeded):
                report.stacks[src] = exc.sizes
            if dest != src:
                with contextlib.suppress(OSError):
                    dest.unlink()
            return
        existing.add(stored)
        pending.append((sid, stored, info["size"], info["mtime"], info["quick_hash"], info["sha256"],
                        info["height"], info["width"], info["channels"], info["channel_names"],
                        info["pixel_size_um"], info["rgb"], planes_json, now_iso()))
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
    folder = Path(folder).absolute()
    report = AddReport(set_name=clean_name(set_name))
    if not folder.is_dir():
        raise InputError(folder, "folder not found" if not folder.exists() else "is a file, not a folder")
    images, skipped = find_images([folder])
    report.skipped.extend(skipped)
    base = store.root / "images" / _safe_folder_name(report.set_name) / _safe_folder_name(folder.name)
    pairs = [(f, base.joinpath(*f.relative_to(folder).parts) if copy else None) for f in images]
    return add_files(store, pairs, set_name, copy=copy, planes=planes, progress=progress, cancel=cancel,
                     report=report)


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
    report.relinked = [i for _, i in updates]
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
