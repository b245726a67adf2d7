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
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .cancel import CancelToken
from .errors import Cancelled, EffiCellError, OutputError
from .fileio import is_inside, quick_hash, real_path, remove_stale_parts
from .images import PlaneChoice, PlanesNeeded, display_name, read_image, scene_names
from .measure import MIN_OBJECT_PX, ImageMeasurement, channel_names_for, file_calibration, measure_image
from .pairing import image_stem

log = logging.getLogger(__name__)

#: ``progress(index, total, name, fraction)``: how far the work within image ``index`` of ``total`` is.
WithinImage = Callable[[int, int, str, float], None]

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
        return ResumeDecision("refuse", f"{target.name} already exists as a folder; not overwritten")
    from .export import read_label_settings

    record = (read_label_settings(target) or {}).get(BATCH_KEY)
    again = "not overwritten (use --overwrite to replace it)"
    if not isinstance(record, dict):
        return ResumeDecision("refuse", f"{target.name} already exists and was not written by EffiCell segment; {again}")
    if record.get("run_key") != key:
        return ResumeDecision("refuse", f"{target.name} already exists from a run with other settings; {again}")
    try:
        same = {k: v for k, v in _input_stamp(source).items() if k != "source"} == \
            {"size": record.get("size"), "quick_hash": record.get("quick_hash")}
    except OSError:
        same = False
    if not same:
        return ResumeDecision("refuse", f"{target.name} already exists, but its input {source.name} changed since; {again}")
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
    """``<stem>_masks.tif`` per input (``<stem>_s<k>_masks.tif`` for scene k of a multi-scene file).
    Inputs sharing a stem get the folders that tell them apart prefixed (``exp1_control_img001``
    for ``exp1/control/img001.tif`` beside ``exp2/control/img001.tif``; the parent's name for a
    plain ``a/img.tif`` beside ``b/img.tif``), and files of one folder that differ only in their
    extension get it appended (``sample_png``): no two inputs ever share a mask, also where the
    file system ignores case. Keyed by path, or by item when given items."""
    items = [p if isinstance(p, tuple) else (p, None, None) for p in paths]
    stems = _distinct_stems(sorted({i[0] for i in items}))
    return {given: stems[item[0]] + (f"_s{item[1]}" if item[1] is not None else "") + MASK_SUFFIX
            for item, given in zip(items, paths)}


def earlier_outputs(paths: list[Path], out_dir: Path) -> list[Path]:
    """The masks of earlier runs among ``paths``: files named ``*_masks.tif`` inside ``out_dir`` (an
    output folder within, or equal to, an input folder), which a batch into ``out_dir`` must not take
    for images to segment."""
    return [p for p in paths if p.name.endswith(MASK_SUFFIX) and is_inside(p, out_dir)]


def _distinct_stems(files: list[Path]) -> dict[Path, str]:
    """A stem per file, distinct when case is ignored (see :func:`output_names`)."""
    groups: dict[str, list[Path]] = {}
    for f in files:
        groups.setdefault(image_stem(f).casefold(), []).append(f)
    out: dict[Path, str] = {}
    for group in groups.values():
        if len(group) == 1:
            out[group[0]] = image_stem(group[0])
            continue
        parents = [Path(os.path.abspath(f.parent)) for f in group]
        common = Path(os.path.commonpath(parents))
        for f, parent in zip(group, parents):
            rel = () if len(set(parents)) == 1 else (parent.relative_to(common).parts or (parent.name,))
            out[f] = "_".join([*rel, image_stem(f)])
    seen: dict[str, int] = {}
    for f in files:  # left alike: same folder and stem, other extensions (or a folder-name coincidence)
        seen[out[f].casefold()] = seen.get(out[f].casefold(), 0) + 1
    for f in files:
        if seen[out[f].casefold()] > 1:
            out[f] += "_" + (f.name[len(image_stem(f)):].lstrip(".").replace(".", "_") or "noext")
    taken: set[str] = set()
    for f in files:  # anything still alike is numbered, in path order (stable from run to run)
        name, n = out[f], 2
        while out[f].casefold() in taken:
            out[f], n = f"{name}_{n}", n + 1
        taken.add(out[f].casefold())
    return out


def segment_files(paths: list[Path], out_dir: Path, segmenter, options: BatchOptions | None = None,  # noqa: ANN001
                  cancel: CancelToken | None = None, progress: WithinImage | None = None,
                  ) -> Generator[FileEvent, None, tuple[Path | None, Path] | None]:
    """Segment every path (every scene of a multi-scene file); yields one event per image (after
    it is written, kept or has failed).

    Masks an earlier run with the same settings completed are kept (:func:`resume_decision`).
    At the end writes ``measurements.xlsx`` for every image of the batch (unless
    ``options.measure`` is False) and ``efficell_run.json`` recording the app version, model
    identity and settings, also when the table could not be written (its error is raised then);
    numbered ones where those hold another run (:func:`run_file_names`); returns the two paths
    (:func:`write_run_files`), or ``None`` when cancelled before the first image was done.
    ``progress(index, total, name, fraction)`` follows the work within each image (a slide of
    16384² px takes minutes).
    """
    opts = options or BatchOptions()
    out_dir = output_folder(Path(out_dir))
    started = time.time()
    items = expand_scenes(list(paths))
    names = output_names(items)
    # what a killed run was writing (its temporary files) goes; its complete masks are kept
    remove_stale_parts(out_dir, [*names.values(), TABLE_FILE, RUN_FILE], older_than=started)
    key = run_key(segmenter.identity, opts)
    measurements: list[ImageMeasurement] = []
    records = []
    total = len(items)
    for i, item in enumerate(items, start=1):
        if cancel is not None and cancel.cancelled:
            break
        try:
            within = None if progress is None else \
                (lambda f, i=i, name=display_name(item[0], item[2]): progress(i, total, name, f))
            ev, measured = segment_item(item, out_dir / names[item], segmenter, opts, key, cancel, within)
        except Cancelled:
            break
        ev.index, ev.total = i, total
        if measured is not None:
            measurements.append(measured)
        records.append(file_record(ev, item))
        yield ev
    if not records:  # cancelled before the first image was done: nothing to record (no empty table or record)
        return None
    return write_run_files(out_dir, run_settings(segmenter.identity, getattr(segmenter, "device_info", None), opts, key),
                           records, measurements if opts.measure else [], opts.overwrite)


# ----------------------------------------------------------------------------- the pieces every batch runner shares
# (core.batch.segment_files here, the Dask workers and client of tasks.cluster_segment there)


def output_folder(out_dir: Path) -> Path:
    """``out_dir``, created; an :class:`OutputError` saying why it cannot be."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file of that name, a read-only parent, ...
        from .fileio import _explain

        reason = "is a file, not a folder" if out_dir.is_file() else _explain(out_dir / "x", exc)
        raise OutputError(out_dir, f"cannot create the output folder: {reason}") from exc
    return out_dir


def segment_item(item: Item, target: Path, segmenter, opts: BatchOptions, key: str,  # noqa: ANN001
                 cancel: CancelToken | None = None, progress: Callable[[float], None] | None = None,
                 ) -> tuple[FileEvent, ImageMeasurement | None]:
    """One image of a batch into ``target``: kept (:func:`resume_decision`), refused, or segmented
    and written atomically with its record; measured when ``opts.measure``. A bad image is a
    failed event (the reason alone: the path goes beside it); only :class:`Cancelled` is raised,
    also when the run was cancelled after the image was segmented (nothing is written then).
    The event's ``index``/``total`` are the caller's to set."""
    path, scene, scene_name = item
    t0 = time.time()
    try:
        decision = resume_decision(target, path, key, opts.overwrite)
        if decision.action == "refuse":
            raise OutputError(target, decision.reason)
        if decision.action == "keep":
            return _kept(item, target, opts, decision.reason, t0)
        img = read_image(path, opts.planes, scene=scene)
        if opts.measure:
            channel_names_for(img, opts.channel_names)  # a wrong count fails the image before any work
        res = segmenter.segment(img, diameter=opts.diameter, channels=opts.channels, cancel=cancel, progress=progress)
        if cancel is not None:
            cancel.raise_if_cancelled()  # it finished after the run was cancelled: write nothing
        cal = file_calibration(img, opts.pixel_size_um, opts.channel_names)
        write_mask(res.labels, target, cal.pixel_size_um, item, res.settings, key)
        measured = (_with_diameter(measure_image(res.labels, img, cal, display_name(path, scene_name)), res.settings)
                    if opts.measure else None)
        return (FileEvent(0, 0, path, True, "; ".join(res.notes), target, res.n_cells, time.time() - t0,
                          res.settings, scene=scene_name), measured)
    except Cancelled:
        raise
    except PlanesNeeded as exc:  # a stack: say which options choose its plane
        return FileEvent(0, 0, path, False, f"{exc.reason} ({exc.command_line})", seconds=time.time() - t0,
                         scene=scene_name), None
    except EffiCellError as exc:
        return FileEvent(0, 0, path, False, getattr(exc, "reason", str(exc)), seconds=time.time() - t0,
                         scene=scene_name), None
    except (ValueError, OSError, MemoryError) as exc:
        return FileEvent(0, 0, path, False, str(exc) or type(exc).__name__, seconds=time.time() - t0,
                         scene=scene_name), None


def batch_record(key: str, source: Path) -> dict[str, Any]:
    """What a mask records under :data:`BATCH_KEY`: the run's key and its input's stamp (:func:`resume_decision` reads it)."""
    return {"run_key": key, **_input_stamp(source)}


def write_mask(labels: np.ndarray, target: Path, pixel_size_um: float | None, item: Item,
               settings: dict[str, Any], key: str) -> Path:
    """Write a batch's mask atomically with everything it records: its source (and scene), the
    result's settings and the :func:`batch_record` that makes the batch resumable."""
    from .export import write_label_tiff

    path, scene, scene_name = item
    source = {"source": str(path), **({"scene": scene_name, "scene_index": scene} if scene is not None else {})}
    return write_label_tiff(labels, target, pixel_size_um,
                            metadata={**source, **settings, BATCH_KEY: batch_record(key, path)})


def file_record(ev: FileEvent, item: Item) -> dict[str, Any]:
    """The entry of one image in ``efficell_run.json``."""
    record = {"input": str(ev.path), "ok": ev.ok, "message": ev.message, "output": ev.output.name if ev.output else None,
              "n_cells": ev.n_cells, "seconds": round(ev.seconds, 3), "kept": ev.kept,
              "diameter_px": (ev.settings or {}).get("diameter_px")}  # typed in, or estimated for this image
    if item[1] is not None:
        record.update(scene=item[2], scene_index=item[1])
    return record


def run_settings(identity: dict[str, Any], device_info: dict[str, Any] | None, opts: BatchOptions, key: str,
                 **extra: Any) -> dict[str, Any]:
    """The ``settings`` of a batch's run record (and of its table): model identity, device, options, run key."""
    return {**identity, "device_info": device_info,
            "diameter_px": opts.diameter or "estimated per image (see files)",
            "min_object_px": MIN_OBJECT_PX,
            "channels": list(opts.channels) if opts.channels else "auto (chosen per image)",
            "planes": opts.planes.describe() or "2-D images (no plane chosen)",
            "pixel_size_um": opts.pixel_size_um or "from each file's metadata (see the Images sheet)",
            "run_key": key, **extra, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def write_run_files(out_dir: Path, settings: dict[str, Any], records: list[dict[str, Any]],
                    measurements: list[ImageMeasurement], overwrite: bool = False) -> tuple[Path | None, Path]:
    """``measurements.xlsx`` (when there are measurements, in the order given) and
    ``efficell_run.json``, or numbered ones where those hold another run (:func:`run_file_names`);
    the run record is written also when the table cannot be (its error is raised then).
    Returns the table (None when there were no measurements) and the record written."""
    from .fileio import atomic_write_text

    table, run = run_file_names(out_dir, settings.get("run_key"), records, overwrite)
    failure: OutputError | None = None
    if measurements:
        from .export import write_xlsx

        import pandas as pd

        cells = pd.concat([m.cells for m in measurements], ignore_index=True)
        failed = [f"{f['input']}" + (f" [{f['scene']}]" if f.get("scene") else "") + f": {f['message']}"
                  for f in records if not f["ok"]]
        try:  # the table says which images of the batch it lacks, and why (as measure's does)
            write_xlsx(cells, pd.DataFrame([m.summary for m in measurements]),
                       {**settings, "images_measured": len(measurements), "images_failed": failed}, table)
        except OutputError as exc:  # the run record is still written (it is small), then the error goes up
            failure = exc
    record = {"settings": settings, "files": records, "errors": [str(failure)] if failure else []}
    atomic_write_text(run, json.dumps(record, indent=1, default=str))
    if failure is not None:
        raise failure
    return (table if measurements else None), run


def run_file_names(out_dir: Path, key: str | None, records: list[dict[str, Any]], overwrite: bool) -> tuple[Path, Path]:
    """Where a run's table and record go: ``measurements.xlsx`` and ``efficell_run.json`` when they
    are free, when ``overwrite``, or when they hold an earlier run with the same settings over no
    image this run leaves out (the same batch finished or resumed, or grown); else the first free
    ``measurements_<n>.xlsx`` / ``efficell_run_<n>.json`` (n = 2, 3, ...), so that another run's
    table and record (a subset of the images, other settings) are never replaced."""
    table, run = out_dir / TABLE_FILE, out_dir / RUN_FILE
    if overwrite or not (os.path.lexists(table) or os.path.lexists(run)) or _covers(run, key, records):
        return table, run
    n = 2
    while True:
        table, run = out_dir / f"{Path(TABLE_FILE).stem}_{n}.xlsx", out_dir / f"{Path(RUN_FILE).stem}_{n}.json"
        if not (os.path.lexists(table) or os.path.lexists(run)):
            return table, run
        n += 1


def _covers(run: Path, key: str | None, records: list[dict[str, Any]]) -> bool:
    """Whether the run record at ``run`` has this run's ``key`` and only images among ``records``."""
    try:
        earlier = json.loads(run.read_text(encoding="utf-8"))
        if earlier["settings"]["run_key"] != key:
            return False
        before = {(f["input"], f.get("scene_index")) for f in earlier["files"]}
    except (OSError, ValueError, KeyError, TypeError):  # no record (a table alone), or not one of ours
        return False
    return before <= {(f["input"], f.get("scene_index")) for f in records}


def _kept(item: Item, target: Path, opts: BatchOptions, note: str,
          t0: float) -> tuple[FileEvent, ImageMeasurement | None]:
    """The event of a mask kept from an earlier run; its cells are measured for the table."""
    from .export import read_label_settings
    from .images import read_mask

    path, scene, scene_name = item
    labels = read_mask(target)
    settings = read_label_settings(target) or {}
    measured = None
    if opts.measure:
        img = read_image(path, opts.planes, scene=scene)
        measured = _with_diameter(measure_image(labels, img, file_calibration(img, opts.pixel_size_um, opts.channel_names),
                                                display_name(path, scene_name)), settings)
    n = int(len(np.unique(labels[labels > 0])))
    return (FileEvent(0, 0, path, True, note, target, n, time.time() - t0, settings, kept=True, scene=scene_name),
            measured)


def _with_diameter(measured: ImageMeasurement, settings: dict[str, Any]) -> ImageMeasurement:
    """The image's summary row with the diameter it was segmented at (typed in, or estimated for it)."""
    return measured._replace(summary=measured.summary | {"diameter_px": settings.get("diameter_px")})
