"""Segmentation throughput on a Dask cluster of 1 and 2 local workers, next to the plain local
batch, and the scheduler's cost per task: the measurements docs/cluster.md extrapolates from.

    nice -n 19 python benchmarks/cluster.py [--n 200] [--diameter D] [--data ../shared/data]

The same N real images (../shared/data, DSB2018 fluorescence, the first N by name) are segmented
by the built-in model three ways, each process with one torch thread (scaling by processes;
on a loaded machine more threads per process than free cores make torch many times slower):
``core.batch.segment_files`` in this process, ``efficell segment --cluster local:1`` (one
worker process) and ``local:2`` (two worker processes). Each cluster is started and its model
loaded before the clock starts (a warm-up image); the time runs from submitting the batch to
``efficell_run.json`` written. Then the scheduler's own cost: N_EMPTY tasks that do nothing on
the 2 workers, and, per image, the worker time not spent in the task (scheduling, transfer,
waiting). Also what one image moves: its input, its mask and the result sent to the client.
Writes benchmarks/results/cluster.md (a section of docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import os
import pickle
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.report import load_average, machine, write_section  # noqa: E402

N_EMPTY = 2000


def _noop(i: int) -> int:
    return i


def local_batch(paths: list[Path], out: Path, diameter: float | None) -> dict:
    import torch

    from efficell_app.core.batch import BatchOptions, segment_files
    from efficell_app.tasks import load_segmenter

    torch.set_num_threads(1)  # one core, as each worker below: scaling by processes, not threads
    seg = load_segmenter(None, "cpu")
    list(segment_files(paths[:1], out / "warm", seg, BatchOptions(diameter=diameter)))
    load0 = load_average()
    t0 = time.perf_counter()
    events = list(segment_files(paths, out / "local", seg, BatchOptions(diameter=diameter)))
    wall = time.perf_counter() - t0
    return {"wall": wall, "task_s": [e.seconds for e in events], "ok": sum(e.ok for e in events),
            "load": f"{load0} -> {load_average()}"}


def cluster_batch(paths: list[Path], out: Path, workers: int, diameter: float | None) -> dict:
    from efficell_app.core.batch import BatchOptions
    from efficell_app.tasks.cluster import connect
    from efficell_app.tasks.cluster_segment import segment_files_on_cluster

    t_start = time.perf_counter()
    with connect(f"local:{workers}", torch_threads=1) as conn:
        list(segment_files_on_cluster(paths[:workers], out / f"warm{workers}", conn, BatchOptions(diameter=diameter),
                                      device="cpu"))  # every worker loads the model (the plugin) and sees an image
        startup = time.perf_counter() - t_start
        load0 = load_average()
        t0 = time.perf_counter()
        events = list(segment_files_on_cluster(paths, out / f"cluster{workers}", conn,
                                               BatchOptions(diameter=diameter), device="cpu"))
        wall = time.perf_counter() - t0
        load1 = load_average()
        empty = empty_tasks(conn.client) if workers == 2 else None
    task_s = [e.seconds for e in events]
    return {"wall": wall, "task_s": task_s, "ok": sum(e.ok for e in events), "startup": startup,
            "idle_per_image": (wall * workers - sum(task_s)) / len(paths), "empty": empty,
            "load": f"{load0} -> {load1}"}


def empty_tasks(client) -> dict:  # noqa: ANN001
    """Tasks that do nothing: what the scheduler, the client and the workers spend per task."""
    from distributed import as_completed

    client.map(_noop, range(50), pure=False)  # warm the function into the workers
    t0 = time.perf_counter()
    futures = client.map(_noop, range(N_EMPTY), pure=False)
    submitted = time.perf_counter() - t0
    for fut in as_completed(futures):
        fut.result()
    wall = time.perf_counter() - t0
    return {"n": N_EMPTY, "wall": wall, "per_task_ms": 1000 * wall / N_EMPTY, "submit_ms": 1000 * submitted / N_EMPTY}


def bytes_per_image(paths: list[Path], diameter: float | None, out: Path) -> dict:
    """Input read, mask written and result returned per image (on a sample, in this process)."""
    from efficell_app.core.batch import BatchOptions, run_key
    from efficell_app.tasks.cluster_worker import segment_file
    from efficell_app.tasks.segment import SegmentSettings, cached_segmenter

    settings = SegmentSettings(diameter=diameter, device="cpu", measure=None)
    opts = BatchOptions(diameter=diameter, overwrite=True)
    key = run_key(cached_segmenter(None, "cpu", "auto").identity, opts)
    sample = paths[:: max(1, len(paths) // 10)][:10]
    rows = []
    for p in sample:
        target = out / "bytes" / f"{p.stem}_masks.tif"
        target.parent.mkdir(parents=True, exist_ok=True)
        res = segment_file((p, None, None), target, settings, opts, key, run_id="bytes")
        rows.append((p.stat().st_size, target.stat().st_size, len(pickle.dumps(res)), res[0].n_cells))
    return {k: statistics.mean(r[i] for r in rows) for i, k in enumerate(("input", "mask", "result", "cells"))}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--diameter", type=float, default=None, help="default: estimated per image (the app's default)")
    a = p.parse_args()
    paths = sorted((a.data / "dsb2018_fluo" / "images").glob("*.tif"))[: a.n]
    if len(paths) < a.n:
        print(f"only {len(paths)} images in {a.data}", file=sys.stderr)
        return 1
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    t_all = time.perf_counter()
    out = Path(tempfile.mkdtemp(prefix="efficell_cluster_bench_"))
    try:
        runs = {"local batch (this process)": local_batch(paths, out, a.diameter)}
        print("local", runs["local batch (this process)"]["wall"], flush=True)
        for w in (1, 2):
            runs[f"cluster local:{w}"] = cluster_batch(paths, out, w, a.diameter)
            print(w, runs[f"cluster local:{w}"]["wall"], flush=True)
        moved = bytes_per_image(paths, a.diameter, out)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    total = time.perf_counter() - t_all
    cores = os.cpu_count()
    base = runs["local batch (this process)"]["wall"]
    rows = []
    for name, r in runs.items():
        idle = f"{r['idle_per_image']:.2f}" if "idle_per_image" in r else "–"
        startup = f"{r['startup']:.1f}" if "startup" in r else "–"
        rows.append(f"| {name} | {r['ok']}/{a.n} | {r['wall']:.1f} | **{60 * a.n / r['wall']:.1f}** | "
                    f"{base / r['wall']:.2f}x | {statistics.median(r['task_s']):.2f} | {idle} | {startup} | "
                    f"{r['load']} |")
    empty = runs["cluster local:2"]["empty"]
    diam = f"{a.diameter:g} px (given)" if a.diameter else "estimated per image (default)"
    lines = [
        "## Segmentation on a Dask cluster (`efficell segment --cluster`)", "",
        f"Command: `nice -n 19 python benchmarks/cluster.py --n {a.n}"
        + (f" --diameter {a.diameter:g}" if a.diameter else "") + f"` · machine: {machine()} · "
        f"{started} · total {total / 60:.1f} min · the load average (1 / 5 / 15 min, before -> after each run; "
        f"{cores}.0 = every core busy) is in the table: this machine is shared, so absolute times are indicative.", "",
        f"{a.n} DSB2018 fluorescence images (../shared/data, 256-696 px a side), built-in model, CPU, diameter "
        f"{diam}, one torch thread per process (this process for the local batch, each worker for the cluster). "
        "Time from submitting the batch to `efficell_run.json` written (masks, measurements.xlsx); the "
        "cluster's start and each worker's model load are in 'start-up' (not in the time). 'Idle per image' is "
        "worker time not spent inside the task: wall x workers / images - mean task time.", "",
        "| run | images ok | time (s) | images/min | vs local | median task (s) | idle per image (s) | "
        "start-up (s) | load |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
        *rows, "",
        f"Scheduler cost per task: {empty['n']} tasks that do nothing, on the 2 workers: "
        f"**{empty['per_task_ms']:.2f} ms per task** end to end ({1000 / empty['per_task_ms']:.0f} tasks/s; "
        f"submitting: {empty['submit_ms']:.2f} ms per task).", "",
        f"Moved per image (mean of a sample of 10): input read by a worker {moved['input'] / 1024:.0f} KiB, "
        f"mask written {moved['mask'] / 1024:.1f} KiB, result sent to the client (per-cell table and summary, "
        f"pickled) {moved['result'] / 1024:.1f} KiB for {moved['cells']:.0f} cells.", "",
        "docs/cluster.md works out 10, 100 and 1,000 workers from these numbers.",
    ]
    write_section("cluster", "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
