"""One project, one process: an OS-level lock on ``project.lock``.

The lock file holds ``pid``, ``host`` and ``time`` of the holder so that a refused opener can be
told who has the project. The lock itself is ``fcntl.flock`` (POSIX) or ``msvcrt.locking``
(Windows); the OS releases it when the holder exits or crashes, so a stale file never blocks.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import os
import socket
import sys
from pathlib import Path

from .errors import ProjectError, ProjectLockedError

log = logging.getLogger(__name__)

# On Windows the locked byte lies past the holder's text so that others can still read it.
_WIN_LOCK_OFFSET = 4096


def _holder_text() -> str:
    now = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    return f"pid={os.getpid()}\nhost={socket.gethostname()}\ntime={now}\n"


def read_holder(path: str | Path) -> dict[str, str]:
    """The ``pid``/``host``/``time`` written by the lock's holder (empty if unreadable)."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() in ("pid", "host", "time"):
            out[key.strip()] = value.strip()
    return out


def _try_lock(fd: int, path: Path) -> bool:
    if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
        import msvcrt

        os.lseek(fd, _WIN_LOCK_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as exc:
        # Some network file systems do not support locks at all: open anyway, but say so.
        log.warning("cannot lock %s (%s); make sure no one else opens this project", path, exc)
    return True


def _unlock(fd: int) -> None:
    if sys.platform == "win32":  # pragma: no cover
        import msvcrt

        os.lseek(fd, _WIN_LOCK_OFFSET, os.SEEK_SET)
        with contextlib.suppress(OSError):
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        return
    import fcntl

    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_UN)


class ProjectLock:
    """Exclusive lock on a project folder; ``acquire()`` raises :class:`ProjectLockedError`."""

    def __init__(self, path: str | Path, project_name: str = "") -> None:
        self.path = Path(path)
        self.project_name = project_name or str(self.path.parent)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        if self._fd is not None:
            return
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o666)
        except OSError as exc:
            raise ProjectError(f"{self.path}: cannot open the project lock file ({exc.strerror or exc}); "
                               "is the folder read-only?") from exc
        if not _try_lock(fd, self.path):
            os.close(fd)
            holder = read_holder(self.path)
            who = (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}"
                   + (f" since {holder['time']}" if holder.get("time") else ""))
            if holder.get("pid") == str(os.getpid()) and holder.get("host") == socket.gethostname():
                who = "already open in this EffiCell window or process"
                raise ProjectLockedError(f"{self.project_name}: the project is {who}", holder)
            raise ProjectLockedError(
                f"{self.project_name}: the project is open in another EffiCell ({who}); close it there first",
                holder,
            )
        text = _holder_text().encode("utf-8")
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            if sys.platform != "win32":
                os.ftruncate(fd, 0)
            os.write(fd, text.ljust(256 if sys.platform == "win32" else len(text)))
            os.fsync(fd)
        except OSError as exc:  # the lock holds even if the note cannot be written
            log.warning("cannot write %s: %s", self.path, exc)
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        _unlock(fd)
        with contextlib.suppress(OSError):
            os.close(fd)

    def __del__(self) -> None:  # a Project dropped without close() must not keep its folder locked
        self.release()

    def __enter__(self) -> ProjectLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
