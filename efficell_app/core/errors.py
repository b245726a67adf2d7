"""Errors the user sees. Each names the file and the problem in plain words."""

from __future__ import annotations

from pathlib import Path


class EffiCellError(Exception):
    """Base class for errors that carry a message meant for the user (no traceback needed)."""


class InputError(EffiCellError):
    """A user-supplied file (image, mask, adapter) cannot be used.

    ``str(err)`` reads ``"<path>: <reason>"`` so that a batch can report ``error: <path>: <reason>``.
    """

    def __init__(self, path: str | Path | None, reason: str) -> None:
        self.path = None if path is None else Path(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}" if path is not None else reason)


class ImageReadError(InputError):
    """An image file is missing, damaged, or of a kind EffiCell cannot read."""


class AdapterError(InputError):
    """An adapter file is damaged, or was trained for another encoder."""


class WeightsError(EffiCellError):
    """Encoder weights are missing, incomplete, or fail their checksum."""


class OutputError(InputError):
    """An output file cannot be written (read-only folder, disk full, file locked)."""


class Cancelled(EffiCellError):
    """Raised inside long work when the user cancelled it."""
