"""``efficell project repair DIR``: rebuild a damaged project index (see ``project.repair``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import EXIT_OK, EXIT_PARTIAL


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("project", help="look after a project folder (repair its index)",
                       description="Project folder maintenance.")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True, parser_class=type(p))
    r = actions.add_parser(
        "repair", help="rebuild a damaged or lost project index from what survives",
        description="Rebuild the index (project.efficell) of a project that no longer opens: from the rows the "
                    "damaged index still holds, its newest good backup, and the annotation, result and adapter "
                    "files in the folder. The damaged index is kept aside; no file is deleted.")
    r.add_argument("folder", type=Path, metavar="DIR", help="the project folder")
    r.set_defaults(func=run)


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
