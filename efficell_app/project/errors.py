"""Errors raised when a project cannot be opened or used; each message says what to do."""

from __future__ import annotations

from ..core.errors import EffiCellError


class ProjectError(EffiCellError):
    """A project cannot be opened, read or changed."""


class NotAProjectError(ProjectError):
    """The folder holds no EffiCell project (or its index is damaged beyond use)."""


class ProjectDamagedError(NotAProjectError):
    """The project's index file is empty, unreadable or corrupt; ``efficell project repair`` rebuilds it."""

    def __init__(self, message: str, problem: str = "") -> None:
        super().__init__(message)
        self.problem = problem or message


class ProjectLockedError(ProjectError):
    """Another EffiCell (process or window) has the project open."""

    def __init__(self, message: str, holder: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.holder = dict(holder or {})


class ProjectVersionError(ProjectError):
    """The project was written by a newer EffiCell whose format this version cannot read."""


class NotFoundError(ProjectError, KeyError):
    """No such set, image, result, annotation version or adapter in the project.

    Also a ``KeyError``, so ``except KeyError`` works; its message reads as a sentence.
    """

    __str__ = Exception.__str__
