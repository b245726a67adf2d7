"""Segment a batch of files into an output folder, as a generator of per-file events.

One bad file never stops the batch: its event carries the reason and the others go on.
Outputs are written atomically, never over an existing file unless asked.

Resuming: every mask records (in its TIFF settings, under ``efficell_batch``) a digest of the
run settings that shape it (:func:`run_key`) and a quick hash of its input. Running the same
batch again keeps each mask whose record matches (:func:`resume_decision`) instead of
segmenting the image again, so a batch stopped by a kill, a crash or a full disk is finished by
running it again; the measurement table is always written for every image of the batch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .cancel import CancelToken
from .errors import Cancelled, EffiCellError, OutputError
from .fileio import quick_hash, real_path, remove_stale_parts
from .images import PlaneChoice, PlanesNeeded, display_name, read_image, scene_names
from .measure import MIN_OBJECT_PX, file_calibration, measure_image
from .pairing import image_stem

log = logging.getLogger(__name__)

MASK_SUFFIX = "_masks.tif"
RUN_FILE = "efficell_run.json"
TABLE_FILE = "measurements.xlsx"
BATCH_KEY = "efficell_batch"  # the record in each mask that makes a batch resumable


@dataclass
class BatchOptions:
    diameter: float | None = None
    channels: tuple[int, ...] | None = None
    planes: PlaneChoice = field(default_factory=PlaneChoice)
    overwrite: bool = False
    measure: bool = True
    pixel_size_um: float | None = None
    channel_names: list[str] | None = None


@dataclass
class FileEvent:
    index: int  # 1-based
    total: int
    path: Path
    ok: bool
    message: str = ""  # the reason when not ok; notes otherwise
    output: Path | None = None
    n_cells: int = 0
    seconds: float = 0.0
    settings: dict[str, Any] | None = None
    kept: bool = False  # the output of an earlier run with the same settings was kept
    scene: str | None = None  # the scene's name for one scene of a multi-scene file

    @property
    def name(self) -> str:
        """``file`` or ``file [scene]``."""
        return display_name(self.path, self.scene)


@dataclass(frozen=True)
class ResumeDecision:
    """What to do with one output: ``segment`` it, ``keep`` an earlier run's, or ``refuse``."""

    action: str
    reason: str = ""


def run_key(identity: dict[str, Any], options: BatchOptions) -> str:
    """A digest of what shapes a batch's masks: the model (encoder and adapter hashes) and the
    options (diameter, channels, planes, pixel size). Two runs with the same key make the same
    masks; the app version and the date do not enter it."""
    key = {k: identity.get(k) for k in ("encoder", "encoder_sha256", "adapter_sha256")}
    key.update({"diameter": options.diameter, "channels": list(options.channels) if options.channels else None,
                "planes": {"z": options.planes.z, "t": options.planes.t}, "pixel_size_um": options.pixel_size_um})
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def _input_stamp(source: Path) -> dict[str, Any]:
    st = source.stat()
    return {"source": str(real_path(source)), "size": st.st_size, "quick_hash": quick_hash(source, st.st_size)}


def resume_decision(target: Path, source: Path, key: str | dict[str, Any], overwrite: bool) -> ResumeDecision:
    """Whether ``target`` (the mask of ``source``) is segmented, kept from an earlier run, or
    refused: kept only when it records this run's ``key`` (:func:`run_key`) and the input it was
    made from is unchanged (size and quick hash). Anything else already there is not
    overwritten unless ``overwrite``. Self-contained, so any runner of batches can share it."""
    key = key if isinstance(key, str) else hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    if not os.path.lexists(target) or overwrite:
        return ResumeDecision("segment")
    if target.is_dir():
        return ResumeDecision("refuse", "already exists as a folder; not overwritten")
    from .export import read_label_settings

    record = (read_label_settings(target) or {}).get(BATCH_KEY)
    again = "not overwritten (use --overwrite to replace it)"
    if not isinstance(record, dict):
        return ResumeDecision("refuse", f"already exists and was not written by EffiCell segment; {again}")
    if record.get("run_key") != key:
        return ResumeDecision("refuse", f"already exists from a run with other settings; {again}")
    try:
        same = {k: v for k, v in _input_stamp(source).items() if k != "source"} == \
            {"size": record.get("size"), "quick_hash": record.get("quick_hash")}
    except OSError:
        same = False
    if not same:
        return ResumeDecision("refuse", f"already exists, but its input {source.name} changed since; {again}")
    return ResumeDecision("keep", "segmented by an earlier run with the same settings; kept")


Item = tuple[Path, int | None, str | None]  # (file, scene index or None for a single-scene file, scene name)


def expand_scenes(paths: list[Path]) -> list[Item]:
    """One item per image: a multi-scene file (CZI scenes, ND2 positions, OME-TIFF images) gives one per scene.

    A file whose scenes cannot be listed stays one item; reading it then reports why."""
    items: list[Item] = []
    for p in paths:
        try:
            names = scene_names(p)
        except EffiCellError:
            names = [p.name]
        items += [(p, None, None)] if len(names) == 1 else [(p, k, n) for k, n in enumerate(names)]
    return items


def output_names(paths: list[Path] | list[Item]) -> dict[Any, str]:
    """``<stem>_masks.tif`` per input (``<stem>_s<k>_masks.tif`` for scene k of a multi-scene file);
    inputs sharing a stem get their parent folder prefixed. Keyed by path, or by item when given items."""
    items = [p if isinstance(p, tuple) else (p, None, None) for p in paths]
    stems: dict[str, int] = {}
    for p in {i[0] for i in items}:
        stems[image_stem(p)] = stems.get(image_stem(p), 0) + 1
    out: dict[Any, str] = {}
    for item, given in zip(items, paths):
        p, k = item[0], item[1]
        stem = f"{p.parent.name}_{image_stem(p)}" if stems[image_stem(p)] > 1 else image_stem(p)
        out[given] = stem + (f"_s{k}" if k is not None else "") + MASK_SUFFIX
    return out


def segment_files(paths: list[Path], out_dir: Path, segmenter, options: BatchOptions | None = None,  # noqa: ANN001
                  cancel: CancelToken | None = None) -> Iterator[FileEvent]:
    """Segment every path (every scene of a multi-scene file); yields one event per image (after
    it is written, kept or has failed).

    Masks an earlier run with the same settings completed are kept (:func:`resume_decision`).
    At the end writes ``measurements.xlsx`` for every image of the batch (unless
    ``options.measure`` is False) and ``efficell_run.json`` recording the app version, model
    identity and settings, also when the table could not be written (its error is raised then).
    """
    from .export import write_label_tiff

    opts = options or BatchOptions()
    out_dir = Path(out_dir)
    started = time.time()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file of that name, a read-only parent, ...
        from .fileio import _explain

        reason = "is a file, not a folder" if out_dir.is_file() else _explain(out_dir / "x", exc)
        raise OutputError(out_dir, f"cannot create the output folder: {reason}") from exc
    items = expand_scenes(list(paths))
    names = output_names(items)
    # what a killed run was writing (its temporary files) goes; its complete masks are kept
    remove_stale_parts(out_dir, [*names.values(), TABLE_FILE, RUN_FILE], older_than=started)
    key = run_key(segmenter.identity, opts)
    cells_tables, image_rows, records = [], [], []
    total = len(items)
    for i, item in enumerate(items, start=1):
        path, scene, scene_name = item
        if cancel is not None and cancel.cancelled:
            break
        t0 = time.time()
        target = out_dir / names[item]
        try:
            decision = resume_decision(target, path, key, opts.overwrite)
            if decision.action == "refuse":
                raise OutputError(target, decision.reason)
            if decision.action == "keep":
                ev = _kept(i, total, item, target, opts, cells_tables, image_rows, decision.reason, t0)
            else:
                img = read_image(path, opts.planes, scene=scene)
                res = segmenter.segment(img, diameter=opts.diameter, channels=opts.channels, cancel=cancel)
                cal = file_calibration(img, opts.pixel_size_um, opts.channel_names)
                source = {"source": str(path), **({"scene": scene_name, "scene_index": scene} if scene is not None else {})}
                batch = {"run_key": key, **_input_stamp(path)}
                write_label_tiff(res.labels, target, cal.pixel_size_um, metadata={**source, **res.settings,
                                                                                  BATCH_KEY: batch})
                if opts.measure:
                    measured = measure_image(res.labels, img, cal, display_name(path, scene_name))
                    cells_tables.append(measured.cells)
                    image_rows.append(measured.summary | {"diameter_px": res.settings.get("diameter_px")})
                ev = FileEvent(i, total, path, True, "; ".join(res.notes), target, res.n_cells, time.time() - t0,
                               res.settings, scene=scene_name)
        except Cancelled:
            break
        except PlanesNeeded as exc:  # a stack: say which options choose its plane
            ev = FileEvent(i, total, path, False, f"{exc.reason} ({exc.command_line})", seconds=time.time() - t0,
                           scene=scene_name)
        except EffiCellError as exc:
            ev = FileEvent(i, total, path, False, getattr(exc, "reason", str(exc)), seconds=time.time() - t0,
                           scene=scene_name)
        except (ValueError, OSError, MemoryError) as exc:
            ev = FileEvent(i, total, path, False, str(exc) or type(exc).__name__, seconds=time.time() - t0,
                           scene=scene_name)
        record = {"input": str(ev.path), "ok": ev.ok, "message": ev.message, "output": ev.output.name if ev.output else None,
                  "n_cells": ev.n_cells, "seconds": round(ev.seconds, 3), "kept": ev.kept,
                  "diameter_px": (ev.settings or {}).get("diameter_px")}  # typed in, or estimated for this image
        if scene is not None:
            record.update(scene=scene_name, scene_index=scene)
        records.append(record)
        yield ev
    settings = {**segmenter.identity, "device_info": getattr(segmenter, "device_info", None),
                "diameter_px": opts.diameter or "estimated per image (see files)",
                "min_object_px": MIN_OBJECT_PX, "channels": list(opts.channels) if opts.channels else None,
                "planes": {"z": opts.planes.z, "t": opts.planes.t}, "pixel_size_um": opts.pixel_size_um,
                "run_key": key, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    failure: OutputError | None = None
    if opts.measure and image_rows:
        from .export import write_xlsx

        import pandas as pd

        cells = pd.concat(cells_tables, ignore_index=True) if cells_tables else pd.DataFrame()
        try:
            write_xlsx(cells, pd.DataFrame(image_rows), settings, out_dir / TABLE_FILE)
        except OutputError as exc:  # the run record is still written (it is small), then the error goes up
            failure = exc
    from .fileio import atomic_write_text

    record = {"settings": settings, "files": records, "errors": [str(failure)] if failure else []}
    atomic_write_text(out_dir / RUN_FILE, json.dumps(record, indent=1, default=str))
    if failure is not None:
        raise failure


def _kept(i: int, total: int, item: Item, target: Path, opts: BatchOptions, cells_tables: list, image_rows: list,  # noqa: PLR0913
          note: str, t0: float) -> FileEvent:
    """The event of a mask kept from an earlier run; its cells are measured for the table."""
    from .export import read_label_settings
    from .images import read_mask

    path, scene, scene_name = item
    labels = read_mask(target)
    settings = read_label_settings(target) or {}
    if opts.measure:
        img = read_image(path, opts.planes, scene=scene)
        measured = measure_image(labels, img, file_calibration(img, opts.pixel_size_um, opts.channel_names),
                                 display_name(path, scene_name))
        cells_tables.append(measured.cells)
        image_rows.append(measured.summary | {"diameter_px": settings.get("diameter_px")})
    n = int(len(np.unique(labels[labels > 0])))
    return FileEvent(i, total, path, True, note, target, n, time.time() - t0, settings, kept=True, scene=scene_name)
