"""``efficell measure``: per-cell measurements of existing masks, into one .xlsx or .csv.

Images are paired with masks by file stem: for ``<stem>.tif`` the masks folder is searched
for ``<stem>.tif``, ``<stem>_masks.tif``, ``<stem>_cp_masks.png`` and the like.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

from ..core.pairing import find_mask, image_stem, is_mask_name
from . import EXIT_OK, EXIT_PARTIAL, EXIT_USAGE
from .options import pixel_size_um
from .progress import progress_line

log = logging.getLogger(__name__)

OUT_EXTENSIONS = (".xlsx", ".csv")


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "measure", help="measure cells of existing masks into an Excel or CSV table",
        description="Measure every cell (shape, size, raw intensity per channel) of images with their masks.")
    p.add_argument("--images", required=True, nargs="+", metavar="PATH", help="image files or folders")
    p.add_argument("--masks", required=True, metavar="DIR", help="folder of masks named <stem>.tif or <stem>_masks.tif (png too)")
    p.add_argument("--out", required=True, metavar="FILE", help="output table: FILE.xlsx or FILE.csv")
    p.add_argument("--pixel-size", type=pixel_size_um, metavar="UM", help="pixel size in micrometres (default: from each image's metadata)")
    p.add_argument("--channel-names", metavar="A,B,...", help="names for the image channels, comma separated")
    p.add_argument("--z", default=None, help="for z-stacks: plane index, counted from 0 (the window's 'z 1' is 0), or 'max' (maximum projection)")
    p.add_argument("--t", default=None, help="for time series: time point index, counted from 0 (the window's 't 1' is 0)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..core.errors import EffiCellError, OutputError
    from ..core.export import companion_paths
    from ..core.fileio import real_path, remove_stale_parts
    from ..core.images import PlaneChoice, find_images, read_image, read_mask

    out = Path(args.out)
    if out.suffix.lower() not in OUT_EXTENSIONS:
        print(f"efficell measure: error: --out must end in .xlsx or .csv, not '{out.name}'", file=sys.stderr)
        return EXIT_USAGE
    masks_dir = Path(args.masks)
    if not masks_dir.is_dir():
        print(f"efficell measure: error: --masks {masks_dir}: folder not found", file=sys.stderr)
        return EXIT_USAGE
    try:
        planes = PlaneChoice.parse(args.z, args.t)
    except ValueError as exc:
        print(f"efficell measure: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    channel_names = [s.strip() for s in args.channel_names.split(",")] if args.channel_names else None
    written = [out, *companion_paths(out)] if out.suffix.lower() == ".csv" else [out]
    existing = [p for p in written if p.exists()]
    if existing and not args.overwrite:
        print(f"error: {existing[0]}: file exists; give --overwrite to replace it", file=sys.stderr)
        return EXIT_PARTIAL
    # temporary files a killed earlier run left beside the table
    remove_stale_parts(out.parent, [p.name for p in written], older_than=time.time())

    images, skipped = find_images(args.images)
    for path, reason in skipped:
        log.info("skipped %s: %s", path, reason)
    masks_real = real_path(masks_dir)
    images = [p for p in images if not (real_path(p).parent == masks_real and is_mask_name(p))]
    if not images:
        print(f"error: {' '.join(args.images)}: no images found", file=sys.stderr)
        return EXIT_PARTIAL

    import pandas as pd

    from ..core.export import model_name, models_record, read_label_settings
    from ..core.measure import MIN_OBJECT_PX, file_calibration, measure_image

    t0 = time.perf_counter()
    cell_tables: list[pd.DataFrame] = []
    image_rows: list[dict[str, Any]] = []
    failures: list[str] = []
    models: dict[str, dict[str, Any]] = {}  # the models that made the masks, when they say
    from ..core.batch import expand_scenes, output_names
    from ..core.images import display_name

    items = expand_scenes(images)  # a multi-scene file: one image per scene, as segment writes them
    scene_masks = output_names(items)  # <stem>_s<k>_masks.tif: segment's own names, one home
    for k, item in enumerate(items, start=1):
        path, scene, scene_name = item
        name = display_name(path, scene_name)
        mask_path = find_mask(path, masks_dir) if scene is None else masks_dir / scene_masks[item]
        t_image = time.perf_counter()
        try:
            img = read_image(path, planes, scene=scene)  # first: an unreadable image is named as such
            if mask_path is None or not mask_path.is_file():
                looked = (f"{image_stem(path)}.tif, {image_stem(path)}_masks.tif and .png" if scene is None
                          else f"{scene_masks[item]}, as efficell segment names a scene's mask")
                where = f"{path} [{scene_name}]" if scene is not None else str(path)
                raise EffiCellError(f"{where}: no mask in {masks_dir} (looked for {looked})")
            labels = read_mask(mask_path)
            made_by = read_label_settings(mask_path) or {}  # efficell segment's masks say which model made them
            measured = measure_image(labels, img, file_calibration(img, args.pixel_size, channel_names), name,
                                     mask_path=mask_path)
        except EffiCellError as exc:
            from .hints import with_options

            progress_line(sys.stderr, k, len(items), name, "failed")
            print(f"error: {with_options(exc)}", file=sys.stderr)
            failures.append(with_options(exc))
            continue
        progress_line(sys.stderr, k, len(items), name, f"{len(measured.cells)} cells, {time.perf_counter() - t_image:.1f} s")
        if made_by_name := model_name(made_by):
            models[made_by_name] = made_by
        cell_tables.append(measured.cells)
        image_rows.append(measured.summary | {"height_px": img.shape[0], "width_px": img.shape[1], "mask": mask_path.name})
    if not image_rows:
        print("error: no image could be measured; nothing written", file=sys.stderr)
        return EXIT_PARTIAL
    cells = pd.concat(cell_tables, ignore_index=True) if len(cell_tables) > 1 else cell_tables[0]
    summary = pd.DataFrame(image_rows)
    settings = {
        "command": "efficell measure",
        "images": [str(p) for p in args.images],
        "masks": str(masks_dir),
        "pixel_size_um": args.pixel_size if args.pixel_size else "from image metadata",
        "channel_names": channel_names or "from image metadata",
        "min_object_px": MIN_OBJECT_PX,
        "images_measured": len(image_rows),
        "images_failed": failures,
        "seconds": round(time.perf_counter() - t0, 3),
        **models_record(models),
    }
    try:
        _save(cells, summary, settings, out)
    except OutputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        alt = _alternative(out)
        if exc.path is not None and out.exists() and alt is not None:
            try:
                _save(cells, summary, settings, alt)
            except OutputError:
                return EXIT_PARTIAL
            print(f"error: {out}: the measurements were saved to {alt} instead", file=sys.stderr)
        return EXIT_PARTIAL
    print(f"measured {len(cells)} cells in {len(image_rows)} image(s) -> {out}")
    return EXIT_PARTIAL if failures else EXIT_OK


def _save(cells: Any, summary: Any, settings: dict[str, Any], out: Path) -> None:
    from ..core.export import write_csv, write_xlsx

    if out.suffix.lower() == ".xlsx":
        write_xlsx(cells, summary, settings, out)
    else:
        write_csv(cells, out, settings, images=summary)


def _alternative(out: Path) -> Path | None:
    """A free name beside ``out`` (for a file held open by Excel), or None."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    cand = out.with_name(f"{out.stem}_{stamp}{out.suffix}")
    return None if cand.exists() else cand
