"""When a batch output is complete: THE resume check of ``efficell segment`` runs.

A batch writes one mask per input (``<stem>_masks.tif``), atomically (a temporary
``.<stem>.<random>.tif.part`` beside it, then a rename), so a mask that exists is whole. It is
*complete for a run* when it records, under :data:`BATCH_KEY`, the key of the run's settings
(:func:`run_key`: the model's hashes and the choices that shape masks) and a stamp of the input
it was made from (size and quick hash, :func:`input_stamp`). A re-run with the same settings
keeps such a mask instead of segmenting the image again (:func:`check_output`), so a batch
stopped by Ctrl-C, a kill or a lost worker is finished by running it again; any other file
already there is refused unless the user asked to overwrite.

Self-contained (a path, a key, a flag in; a decision out) so that every runner of batches can
share it: the cluster runner calls it on the worker that would write the mask.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.images import PlaneChoice
from ..project.images import quick_hash

log = logging.getLogger(__name__)

BATCH_KEY = "efficell_batch"  # the record in each mask that makes a batch resumable
SETTINGS_TAG = 65000  # core.export's private tag of a uint32 label TIFF (ImageJ "Info" otherwise)


def run_key(identity: Mapping[str, Any], *, diameter: float | None, channels: tuple[int, ...] | None,
            planes: PlaneChoice, pixel_size_um: float | None) -> str:
    """A digest of what shapes a batch's outputs: the model (encoder and adapter hashes) and the
    choices (diameter, channels, planes, pixel size). Runs with the same key make the same
    masks; the app version, the date and where the run ran do not enter it."""
    key: dict[str, Any] = {k: identity.get(k) for k in ("encoder", "encoder_sha256", "adapter_sha256")}
    key.update({"diameter": diameter, "channels": list(channels) if channels else None,
                "planes": {"z": planes.z, "t": planes.t}, "pixel_size_um": pixel_size_um})
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def input_stamp(source: Path) -> dict[str, Any]:
    """What tells that an input is still the file a mask was made from: its size and quick hash."""
    size = source.stat().st_size
    return {"size": size, "quick_hash": quick_hash(source, size)}


def batch_record(key: str, source: Path) -> dict[str, Any]:
    """What a mask records under :data:`BATCH_KEY` (passed to ``write_label_tiff`` as metadata)."""
    return {"run_key": key, **input_stamp(source)}


def read_mask_record(path: Path) -> dict[str, Any] | None:
    """The settings ``core.export.write_label_tiff`` recorded in a mask; ``None`` when it holds
    none (another program's file) or cannot be read."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            tag = tif.pages[0].tags.get(SETTINGS_TAG)
            text = tag.value if tag is not None else (tif.imagej_metadata or {}).get("Info")
    except Exception:  # noqa: BLE001 - not a TIFF, truncated, unreadable: it records nothing
        return None
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    try:
        record = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


@dataclass(frozen=True)
class OutputCheck:
    """What to do with one output: ``segment`` the image, ``keep`` the mask there, or ``refuse``."""

    action: str
    reason: str = ""


def check_output(target: Path, source: Path, key: str, overwrite: bool) -> OutputCheck:
    """Whether ``target`` (the mask of ``source``) is made, kept as complete for the run of
    ``key``, or refused: kept only when it records ``key`` and the input is unchanged since.
    Anything else already there is not overwritten unless ``overwrite``."""
    if overwrite or not os.path.lexists(target):
        return OutputCheck("segment")
    again = "not overwritten (use --overwrite to replace it)"
    if target.is_dir():
        return OutputCheck("refuse", f"already exists as a folder; {again}")
    record = (read_mask_record(target) or {}).get(BATCH_KEY)
    if not isinstance(record, dict):
        return OutputCheck("refuse", f"already exists and was not written by a resumable EffiCell run; {again}")
    if record.get("run_key") != key:
        return OutputCheck("refuse", f"already exists from a run with other settings; {again}")
    try:
        same = input_stamp(source) == {"size": record.get("size"), "quick_hash": record.get("quick_hash")}
    except OSError:
        same = False
    if not same:
        return OutputCheck("refuse", f"already exists, but its input {source.name} changed since; {again}")
    return OutputCheck("keep", "segmented by an earlier run with the same settings; kept")


def part_files(folder: Path, names: Iterable[str]) -> list[Path]:
    """The temporary files an interrupted atomic write of these outputs left in ``folder``
    (``core.fileio.atomic_path`` names them ``.<stem>.<random><suffix>.part``)."""
    wanted = [(f".{Path(n).stem}.", f"{Path(n).suffix}.part") for n in names]
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    return [Path(e.path) for e in entries
            if e.name.startswith(".") and e.name.endswith(".part")
            and any(e.name.startswith(a) and e.name.endswith(b) for a, b in wanted)]


def remove_part_files(folder: Path, names: Iterable[str], older_than: float | None = None) -> int:
    """Delete :func:`part_files` (only those last modified before ``older_than``, a
    ``time.time()``, when given: a writer at work now is left alone). Returns how many went."""
    n = 0
    for p in part_files(folder, names):
        with contextlib.suppress(OSError):
            if older_than is None or p.stat().st_mtime < older_than:
                p.unlink()
                n += 1
    if n:
        log.info("removed %d temporary file(s) of an interrupted run in %s", n, folder)
    return n
