"""How fast are per-cell measurements? Prints a markdown snippet for docs/benchmarks.md.

1. The 174 image/mask pairs of ../shared/data: read image + mask, measure every cell,
   then write one Excel workbook of all of them (what ``efficell measure`` does).
2. A synthetic 4096 x 4096 uint16 image with 10,000 cells: ``measure_cells`` alone.

Usage:  python benchmarks/measure_speed.py [--data DIR] [--out benchmarks/results/measure.md]
"""

from __future__ import annotations

import argparse
import os
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
from efficell_app.core.measure import measure_cells, summarize_image  # noqa: E402


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=None, help="also write the snippet to this file")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    shared = bench_shared(args.data)
    synth = bench_synthetic(args.repeats)
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
        "",
    ])
    print(snippet)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(snippet + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
