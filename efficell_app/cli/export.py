"""``efficell export``: measure the cells of a project and write one Excel workbook.

For each image the labels measured are the user's saved annotation when there is one, else
the latest segmentation result (``--labels`` changes that). Sheets: one row per cell, one row
per image, and the settings (project, models with their checksums, EffiCell version).
Images that cannot be read are named on stderr (exit 1); the others are still exported.

``--files tiff,png,roi,geojson`` also writes, beside it, per image: the label image, an overlay
picture, an ImageJ ROI set, a GeoJSON file (QuPath), named after the image (images of one name get
their set's name appended). Files already there are replaced only with ``--overwrite``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import EXIT_OK, EXIT_PARTIAL, EXIT_USAGE


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "export", help="measure a project's cells and write an Excel workbook",
        description="Measure every labelled image of an EffiCell project and write one .xlsx workbook "
                    "(cells, images, settings).")
    p.add_argument("--project", required=True, type=Path, metavar="DIR", help="the project folder")
    p.add_argument("--out", required=True, type=Path, metavar="FILE.xlsx", help="the workbook to write")
    p.add_argument("--set", dest="set_name", default=None, metavar="NAME", help="only this image set (default: all)")
    p.add_argument("--labels", choices=("auto", "annotation", "result"), default="auto",
                   help="auto: the saved annotation, else the latest result (default); or only one kind")
    p.add_argument("--files", default="", metavar="FMT,...",
                   help="also write per-image files beside the workbook: tiff (label images), png (overlays), "
                        "roi (ImageJ ROI sets), geojson (QuPath); comma separated")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the workbook and per-image files of an earlier export (by default nothing is replaced)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..project import Project
    from ..tasks.export import FILE_FORMATS, ExportWouldReplace, export_project

    out = Path(args.out)
    if out.suffix.lower() != ".xlsx":
        print(f"efficell export: error: --out must name an .xlsx file, not '{out.name}'", file=sys.stderr)
        return EXIT_USAGE
    files = [f.strip().lower() for f in args.files.split(",") if f.strip()]
    unknown = [f for f in files if f not in FILE_FORMATS]
    if unknown:
        print(f"efficell export: error: --files: unknown format '{unknown[0]}' (one of {', '.join(FILE_FORMATS)})",
              file=sys.stderr)
        return EXIT_USAGE
    # A locked, missing or newer project, or an unknown set, raises an EffiCellError that the
    # dispatcher prints as one "error: ..." line (exit 1).
    with Project.open(args.project) as project:
        try:  # as segment --out: a folder that does not exist yet is made
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            print(f"error: {out.parent}: cannot create the folder ({exc.strerror or exc})", file=sys.stderr)
            return EXIT_PARTIAL
        try:
            report = export_project(project, out, args.set_name, args.labels, files=files, overwrite=args.overwrite)
        except ExportWouldReplace as exc:
            print(f"error: {exc}; give --overwrite to replace them", file=sys.stderr)
            return EXIT_PARTIAL
    for err in report.errors:
        print(f"error: {err}", file=sys.stderr)
    print(f"{out}: {report.n_cells} cells from {report.n_images} image(s)"
          + (f"; {len(report.files) - 1} per-image file(s) beside it" if files else "")
          + (f"; {len(report.not_labelled)} image(s) not segmented or annotated, left out" if report.not_labelled else ""))
    return EXIT_PARTIAL if report.errors else EXIT_OK
