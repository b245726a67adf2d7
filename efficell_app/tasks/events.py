"""Events several use cases yield (each use case's own events live beside it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Status:
    """A line for the status bar (loading the model, counting files ...)."""

    message: str


@dataclass(frozen=True)
class ImageFailed:
    """One image of a batch could not be done; the others go on."""

    index: int
    total: int
    image_id: int
    path: str
    reason: str

    @property
    def message(self) -> str:
        return f"{self.path}: {self.reason}"
