"""Atomic file writes: a file is either the old one or the complete new one, never half."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import OutputError


def real_path(path: str | Path) -> Path:
    """``path`` absolute, with ``.``/``..`` and symlinks resolved: one spelling per file.

    ``os.path.realpath`` rather than ``Path.resolve``: it never raises, also not for a
    symlink loop (the loop is left in the path, and reading it then fails with a clear
    OS error where the file is used).
    """
    return Path(os.path.realpath(os.fspath(path)))


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
