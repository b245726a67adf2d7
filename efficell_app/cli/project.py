"""``efficell project repair DIR``: rebuild a damaged project index (see ``project.repair``);
``efficell project relink DIR FOLDER``: find moved images again."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import EXIT_OK, EXIT_PARTIAL


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("project", help="look after a project folder (repair its index, relink moved images)",
                       description="Project folder maintenance.")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True, parser_class=type(p))
    r = actions.add_parser(
        "repair", help="rebuild a damaged or lost project index from what survives",
        description="Rebuild the index (project.efficell) of a project that no longer opens: from the rows the "
                    "damaged index still holds, its newest good backup, and the annotation, result and adapter "
                    "files in the folder. The damaged index is kept aside; no file is deleted.")
    r.add_argument("folder", type=Path, metavar="DIR", help="the project folder")
    r.set_defaults(func=run)
    f = actions.add_parser(
        "relink", help="find images that were moved or renamed, in a folder you name",
        description="Images whose files are no longer where they were added (a folder moved or renamed, a drive "
                    "mounted elsewhere) are looked for under FOLDER: a file of the same name, size and content "
                    "takes the image's place, with its results and annotations. Nothing is copied or deleted.")
    f.add_argument("folder", type=Path, metavar="DIR", help="the project folder")
    f.add_argument("where", type=Path, metavar="FOLDER", help="where the images are now (searched with its subfolders)")
    f.set_defaults(func=run_relink)


def run_relink(args: argparse.Namespace) -> int:
    from ..project import Project

    if not args.where.is_dir():
        print(f"efficell project relink: error: {args.where}: folder not found", file=sys.stderr)
        return 2
    with Project.open(args.folder) as project:
        if not project.missing_images():
            print(f"{args.folder}: no image is missing; nothing to relink")
            return EXIT_OK
        report = project.find_missing(args.where)
    print(f"{len(report.relinked)} image(s) found again under {args.where} and relinked")
    for _, path in report.still_missing:
        print(f"still missing: {path}", file=sys.stderr)
    for _, candidate, why in report.mismatched:
        print(f"not relinked: {candidate}: {why}", file=sys.stderr)
    return EXIT_PARTIAL if report.still_missing or report.mismatched else EXIT_OK


def run(args: argparse.Namespace) -> int:
    from ..project.repair import repair_project

    # A missing folder, a project open elsewhere or a newer format raise an EffiCellError that
    # the dispatcher prints as one "error: ..." line (exit 1).
    report = repair_project(args.folder)
    print(report.summary())
    if report.unplaced:
        print(f"note: {len(report.unplaced)} file(s) could not be placed in the index; they are kept where they are",
              file=sys.stderr)
    return EXIT_PARTIAL if report.unplaced else EXIT_OK
