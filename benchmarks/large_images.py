"""Peak memory and time of segmenting large images (2k, 5k, 10k square) on the CPU.

Each size runs in a fresh subprocess so its peak RSS (``ru_maxrss``) is its own: read a
synthetic uncompressed uint16 TIFF of blob-shaped cells, segment it with
``Segmenter.segment`` (images above ``strips.STRIP_PIXELS`` model-scale pixels go through
the strip path automatically), and report seconds, peak RSS and the cell count.

Models (``--runs MODEL:SIZE ...``):

- ``compact``: the built-in model when ``resources/models/`` holds its weights; otherwise the
  full-size compact encoder with *random* weights (same architecture and cost; the cell count
  is then meaningless, memory and time are not).
- ``fake``: a per-pixel stand-in for the network (no network cost), to measure the memory and
  time of everything else (reading, normalising, tiling, blending, watershed, stitching) on
  images whose network time would be too long for a shared CPU. The network's own memory is
  per tile, hence the same for every image size.

Usage:  nice -n 15 python benchmarks/large_images.py [--runs compact:2000 compact:5000 fake:10000]
            [--threads 2] [--out benchmarks/results/large.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_image(path: Path, size: int, seed: int = 0) -> None:
    """Blob-shaped 'nuclei' (diameter ~20-28 px) on a noisy background, written as uncompressed TIFF."""
    import tifffile
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    tile = np.zeros((1000, 1000), np.float32)
    yy, xx = np.mgrid[-16:17, -16:17]
    for _ in range(900):
        r = rng.uniform(10, 14)
        cy, cx = rng.integers(16, 984, 2)
        blob = np.clip(1.2 - np.hypot(yy, xx) / r, 0, 1) ** 0.5
        np.maximum(tile[cy - 16:cy + 17, cx - 16:cx + 17], blob, out=tile[cy - 16:cy + 17, cx - 16:cx + 17])
    tile = ndi.gaussian_filter(tile, 1.0)
    reps = -(-size // 1000)
    img = np.tile(tile, (reps, reps))[:size, :size]
    img = (img * 3000 + 200 + rng.normal(0, 60, img.shape).astype(np.float32)).clip(0, 65535).astype(np.uint16)
    tifffile.imwrite(path, img)  # uncompressed, contiguous


class PixelModel:
    """Stand-in network: bright = cell interior, intensity = distance to the edge (1x1 convolutions)."""

    def __init__(self) -> None:
        import torch

        self.s = torch.nn.Conv2d(3, 3, 1)
        self.g = torch.nn.Conv2d(3, 3, 1)
        with torch.no_grad():
            self.s.weight.copy_(torch.tensor([[-12.0, 0, 0], [8.0, 0, 0], [0, 0, 0.0]])[:, :, None, None])
            self.s.bias.copy_(torch.tensor([2.0, 0.0, 0.5]))
            self.g.weight.copy_(torch.eye(3)[:, :, None, None])
            self.g.bias.zero_()

    def eval(self) -> PixelModel:
        return self

    def to(self, device: str) -> PixelModel:
        return self

    def __call__(self, x):  # noqa: ANN001, ANN204
        return {"sem": self.s(x), "geo": self.g(x)}


def build_segmenter(threads: int, kind: str = "compact"):  # noqa: ANN201
    import torch

    torch.set_num_threads(threads)
    from efficell_app.core.pipeline import Segmenter, default_adapter_path

    if kind == "fake":
        seg, _ = build_segmenter(threads, "random")
        seg.predictor.model = PixelModel()
        return seg, "per-pixel stand-in (no network)"
    if default_adapter_path().exists() and kind == "compact":
        return Segmenter.load(None, device="cpu"), "built-in"
    from efficell_app.core.encoders import build_encoder
    from efficell_app.core.model import EffiCellModel, build_adapters
    from efficell_app.core.model.adapter_io import AdapterMeta

    torch.manual_seed(0)
    enc = build_encoder("efficell_compact", weights=None)
    ad = build_adapters(enc.out_channels, enc.stride)
    meta = AdapterMeta(encoder="efficell_compact", encoder_sha256="random", in_channels=enc.out_channels,
                       stride=enc.stride, config=ad.config.to_dict(), name="random")
    return Segmenter(EffiCellModel(enc, ad), meta, "random", None, "cpu"), "efficell_compact, random weights"


def run_one(path: Path, threads: int, diameter: float, kind: str) -> dict:
    """In this (fresh) process: read, segment, report."""
    from efficell_app.core.images import read_image
    from efficell_app.core.strips import needs_strips

    seg, model = build_segmenter(threads, kind)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    img = read_image(path)
    t_read = time.perf_counter() - t0
    res = seg.segment(img, diameter=diameter)
    t_all = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    h, w = img.shape
    return {"size": f"{h} x {w}", "model": model, "seconds": round(t_all, 1), "read_s": round(t_read, 1),
            "peak_rss_mb": round(peak), "rss_before_mb": round(base), "cells": res.n_cells,
            "strips": bool(needs_strips(h, w, res.scale, seg.strip_pixels)), "settings_strips": res.settings.get("strips")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", nargs="+", default=["compact:2000", "compact:5000", "compact:10000"], help="MODEL:SIZE ...")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--diameter", type=float, default=24.0, help="cell diameter given to segment() (24 = no rescale)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "large.md")
    ap.add_argument("--one", type=Path, help=argparse.SUPPRESS)  # internal: run one image in this process
    ap.add_argument("--kind", default="compact", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.one, args.threads, args.diameter, args.kind)))
        return 0
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in args.runs:
            kind, n = run.split(":")[0], int(run.split(":")[1])
            path = Path(tmp) / f"blobs_{n}.tif"
            if not path.exists():
                make_image(path, n)
            cmd = [sys.executable, __file__, "--one", str(path), "--threads", str(args.threads), "--diameter", str(args.diameter),
                   "--kind", kind]
            out = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if out.returncode != 0:
                print(out.stderr[-2000:], file=sys.stderr)
                rows.append({"size": f"{n} x {n}", "error": out.stderr.strip().splitlines()[-1] if out.stderr else "failed"})
                continue
            row = json.loads(out.stdout.strip().splitlines()[-1])
            print(row, flush=True)
            rows.append(row)
            write_table(rows, args)  # after each run: a long run still leaves the finished rows
    write_table(rows, args)
    return 0


def write_table(rows: list[dict], args: argparse.Namespace) -> None:
    from efficell_app.core.strips import STRIP_PIXELS

    lines = [
        "# Large images: peak memory and time (CPU)",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs (shared with other jobs), "
        f"{args.threads} torch threads, run under `nice -n 15`; date {time.strftime('%Y-%m-%d')}.",
        f"Synthetic uint16 blob images (uncompressed TIFF), diameter {args.diameter:g} px given (no rescale). "
        f"Images above {STRIP_PIXELS:,} model-scale pixels are segmented in strips (`efficell_app/core/strips.py`).",
        "Peak RSS is the whole process (Python, torch, model, image, labels), from `ru_maxrss` of a fresh subprocess.",
        "",
        "| image | model | strips | time (s) | read (s) | peak RSS (MB) | cells |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['size']} | | | failed: {r['error']} | | | |")
            continue
        sp = r.get("settings_strips")
        strips = f"yes ({sp['core_rows']} + 2 x {sp['margin']} rows)" if sp else "no"
        lines.append(f"| {r['size']} | {r['model']} | {strips} | {r['seconds']} | {r['read_s']} | {r['peak_rss_mb']} | {r['cells']} |")
    if any("stand-in" in str(r.get("model", "")) for r in rows):
        lines += ["", "Per-pixel stand-in: everything but the network (whose memory is per tile, so independent of the "
                  "image size); add the network time per 512 x 512 tile measured above times the number of tiles."]
    if any("random" in str(r.get("model", "")) for r in rows):
        lines += ["", "Random weights: the time and memory are those of the real architecture; the cell counts are not meaningful."]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    raise SystemExit(main())
