"""``efficell eval``: score predicted label images against ground truth.

Files pair by stem: ``<stem>.tif`` and ``<stem>_masks.tif`` (``.tiff`` and ``.png`` too)
name the same image in either folder. Prints per-image and pooled AP (TP / (TP + FP + FN)),
F1, precision, recall and mean matched IoU at each IoU threshold, as a table or as JSON.
Files without a partner, and files that cannot be read, are named on stderr; the rest are
still scored (exit 1 then, 0 when every file was paired and read, 2 for a usage error).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..core.pairing import mask_stem
from . import EXIT_OK, EXIT_PARTIAL, EXIT_USAGE

__all__ = ["collect", "format_table", "mask_stem", "parse_thresholds", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "eval", help="score predicted masks against ground truth (AP, F1, IoU)",
        description="Score predicted label images against ground-truth label images. Files pair by stem "
                    "(<stem>.tif or <stem>_masks.tif, .tiff and .png too). AP = TP / (TP + FP + FN), the "
                    "convention of the 2018 Data Science Bowl, Cellpose and StarDist.")
    p.add_argument("--gt", required=True, type=Path, metavar="DIR", help="folder of ground-truth label images")
    p.add_argument("--pred", required=True, type=Path, metavar="DIR", help="folder of predicted label images")
    p.add_argument("--thresholds", default="0.5,0.75,0.9", metavar="T,...",
                   help="IoU thresholds, comma-separated (default 0.5,0.75,0.9)")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    p.set_defaults(func=run)
    return p


def collect(folder: Path) -> tuple[dict[str, Path], list[tuple[Path, str]]]:
    """Mask files directly in ``folder`` by stem (``tasks.evaluate.collect_masks``)."""
    from ..tasks.evaluate import collect_masks

    return collect_masks(folder)


def parse_thresholds(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(s) for s in text.replace(" ", "").split(",") if s)
    except ValueError as exc:
        raise ValueError(f"--thresholds takes numbers such as 0.5,0.75, not '{text}'") from exc
    if not values or any(not 0.0 < t <= 1.0 for t in values):
        raise ValueError(f"--thresholds must be IoU values in (0, 1], not '{text}'")
    return values


def run(args: argparse.Namespace) -> int:
    try:
        thresholds = parse_thresholds(args.thresholds)
    except ValueError as exc:
        print(f"efficell eval: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for flag, folder in (("--gt", args.gt), ("--pred", args.pred)):
        if not folder.is_dir():
            print(f"efficell eval: error: {flag} {folder}: not a folder", file=sys.stderr)
            return EXIT_USAGE

    from ..tasks.evaluate import NotScored, score_folders

    rows: list[dict[str, Any]] = []
    problems: list[tuple[Path, str]] = []
    events = score_folders(args.gt, args.pred, thresholds)
    while True:
        try:
            ev = next(events)
        except StopIteration as stop:
            pooled = stop.value
            break
        if isinstance(ev, NotScored):
            print(f"error: {ev.path}: {ev.reason}", file=sys.stderr)
            problems.append((ev.path, ev.reason))
        else:
            rows.append({"stem": ev.stem, "gt": str(ev.gt), "pred": str(ev.pred), "scores": ev.scores})
    failed = len(problems)

    if not rows:
        print(f"error: {args.gt}: no ground-truth / prediction pairs could be scored", file=sys.stderr)
        return EXIT_PARTIAL
    if args.json:
        doc = {
            "gt_dir": str(args.gt), "pred_dir": str(args.pred), "thresholds": list(thresholds),
            "n_images": len(rows),
            "pooled": {str(t): s.to_dict() for t, s in pooled.items()},
            "per_image": [{**{k: v for k, v in r.items() if k != "scores"},
                           "scores": {str(t): s.to_dict() for t, s in r["scores"].items()}} for r in rows],
            "problems": [{"path": str(p), "reason": why} for p, why in problems],
        }
        print(json.dumps(doc, indent=1, allow_nan=False))
    else:
        print(format_table(rows, pooled, thresholds))
    return EXIT_PARTIAL if failed else EXIT_OK


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def format_table(rows: list[dict[str, Any]], pooled: dict[float, Any], thresholds: tuple[float, ...]) -> str:
    """Per-image AP at each threshold, then pooled counts and scores per threshold."""
    first = thresholds[0]
    width = max([len("pooled")] + [len(r["stem"]) for r in rows])
    heads = [f"AP@{t:g}" for t in thresholds] + [f"F1@{first:g}", f"IoU@{first:g}"]
    lines = [f"{'image':<{width}}  {'true':>6} {'pred':>6}  " + " ".join(f"{h:>8}" for h in heads)]
    for r in rows:
        s = r["scores"]
        vals = [_fmt(s[t].ap) for t in thresholds] + [_fmt(s[first].f1), _fmt(s[first].mean_matched_iou)]
        lines.append(f"{r['stem']:<{width}}  {s[first].n_true:>6} {s[first].n_pred:>6}  " + " ".join(f"{v:>8}" for v in vals))
    p = pooled
    vals = [_fmt(p[t].ap) for t in thresholds] + [_fmt(p[first].f1), _fmt(p[first].mean_matched_iou)]
    lines.append(f"{'pooled':<{width}}  {p[first].n_true:>6} {p[first].n_pred:>6}  " + " ".join(f"{v:>8}" for v in vals))
    lines.append("")
    lines.append(f"pooled over {len(rows)} image(s):")
    lines.append(f"{'IoU':>5} {'TP':>7} {'FP':>7} {'FN':>7} {'AP':>7} {'prec':>7} {'recall':>7} {'F1':>7} {'mIoU':>7}")
    for t in thresholds:
        s = p[t]
        lines.append(f"{t:>5g} {s.tp:>7} {s.fp:>7} {s.fn:>7} {s.ap:>7.3f} {s.precision:>7.3f} {s.recall:>7.3f} "
                     f"{s.f1:>7.3f} {_fmt(s.mean_matched_iou):>7}")
    return "\n".join(lines)
