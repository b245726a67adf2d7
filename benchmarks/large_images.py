"""Peak memory and time of segmenting large images (2k, 5k, 10k square) on the CPU.

Each size runs in a fresh subprocess so its peak RSS (``VmHWM``) is its own: read a
synthetic uncompressed uint16 TIFF of blob-shaped cells, segment it with
``Segmenter.segment`` (uncompressed TIFFs above ``images.MEMMAP_MIN_BYTES`` are memory-mapped;
images above ``strips.STRIP_PIXELS`` model-scale pixels go through
the strip path automatically), and report seconds, peak RSS and the cell count.

Models (``--runs MODEL:SIZE ...``):

- ``compact``: the built-in model when ``resources/models/`` holds its weights; otherwise the
  full-size compact encoder with *random* weights (same architecture and cost; the cell count
  is then meaningless, memory and time are not).
- ``fake``: a per-pixel stand-in for the network (no network cost), to measure the memory and
  time of everything else (reading, normalising, tiling, blending, watershed, stitching) on
  images whose network time would be too long for a shared CPU. The network's own memory is
  per tile, hence the same for every image size.

Usage:  python benchmarks/large_images.py [--runs compact:2000 compact:5000 fake:10000]
            [--threads 2] [--measure] [--out benchmarks/results/large_images.md]
"""

from __future__ import annotations

import argparse
import json
import os
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


def build_segmenter(threads: int, kind: str = "compact"):  # noqa: ANN201
    import torch

    torch.set_num_threads(threads)
    from efficell_app.core.pipeline import Segmenter, default_adapter_path

    if kind == "fake":
        seg, _ = build_segmenter(threads, "random")
        from efficell_app.core.standins import PointwiseModel

        seg.predictor.model = PointwiseModel()
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


class PeakSampler:
    """Samples the process's resident memory (``VmRSS``) every ``interval`` s in a thread and
    keeps, at the highest sample, the innermost EffiCell frames of the main thread: where the
    peak comes from."""

    def __init__(self, interval: float = 0.05) -> None:
        import threading

        self.interval = interval
        self.peak_mb = 0.0
        self.where = ""
        self._main = threading.main_thread().ident
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import traceback

        while not self._stop.wait(self.interval):
            rss = status_mb("VmRSS")
            if rss > self.peak_mb:
                self.peak_mb = rss
                frame = sys._current_frames().get(self._main)
                if frame is not None:
                    stack = [f for f in traceback.extract_stack(frame) if "efficell_app" in f.filename]
                    self.where = " < ".join(f"{Path(f.filename).stem}.{f.name}:{f.lineno}" for f in reversed(stack[-3:]))


def status_mb(key: str) -> float:
    """A memory figure of this process from /proc/self/status (VmRSS, VmHWM), in MB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 if key == "VmHWM" else 0.0


def run_one(path: Path, threads: int, diameter: float, kind: str, measure: bool = False) -> dict:
    """In this (fresh) process: read, segment (and measure), report."""
    import numpy as np

    from efficell_app.core.images import read_image
    from efficell_app.core.strips import needs_strips

    seg, model = build_segmenter(threads, kind)
    base = status_mb("VmHWM")
    t0 = time.perf_counter()
    with PeakSampler() as sampler:
        img = read_image(path)
        t_read = time.perf_counter() - t0
        res = seg.segment(img, diameter=diameter)
        t_all = time.perf_counter() - t0
    peak_seg = status_mb("VmHWM")
    row_measure = {}
    if measure:
        from efficell_app.core.measure import measure_cells

        t1 = time.perf_counter()
        with PeakSampler() as msampler:
            measure_cells(res.labels, img)
        row_measure = {"measure_s": round(time.perf_counter() - t1, 1), "peak_rss_measure_mb": round(status_mb("VmHWM")),
                       "measure_peak_where": msampler.where}
    h, w = img.shape
    return {"size": f"{h} x {w}", "model": model, "seconds": round(t_all, 1), "read_s": round(t_read, 1),
            "peak_rss_mb": round(peak_seg), "rss_before_mb": round(base), "cells": res.n_cells,
            "memmap": isinstance(img.data, np.memmap), "peak_where": sampler.where,
            "strips": bool(needs_strips(h, w, res.scale, seg.strip_pixels)), "settings_strips": res.settings.get("strips"),
            "cpu_s": round(time.process_time(), 1), **row_measure}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", nargs="+", default=["compact:2000", "compact:5000", "compact:10000"], help="MODEL:SIZE ...")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--diameter", type=float, default=24.0, help="cell diameter given to segment() (24 = no rescale)")
    ap.add_argument("--measure", action="store_true", help="also measure the cells (measure_cells) and report its peak")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "large_images.md")
    ap.add_argument("--one", type=Path, help=argparse.SUPPRESS)  # internal: run one image in this process
    ap.add_argument("--kind", default="compact", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.one, args.threads, args.diameter, args.kind, args.measure)))
        return 0
    store = args.out.with_suffix(".json")  # rows of every run: sizes may be measured by separate commands
    command = "python benchmarks/large_images.py " + " ".join(argv if argv is not None else sys.argv[1:])
    with tempfile.TemporaryDirectory() as tmp:
        for run in args.runs:
            kind, n = run.split(":")[0], int(run.split(":")[1])
            path = Path(tmp) / f"blobs_{n}.tif"
            if not path.exists():
                make_image(path, n)
            cmd = [sys.executable, __file__, "--one", str(path), "--threads", str(args.threads), "--diameter", str(args.diameter),
                   "--kind", kind] + (["--measure"] if args.measure else [])
            load0 = os.getloadavg()[0]
            out = subprocess.run(cmd, capture_output=True, text=True, check=False)
            info = {"kind": kind, "load": f"{load0:.1f} -> {os.getloadavg()[0]:.1f}", "command": command,
                    "date": time.strftime("%Y-%m-%d %H:%M")}
            if out.returncode != 0:
                print(out.stderr[-2000:], file=sys.stderr)
                row = {"size": f"{n} x {n}", **info, "error": out.stderr.strip().splitlines()[-1] if out.stderr else "failed"}
            else:
                row = {**json.loads(out.stdout.strip().splitlines()[-1]), **info}
            print(row, flush=True)
            key = f"{kind}:{n}"  # replaces an earlier row of this model and size (re-read: runs may overlap)
            rows = [r for r in (json.loads(store.read_text()) if store.exists() else [])
                    if f"{r.get('kind')}:{r['size'].split(' x ')[0]}" != key] + [row]
            rows.sort(key=lambda r: (r.get("kind") == "fake", int(r["size"].split(" x ")[0])))
            args.out.parent.mkdir(parents=True, exist_ok=True)
            store.write_text(json.dumps(rows, indent=1))
            write_table(rows, args)  # after each run: a long run still leaves the finished rows
    return 0


def write_table(rows: list[dict], args: argparse.Namespace) -> None:
    from benchmarks.report import machine, write_report
    from efficell_app.core.images import MEMMAP_MIN_BYTES
    from efficell_app.core.strips import STRIP_PIXELS

    lines = [
        "## Large images: peak memory and time (CPU)",
        "",
        f"Machine: {machine()}; {args.threads} torch threads; the load average "
        f"(1 min, before -> after each run; 2.0 = both cores busy) is in the table. Date {time.strftime('%Y-%m-%d')}.",
        "Commands (each row also names its own): "
        + ", ".join(f"`{c}`" for c in dict.fromkeys(r.get("command", "") for r in rows) if c) + ".",
        "",
        f"Synthetic uint16 blob images written as uncompressed TIFF, segmented by `Segmenter.segment` with the diameter "
        f"given ({args.diameter:g} px: no rescale). Uncompressed TIFFs of at least {MEMMAP_MIN_BYTES // 2**20} MiB are "
        f"memory-mapped by `read_image`; images above {STRIP_PIXELS:,} model-scale pixels are segmented in strips "
        "(`efficell_app/core/strips.py`). Peak RSS is `VmHWM` of a fresh process per image (Python, torch, the model, "
        "the image's pages read from the file, labels and every temporary); 'peak at' names the code running when a "
        "50 ms sampler saw the highest RSS.",
        "",
        "| image | model | memory-mapped | strips | time (s) | CPU (s) | peak RSS (MB) | RSS before (MB) | cells | load | date | peak at |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['size']} | {r.get('kind', '')} | | | failed: {r['error']} | | | | | {r.get('load', '')} | "
                         f"{r.get('date', '')} | |")
            continue
        sp = r.get("settings_strips")
        strips = f"yes ({sp['core_rows']} + 2 x {sp['margin']} rows)" if sp else "no"
        lines.append(f"| {r['size']} | {r['model']} | {'yes' if r.get('memmap') else 'no'} | {strips} | {r['seconds']} | "
                     f"{r.get('cpu_s', '')} | {r['peak_rss_mb']} | {r['rss_before_mb']} | {r['cells']} | {r.get('load', '')} | "
                     f"{r.get('date', '')} | `{r.get('peak_where', '')}` |")
    if any("measure_s" in r for r in rows):
        lines += ["", "Measuring the cells afterwards (`measure_cells`, shape and intensity):", "",
                  "| image | measure (s) | peak RSS incl. measuring (MB) | peak at |", "|---|---:|---:|---|"]
        lines += [f"| {r['size']} | {r['measure_s']} | {r['peak_rss_measure_mb']} | `{r.get('measure_peak_where', '')}` |"
                  for r in rows if "measure_s" in r]
    if any("stand-in" in str(r.get("model", "")) for r in rows):
        lines += ["", "Per-pixel stand-in: everything but the network (whose memory is per tile, so independent of the "
                  "image size); add the network time per 512 x 512 tile measured above times the number of tiles."]
    if any("random" in str(r.get("model", "")) for r in rows):
        lines += ["", "Random weights: the time and memory are those of the real architecture; the cell counts are not meaningful."]
    lines += ["", "The strip path's memory per strip depends on the image width, not its height (strips of about "
              "`strips.WINDOW_PIXELS` pixels); the 10k-specific parts are the raw image (200 MB of file pages for "
              "uint16) and the int32 labels (400 MB). Times are dominated by the shared CPU (see the load column and "
              "compare CPU seconds with wall seconds)."]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    if args.out.parent.resolve() == (REPO / "benchmarks" / "results").resolve():
        write_report()


if __name__ == "__main__":
    raise SystemExit(main())
