"""The ``efficell`` command: segment | train | measure | eval | export | project | models | info.

Each subcommand lives in its own module exposing ``add_parser(subparsers)`` and
``run(args) -> int``. Exit codes: 0 all succeeded, 1 some inputs failed, 2 usage error.
With no arguments the GUI starts.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .. import __version__

# Order = order in --help.
SUBCOMMANDS = ("segment", "train", "measure", "eval", "export", "project", "models", "info")
EXIT_OK, EXIT_PARTIAL, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # usage errors: one line, exit 2
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="efficell", description="EffiCell cell segmentation on a frozen foundation-model encoder.")
    parser.add_argument("--version", action="version", version=f"efficell {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    parser.add_argument("--selftest", action="store_true", help="segment a bundled sample, check it, report the device; exit 0/1")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in SUBCOMMANDS:
        try:
            mod = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            continue
        mod.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        from ..gui.app import main as gui_main

        return gui_main([])
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    if args.selftest:
        from ..selftest import run_selftest

        return run_selftest()
    if not args.command:
        parser.print_help()
        return EXIT_USAGE
    from ..core.device import DeviceUnavailable
    from ..core.errors import EffiCellError
    from .hints import with_options

    try:
        return int(args.func(args))
    except (EffiCellError, DeviceUnavailable) as exc:
        print(f"error: {with_options(exc)}", file=sys.stderr)
        return EXIT_PARTIAL
    except KeyboardInterrupt:
        print("cancelled", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `efficell info --json | head`
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
