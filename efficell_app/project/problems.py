"""The project's list of problems: files that could not be added, segmented or saved, and why.

Kept in the project (the index's ``meta`` table, as JSON) so that the window's Problems list
survives a restart; the newest :data:`MAX_PROBLEMS` lines are kept.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Sequence

from .errors import ProjectError
from .store import Store

log = logging.getLogger(__name__)
KEY = "problems"
MAX_PROBLEMS = 500


def list_problems(store: Store) -> list[str]:
    """The problems recorded, oldest first."""
    raw = store.meta(KEY)
    if not raw:
        return []
    try:
        items = json.loads(raw)
    except ValueError:
        log.warning("%s: the list of problems is damaged; starting a new one", store.root)
        return []
    return [str(x) for x in items] if isinstance(items, list) else []


def add_problems(store: Store, lines: Sequence[str]) -> list[str]:
    """Record more problems (a line already listed is not repeated); returns the whole list."""
    items = list_problems(store)
    known = set(items)
    items.extend(line for line in dict.fromkeys(lines) if line not in known)
    items = items[-MAX_PROBLEMS:]
    _write(store, json.dumps(items, ensure_ascii=False))
    return items


def clear_problems(store: Store) -> None:
    _write(store, "[]")


def _write(store: Store, value: str) -> None:
    try:
        store.set_meta(KEY, value)
    except sqlite3.Error as exc:  # read-only or full disk: the window still lists them
        raise ProjectError(f"{store.root}: the list of problems cannot be saved ({exc})") from exc
