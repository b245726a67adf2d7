"""``efficell models list|download NAME|import NAME FILE``: the encoder weights on this computer."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("models", help="list, download or import encoder weights",
                              description="Encoder weights: what is registered, what is on this computer, how to get the rest.")
    sub = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    lp = sub.add_parser("list", help="every registered encoder, its weights and whether they are here")
    lp.add_argument("--json", action="store_true", help="machine-readable output")
    dp = sub.add_parser("download", help="download an encoder's published weights (resumable)")
    dp.add_argument("name", help="encoder name (see `efficell models list`)")
    dp.add_argument("--url", default=None, help="download from this address instead (a mirror)")
    ip = sub.add_parser("import", help="copy a weights file you already have into the weights folder")
    ip.add_argument("name", help="encoder name (see `efficell models list`)")
    ip.add_argument("file", help="the weights file, e.g. sam_vit_b_01ec64.pth")
    p.set_defaults(func=run)


def encoder_rows() -> list[dict[str, Any]]:
    """One row per registered encoder: name, family, parameters, weights file, size, presence, licence, url."""
    from ..core.encoders.registry import list_specs
    from ..core.encoders.weights import is_present, weights_path
    from .info import backbone_summary

    rows = []
    for spec in list_specs():
        params, _channels, stride = backbone_summary(spec.name)
        src = spec.weights
        rows.append({
            "name": spec.name,
            "family": spec.family,
            "description": spec.description,
            "params": params,
            "input_size": spec.input_size,
            "stride": stride,
            "file": src.filename if src else None,
            "size_bytes": src.size_bytes if src else None,
            "sha256": src.sha256 if src else None,
            "present": is_present(spec),
            "path": str(weights_path(spec)) if src else None,
            "builtin": spec.builtin,
            "licence": src.licence if src else spec.licence,
            "url": src.url if src else None,
            "note": src.note if src else "",
        })
    return rows


def _list(as_json: bool) -> int:
    from ..core.encoders.weights import cache_dir, format_size

    rows = encoder_rows()
    if as_json:
        print(json.dumps({"weights_dir": str(cache_dir()), "encoders": rows}, indent=2))
        return EXIT_OK
    print(f"weights folder: {cache_dir()}")
    print(f"{'name':<20} {'family':<8} {'params':>8} {'size':>9}  {'here':<4}  licence / url")
    for r in rows:
        size = format_size(r["size_bytes"]) if r["size_bytes"] else ("bundled" if r["builtin"] else "?")
        here = "yes" if r["present"] else "no"
        print(f"{r['name']:<20} {r['family']:<8} {r['params'] / 1e6:>7.1f}M {size:>9}  {here:<4}  {r['licence']}")
        if not r["builtin"] and r["url"]:
            print(f"{'':<20} {r['url']}")
    return EXIT_OK


class _Progress:
    """A progress line on stderr: redrawn in place on a terminal, every 10 % otherwise."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.tty = sys.stderr.isatty()
        self.last_decile = -1
        self.t0 = time.monotonic()
        self.last_draw = 0.0

    def __call__(self, done: int, total: int | None) -> None:
        from ..core.encoders.weights import format_size

        now = time.monotonic()
        rate = done / max(now - self.t0, 1e-6)
        if total:
            frac = min(done / total, 1.0)
            text = f"{self.label}: {frac * 100:5.1f}% {format_size(done)} / {format_size(total)} ({format_size(int(rate))}/s)"
            if self.tty:
                if now - self.last_draw > 0.1 or done >= total:
                    bar = "#" * int(frac * 30)
                    print(f"\r[{bar:<30}] {text}", end="", file=sys.stderr, flush=True)
                    self.last_draw = now
            elif int(frac * 10) > self.last_decile:
                self.last_decile = int(frac * 10)
                print(text, file=sys.stderr, flush=True)
        elif self.tty and now - self.last_draw > 0.1:
            print(f"\r{self.label}: {format_size(done)}", end="", file=sys.stderr, flush=True)
            self.last_draw = now

    def close(self) -> None:
        if self.tty:
            print(file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from ..core.encoders.registry import get_spec, list_specs
    from ..core.errors import WeightsError

    if args.models_command == "list":
        return _list(args.json)
    try:
        spec = get_spec(args.name)
    except KeyError:
        known = ", ".join(s.name for s in list_specs())
        print(f"efficell models: error: unknown encoder '{args.name}' (known: {known})", file=sys.stderr)
        return EXIT_USAGE
    from ..core.encoders import weights as store

    try:
        if args.models_command == "download":
            bar = _Progress(spec.name)
            try:
                path = store.download(spec, progress=bar, url=args.url)
            finally:
                bar.close()
        else:
            path = store.import_file(spec, args.file)
    except WeightsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{spec.name}: weights ready at {path}")
    return EXIT_OK
