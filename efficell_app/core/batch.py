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
from .images import PlaneChoice, PlanesNeeded, read_image
from .measure import MIN_OBJECT_PX, file_calibration, measure_image
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


def output_names(paths: list[Path]) -> dict[Path, str]:
    """``<stem>_masks.tif`` per input; inputs sharing a stem get their parent folder prefixed."""
    stems: dict[str, int] = {}
    for p in paths:
        stems[image_stem(p)] = stems.get(image_stem(p), 0) + 1
    return {p: (f"{p.parent.name}_{image_stem(p)}" if stems[image_stem(p)] > 1 else image_stem(p)) + MASK_SUFFIX
            for p in paths}


def segment_files(paths: list[Path], out_dir: Path, segmenter, options: BatchOptions | None = None,  # noqa: ANN001
                  cancel: CancelToken | None = None) -> Iterator[FileEvent]:
    """Segment every path; yields one event per file (after it is written or has failed).

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
    names = output_names(paths)
    cells_tables, image_rows, records = [], [], []
    total = len(paths)
    for i, path in enumerate(paths, start=1):
        if cancel is not None and cancel.cancelled:
            break
        t0 = time.time()
        target = out_dir / names[path]
        try:
            if target.exists() and not opts.overwrite:
                raise OutputError(target, "already exists; not overwritten (use --overwrite to replace it)")
            img = read_image(path, opts.planes)
            res = segmenter.segment(img, diameter=opts.diameter, channels=opts.channels, cancel=cancel)
            cal = file_calibration(img, opts.pixel_size_um, opts.channel_names)
            write_label_tiff(res.labels, target, cal.pixel_size_um, metadata={"source": str(path), **res.settings})
            if opts.measure:
                measured = measure_image(res.labels, img, cal, path.name)
                cells_tables.append(measured.cells)
                image_rows.append(measured.summary | {"diameter_px": res.settings.get("diameter_px")})
            ev = FileEvent(i, total, path, True, "; ".join(res.notes), target, res.n_cells, time.time() - t0, res.settings)
        except Cancelled:
            break
        except PlanesNeeded as exc:  # a stack: say which options choose its plane
            ev = FileEvent(i, total, path, False, f"{exc.reason} ({exc.command_line})", seconds=time.time() - t0)
        except EffiCellError as exc:
            ev = FileEvent(i, total, path, False, getattr(exc, "reason", str(exc)), seconds=time.time() - t0)
        except (ValueError, OSError, MemoryError) as exc:
            ev = FileEvent(i, total, path, False, str(exc) or type(exc).__name__, seconds=time.time() - t0)
        records.append({"input": str(ev.path), "ok": ev.ok, "message": ev.message, "output": ev.output.name if ev.output else None,
                        "n_cells": ev.n_cells, "seconds": round(ev.seconds, 3),
                        "diameter_px": (ev.settings or {}).get("diameter_px")})  # typed in, or estimated for this image
        yield ev
    settings = {**segmenter.identity, "diameter_px": opts.diameter or "estimated per image (see files)",
                "min_object_px": MIN_OBJECT_PX, "channels": list(opts.channels) if opts.channels else None,
                "planes": {"z": opts.planes.z, "t": opts.planes.t}, "pixel_size_um": opts.pixel_size_um,
                "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if opts.measure and image_rows:
        from .export import write_xlsx

        import pandas as pd

        cells = pd.concat(cells_tables, ignore_index=True) if cells_tables else pd.DataFrame()
        write_xlsx(cells, pd.DataFrame(image_rows), settings, out_dir / "measurements.xlsx")
    from .fileio import atomic_write_text

    atomic_write_text(out_dir / RUN_FILE, json.dumps({"settings": settings, "files": records}, indent=1, default=str))

