"""Label images (annotations and results) on disk: int32 TIFF, zlib-compressed, written atomically."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import ImageReadError, InputError
from ..core.fileio import atomic_path

RECORD_KEY = "efficell_label_file"  # marks the JSON record in a label file's ImageDescription
RECORD_VERSION = 1


def check_labels(labels: np.ndarray, shape: tuple[int, int] | None = None, what: str = "label image") -> np.ndarray:
    """Validate an instance label image and return it as int32 ``(H, W)``."""
    arr = np.asarray(labels)
    if arr.ndim != 2:
        raise ValueError(f"a {what} must be 2-D (H, W), got shape {arr.shape}")
    if arr.dtype == bool:
        arr = arr.astype(np.int32)
    if arr.dtype.kind not in "ui":
        raise ValueError(f"a {what} holds whole numbers (0 = background), got {arr.dtype}")
    if arr.size and int(arr.min()) < 0:
        raise ValueError(f"a {what} cannot hold negative labels")
    if arr.size and int(arr.max()) > np.iinfo(np.int32).max:
        raise ValueError(f"{what} labels exceed the int32 range")
    if shape is not None and tuple(arr.shape) != tuple(shape):
        raise ValueError(f"{what} is {arr.shape[0]}x{arr.shape[1]} but its image is {shape[0]}x{shape[1]}")
    return np.ascontiguousarray(arr, dtype=np.int32)


def count_cells(labels: np.ndarray) -> int:
    if labels.size == 0:
        return 0
    ids = np.unique(labels)
    return int(ids.size - (1 if ids[0] == 0 else 0))


def write_labels(path: Path, labels: np.ndarray, record: dict[str, Any] | None = None) -> None:
    """Write ``labels`` to ``path``: the old file or the complete new one, never half (fsync'd).

    ``record`` (JSON) goes into the TIFF's ImageDescription: the index row of the file and of
    its image, so that ``efficell project repair`` can rebuild a lost index from the files.
    """
    import tifffile

    description = json.dumps({RECORD_KEY: RECORD_VERSION, **record}, default=str) if record else None
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            tifffile.imwrite(fh, labels, compression="zlib", compressionargs={"level": 1},
                             software="EffiCell", metadata=None, description=description)
            fh.flush()
            os.fsync(fh.fileno())


def read_label_record(path: Path) -> dict[str, Any] | None:
    """The record :func:`write_labels` put into a label file; None for files without one."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            text = tif.pages[0].description if tif.pages else ""
    except Exception:  # noqa: BLE001 - a damaged or foreign file simply has no record
        return None
    try:
        record = json.loads(text) if text else None
    except ValueError:
        return None
    return record if isinstance(record, dict) and RECORD_KEY in record else None


def read_labels(path: Path) -> np.ndarray:
    """Read a label image written by :func:`write_labels` as int32 ``(H, W)``."""
    import tifffile

    if not path.is_file():
        raise ImageReadError(path, "label file not found (was the project folder changed by hand?)")
    try:
        arr = tifffile.imread(path)
    except Exception as exc:  # noqa: BLE001 - any decoder failure is one clear line
        raise ImageReadError(path, f"label file cannot be read ({exc}); it may be damaged") from exc
    try:
        return check_labels(np.squeeze(arr))
    except ValueError as exc:
        raise InputError(path, str(exc)) from exc


def remove_files(paths: list[Path]) -> None:
    """Delete files (and their folder when it becomes empty); missing ones are fine."""
    for p in paths:
        with contextlib.suppress(OSError):
            p.unlink()
        with contextlib.suppress(OSError):
            p.parent.rmdir()  # only succeeds when empty


def remove_stale_temps(folder: Path) -> int:
    """Delete temporary files left in ``folder`` by a writer that was killed mid-write."""
    n = 0
    if not folder.is_dir():
        return 0
    for p in folder.iterdir():
        if p.name.startswith(".") and p.name.endswith(".part") and p.is_file():
            with contextlib.suppress(OSError):
                p.unlink()
                n += 1
    return n
