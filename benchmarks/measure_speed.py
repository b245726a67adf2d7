"""How fast are per-cell measurements? Prints a markdown snippet for docs/benchmarks.md.

1. The 174 image/mask pairs of ../shared/data: read image + mask, measure every cell,
   then write one Excel workbook of all of them (what ``efficell measure`` does).
2. A synthetic 4096 x 4096 uint16 image with 10,000 cells: ``measure_cells`` alone.
3. Memory: that image tiled to 16384 x 16384 (160,000 cells), ``measure_cells`` in a fresh
   process; its peak RSS above what the image and labels hold (measured in row bands,
   ``measure.BAND_PIXELS``), and the same with one band (the whole image at once).

Usage:  python benchmarks/measure_speed.py [--data DIR] [--large 16384] [--out benchmarks/results/measure.md]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from efficell_app.core.export import write_xlsx  # noqa: E402
from efficell_app.core.images import ImageData, read_image, read_mask  # noqa: E402
from efficell_app.core.measure import BAND_PIXELS, measure_cells, summarize_image  # noqa: E402

BAND_PIXELS_TEXT = f"{BAND_PIXELS / 1e6:g} million"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def synthetic_cells(n: int = 10_000, size: int = 4096, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` ellipses of 8-18 px radius on a jittered grid, and a noisy uint16 image."""
    from skimage.draw import ellipse

    rng = np.random.default_rng(seed)
    labels = np.zeros((size, size), np.int32)
    g = int(np.ceil(np.sqrt(n)))
    step = size / g
    k = 0
    for i in range(g):
        for j in range(g):
            if k >= n:
                break
            cy = (i + 0.5) * step + rng.uniform(-step / 4, step / 4)
            cx = (j + 0.5) * step + rng.uniform(-step / 4, step / 4)
            rr, cc = ellipse(cy, cx, rng.uniform(8, 18), rng.uniform(8, 18), shape=labels.shape,
                             rotation=rng.uniform(0, np.pi))
            k += 1
            labels[rr, cc] = k
    image = (rng.normal(1000, 50, labels.shape) + (labels > 0) * 500).clip(0, 65535).astype(np.uint16)
    return labels, image


def tiled_cells(size: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`synthetic_cells` tiled to ``size`` x ``size`` (each copy's cells with their own ids)."""
    labels, image = synthetic_cells()
    t = labels.shape[0]
    reps = -(-size // t)
    n = int(labels.max())
    big = np.zeros((size, size), np.int32)
    for i in range(reps):
        for j in range(reps):
            tile = labels[: size - i * t, : size - j * t]
            big[i * t:(i + 1) * t, j * t:(j + 1) * t] = np.where(tile > 0, tile + (i * reps + j) * n, 0)
    return big, np.tile(image, (reps, reps))[:size, :size].copy()


def bench_shared(data: Path) -> dict[str, float]:
    import pandas as pd

    pairs = sorted((p, p.parent.parent / "masks" / p.name) for p in data.glob("*/images/*.tif"))
    t0 = time.perf_counter()
    tables, rows, t_measure = [], [], 0.0
    for img_path, mask_path in pairs:
        img = read_image(img_path)
        labels = read_mask(mask_path)
        t = time.perf_counter()
        df = measure_cells(labels, img, image_name=f"{img_path.parent.parent.name}/{img_path.name}", mask_path=mask_path)
        t_measure += time.perf_counter() - t
        tables.append(df)
        rows.append(summarize_image(df, len(df), img.pixel_size_um, list(img.channel_names), df["image"].iloc[0]))
    t_read_measure = time.perf_counter() - t0
    cells = pd.concat(tables, ignore_index=True)
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        write_xlsx(cells, pd.DataFrame(rows), {"benchmark": "measure_speed"}, Path(tmp) / "all.xlsx")
    t_xlsx = time.perf_counter() - t
    return {"pairs": len(pairs), "cells": len(cells), "measure_s": t_measure, "read_measure_s": t_read_measure,
            "xlsx_s": t_xlsx, "total_s": t_read_measure + t_xlsx}


def bench_synthetic(repeats: int = 3) -> dict[str, float]:
    labels, image = synthetic_cells()
    img = ImageData(image[None])
    times = []
    n = 0
    for _ in range(repeats):
        t = time.perf_counter()
        n = len(measure_cells(labels, img))
        times.append(time.perf_counter() - t)
    return {"cells": n, "min_s": min(times), "median_s": statistics.median(times), "repeats": repeats}


def _peak_mb() -> float:
    """This process's peak RSS (Linux ``VmHWM``; elsewhere the lifetime peak)."""
    try:
        line = next(ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith("VmHWM"))
        return int(line.split()[1]) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak() -> None:
    """Start the peak from the present RSS (Linux), so that building the image does not count."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def large_in_this_process(size: int, whole: bool) -> dict[str, float]:
    """``measure_cells`` of the 4096² synthetic image tiled to ``size``²; peak RSS before and after."""
    import efficell_app.core.measure as measure

    big, image = tiled_cells(size)
    img = ImageData(image[None])
    del image
    if whole:
        measure.BAND_PIXELS = size * size
    _reset_peak()
    before = _peak_mb()
    t = time.perf_counter()
    cells = len(measure_cells(big, img))
    return {"cells": cells, "s": time.perf_counter() - t, "before_mb": before, "peak_mb": _peak_mb(),
            "image_mb": (big.nbytes + img.data.nbytes) / 2**20}


def bench_large(size: int) -> dict[str, dict[str, float]]:
    """:func:`large_in_this_process` in fresh processes: in bands (as shipped), and whole."""
    out = {}
    for how in ("bands", "whole"):
        cmd = [sys.executable, __file__, "--one-large", str(size)] + (["--whole"] if how == "whole" else [])
        out[how] = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=None, help="also write the snippet to this file")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--large", type=int, default=16384, help="side of the large image (0: skip it)")
    ap.add_argument("--one-large", type=int, help=argparse.SUPPRESS)  # internal: one large run, JSON on stdout
    ap.add_argument("--whole", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one_large:
        print(json.dumps(large_in_this_process(args.one_large, args.whole)))
        return 0
    shared = bench_shared(args.data)
    synth = bench_synthetic(args.repeats)
    large = bench_large(args.large) if args.large else None
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    snippet = "\n".join([
        "## Per-cell measurements (`efficell measure`)",
        "",
        f"Machine: {cpu_model()}, {usable_cores()} usable core(s), load average {load:.1f} at start; "
        f"Python {platform.python_version()}, numpy {np.__version__}.",
        f"Command: `python benchmarks/measure_speed.py` ({time.strftime('%Y-%m-%d')}).",
        "",
        "| case | cells | time |",
        "|---|---:|---:|",
        f"| {shared['pairs']} image/mask pairs of `../shared/data`: read + measure | {shared['cells']:,} | "
        f"{shared['read_measure_s']:.1f} s (measure alone {shared['measure_s']:.1f} s) |",
        f"| same, then one .xlsx of all cells | {shared['cells']:,} | {shared['xlsx_s']:.1f} s "
        f"(total {shared['total_s']:.1f} s) |",
        f"| synthetic 4096 x 4096 uint16, `measure_cells` only | {synth['cells']:,} | "
        f"{synth['median_s']:.2f} s median of {synth['repeats']} (best {synth['min_s']:.2f} s) |",
    ])
    if large:
        b, w = large["bands"], large["whole"]
        snippet += "\n" + "\n".join([
            f"| synthetic {args.large} x {args.large} uint16 (the above, tiled), `measure_cells` only | "
            f"{b['cells']:,} | {b['s']:.1f} s |",
            "",
            f"Memory of measuring the {args.large}² image (a fresh process each; peak RSS, Linux `VmHWM`, and what "
            f"it adds to the {b['before_mb']:,.0f} MB that Python, the image and the labels ({b['image_mb']:,.0f} MB) held "
            "before):",
            "",
            "| how | time | peak RSS | added by measuring |",
            "|---|---:|---:|---:|",
            f"| in row bands of about {BAND_PIXELS_TEXT} pixels (as shipped) | {b['s']:.1f} s | "
            f"{b['peak_mb']:,.0f} MB | {b['peak_mb'] - b['before_mb']:,.0f} MB |",
            f"| the whole image at once (one band) | {w['s']:.1f} s | {w['peak_mb']:,.0f} MB | "
            f"{w['peak_mb'] - w['before_mb']:,.0f} MB |",
            "",
            "Both give the same table (each cell is measured whole in the band of its top row; "
            "`tests/core/test_measure.py` checks it to the last bit).",
        ])
    snippet += "\n"
    print(snippet)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(snippet + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
