"""Segment a batch of files into an output folder, as a generator of per-file events.

One bad file never stops the batch: its event carries the reason and the others go on.
Outputs are written atomically, never over an existing file unless asked.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cancel import CancelToken
from .errors import Cancelled, EffiCellError, OutputError
from .images import PlaneChoice, display_name, read_image, scene_names
from .measure import file_calibration, measure_image
from .pairing import image_stem

log = logging.getLogger(__name__)

MASK_SUFFIX = "_masks.tif"
RUN_FILE = "efficell_run.json"


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
    scene: str | None = None  # the scene's name for one scene of a multi-scene file

    @property
    def name(self) -> str:
        """``file`` or ``file [scene]``."""
        return display_name(self.path, self.scene)


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
    """Segment every path (every scene of a multi-scene file); yields one event per image
    (after it is written or has failed).

    At the end writes ``measurements.xlsx`` (unless ``options.measure`` is False) and
    ``efficell_run.json`` recording the app version, model identity and settings.
    """
    from .export import write_label_tiff

    opts = options or BatchOptions()
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file of that name, a read-only parent, ...
        from .fileio import _explain

        reason = "is a file, not a folder" if out_dir.is_file() else _explain(out_dir / "x", exc)
        raise OutputError(out_dir, f"cannot create the output folder: {reason}") from exc
    items = expand_scenes(list(paths))
    names = output_names(items)
    cells_tables, image_rows, records = [], [], []
    total = len(items)
    for i, item in enumerate(items, start=1):
        path, scene, scene_name = item
        if cancel is not None and cancel.cancelled:
            break
        t0 = time.time()
        target = out_dir / names[item]
        try:
            if target.exists() and not opts.overwrite:
                raise OutputError(target, "already exists; not overwritten (use --overwrite to replace it)")
            img = read_image(path, opts.planes, scene=scene)
            res = segmenter.segment(img, diameter=opts.diameter, channels=opts.channels, cancel=cancel)
            cal = file_calibration(img, opts.pixel_size_um, opts.channel_names)
            source = {"source": str(path), **({"scene": scene_name, "scene_index": scene} if scene is not None else {})}
            write_label_tiff(res.labels, target, cal.pixel_size_um, metadata={**source, **res.settings})
            if opts.measure:
                measured = measure_image(res.labels, img, cal, display_name(path, scene_name))
                cells_tables.append(measured.cells)
                image_rows.append(measured.summary)
            ev = FileEvent(i, total, path, True, "; ".join(res.notes), target, res.n_cells, time.time() - t0, res.settings,
                           scene=scene_name)
        except Cancelled:
            break
        except EffiCellError as exc:
            ev = FileEvent(i, total, path, False, getattr(exc, "reason", str(exc)), seconds=time.time() - t0, scene=scene_name)
        except (ValueError, OSError, MemoryError) as exc:
            ev = FileEvent(i, total, path, False, str(exc) or type(exc).__name__, seconds=time.time() - t0, scene=scene_name)
        record = {"input": str(ev.path), "ok": ev.ok, "message": ev.message, "output": ev.output.name if ev.output else None,
                  "n_cells": ev.n_cells, "seconds": round(ev.seconds, 3)}
        if scene is not None:
            record.update(scene=scene_name, scene_index=scene)
        records.append(record)
        yield ev
    settings = {**segmenter.identity, "diameter_px": opts.diameter, "channels": list(opts.channels) if opts.channels else None,
                "planes": {"z": opts.planes.z, "t": opts.planes.t}, "pixel_size_um": opts.pixel_size_um,
                "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if opts.measure and image_rows:
        import pandas as pd

        from .export import write_xlsx

        cells = pd.concat(cells_tables, ignore_index=True) if cells_tables else pd.DataFrame()
        write_xlsx(cells, pd.DataFrame(image_rows), settings, out_dir / "measurements.xlsx")
    from .fileio import atomic_write_text

    atomic_write_text(out_dir / RUN_FILE, json.dumps({"settings": settings, "files": records}, indent=1, default=str))

