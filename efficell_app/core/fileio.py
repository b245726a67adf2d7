"""Atomic file writes: a file is either the old one or the complete new one, never half."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from .errors import OutputError


def real_path(path: str | Path) -> Path:
    """``path`` absolute, with ``.``/``..`` and symlinks resolved: one spelling per file.

    ``os.path.realpath`` rather than ``Path.resolve``: it never raises, also not for a
    symlink loop (the loop is left in the path, and reading it then fails with a clear
    OS error where the file is used).
    """
    return Path(os.path.realpath(os.fspath(path)))


QUICK_HASH_BLOCK = 1 << 20  # quick hash: size + first and last MiB


def is_inside(path: str | Path, folder: str | Path) -> bool:
    """Whether ``path`` is ``folder`` or lies within it (both as :func:`real_path` spells them)."""
    return real_path(path).is_relative_to(real_path(folder))


def quick_hash(path: Path, size: int | None = None) -> str:
    """SHA-256 of the size plus the first and last MiB: cheap even for multi-GB files.

    It tells whether a file is still the one seen before (a relinked project image, the input
    of a batch output); a full-content hash is recorded where provenance needs one.
    """
    size = path.stat().st_size if size is None else size
    h = hashlib.sha256(size.to_bytes(8, "little"))
    with open(path, "rb") as fh:
        h.update(fh.read(QUICK_HASH_BLOCK))
        if size > QUICK_HASH_BLOCK:
            fh.seek(max(QUICK_HASH_BLOCK, size - QUICK_HASH_BLOCK))
            h.update(fh.read(QUICK_HASH_BLOCK))
    return h.hexdigest()


def remove_stale_parts(folder: Path, names: Iterable[str], older_than: float) -> int:
    """Delete the temporary files :func:`atomic_path` left for these file names in ``folder``
    when its writer was killed (``.<stem>.<random><suffix>.part``), if older than ``older_than``
    (a ``time.time()``; a writer that is running now is left alone)."""
    n = 0
    wanted = [(f".{Path(name).stem}.", f"{Path(name).suffix}.part") for name in names]
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for e in entries:
        if not e.name.startswith(".") or not e.name.endswith(".part"):
            continue
        if any(e.name.startswith(a) and e.name.endswith(b) for a, b in wanted):
            with contextlib.suppress(OSError):
                if e.is_file(follow_symlinks=False) and e.stat().st_mtime < older_than:
                    os.unlink(e.path)
                    n += 1
    return n


def _explain(path: Path, exc: OSError) -> str:
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write here (permission denied or read-only folder: {path.parent})"
    if exc.errno == errno.ENOSPC:
        return "the disk is full"
    if exc.errno == errno.ENOENT:
        return f"the folder {path.parent} does not exist"
    return f"cannot write the file ({exc.strerror or exc})"


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    On any error the temporary file is removed and nothing is left behind. OS errors become
    an :class:`OutputError` naming ``path``. Locked files (Excel on Windows) raise
    ``PermissionError`` at the rename, which is reported the same way.
    """
    path = Path(path)
    suffix = path.suffix if suffix is None else suffix
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=suffix + ".part", dir=path.parent)
    except OSError as exc:
        raise OutputError(path, _explain(path, exc)) from exc
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp makes 0600 files; a result should get the usual permissions (0666 minus the umask).
    umask = os.umask(0)
    os.umask(umask)
    with contextlib.suppress(OSError):
        os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(path, _explain(path, exc)) from exc
    finally:
        if tmp.exists():
            with contextlib.suppress(OSError):
                tmp.unlink()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_with(path: str | Path, writer: Callable[[Path], None]) -> None:
    """Run ``writer(tmp_path)`` then move the result onto ``path`` atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)
