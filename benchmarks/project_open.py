"""How fast a large project opens: build one with N images (default 10,000), then time opening it.

    python benchmarks/project_open.py [--n 10000] [--dir FOLDER] [--repeat 5]

The project is built through the public API (``add_folder`` on N small real TIFF files, then
results for 10% and annotations for 2% of the images), so the index is what a user would
have. Timed, each in a fresh Python process (no warm caches inside the interpreter):

* ``open``: ``Project.open`` (lock, schema check, SQLite ``quick_check``) + ``list_sets``;
* ``open + list``: the same plus ``list_images()`` of all N images, what the GUI shows first;
* ``import``: importing ``efficell_app.project`` (paid once per app start);
* ``close + backup``: one change, then ``close()``, which makes the rolling backup of the index;
* ``repair``: ``efficell project repair`` of the project with its index emptied (0 bytes), once
  from the backups and label files, once from the label files alone (backups deleted).

Prints a Markdown table. Not run by CI.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

_PROBE = r"""
import json, sys, time
t0 = time.perf_counter()
from efficell_app.project import Project
t1 = time.perf_counter()
p = Project.open(sys.argv[1])
sets = p.list_sets()
t2 = time.perf_counter()
images = p.list_images()
t3 = time.perf_counter()
p.close()
print(json.dumps({"import": t1 - t0, "open": t2 - t1, "open_list": t3 - t1, "n": len(images), "sets": len(sets)}))
"""

_CLOSE = r"""
import json, sys, time
from efficell_app.project import Project
p = Project.open(sys.argv[1])
p.rename_set(p.list_sets()[0].name, "renamed " + str(time.time()))
t0 = time.perf_counter()
p.close()
print(json.dumps({"close_backup": time.perf_counter() - t0}))
"""


def repair(root: Path, keep_backups: bool) -> dict[str, float]:
    """Empty the index (as a crash while it was being replaced would) and time the repair."""
    from efficell_app.project import Project, store
    from efficell_app.project.repair import repair_project

    if not keep_backups:
        for b in store.backup_paths(root):
            b.unlink()
    (root / store.DB_NAME).write_bytes(b"")
    t0 = time.perf_counter()
    report = repair_project(root)
    seconds = time.perf_counter() - t0
    with Project.open(root) as p:
        n = len(p.list_images())
    return {"seconds": seconds, "images": n, **{k: float(v) for k, v in report.counts.items()}}


def build(root: Path, n: int, files: Path) -> dict[str, float]:
    import tifffile

    from efficell_app.project import Project

    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    per_plate = 500
    for i in range(n):
        d = files / f"plate{i // per_plate:02d}"
        d.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(d / f"img{i:05d}.tif", rng.integers(0, 4096, (32, 32), dtype=np.uint16))
    t_files = time.perf_counter() - t0
    t0 = time.perf_counter()
    with Project.create(root) as p:
        plates = sorted(files.iterdir())
        for k, plate in enumerate(plates):
            p.add_folder(plate, f"experiment {k // 4}")
        t_add = time.perf_counter() - t0
        lab = np.zeros((32, 32), np.int32)
        lab[4:12, 4:12], lab[16:28, 10:20] = 1, 2
        t0 = time.perf_counter()
        ids = [r.id for r in p.list_images()]
        ident = {"encoder": "efficell_compact", "encoder_sha256": "0" * 64, "adapter": "bench", "adapter_sha256": "1" * 64}
        run = p.start_run({"diameter": None}, ident)
        for i in ids[:: 10]:
            p.record_result(i, lab, {"diameter": 12.0}, ident, run_id=run)
        for i in ids[:: 50]:
            p.save_annotation(i, lab)
        t_derived = time.perf_counter() - t0
        n_images = len(ids)
    return {"make_files_s": t_files, "add_s": t_add, "results_annotations_s": t_derived, "n_images": n_images}


def probe(root: Path) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", _PROBE, str(root)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--dir", type=Path, default=None, help="where to build (default: a temporary folder)")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    base = args.dir or Path(tempfile.mkdtemp(prefix="efficell_bench_"))
    root, files = base / "project", base / "images"
    try:
        built = build(root, args.n, files)
        runs = [probe(root) for _ in range(args.repeat)]
        db_mb = (root / "project.efficell").stat().st_size / 1e6
        closes = [json.loads(subprocess.run([sys.executable, "-c", _CLOSE, str(root)], capture_output=True, text=True,
                                            check=True).stdout.strip().splitlines()[-1])["close_backup"]
                  for _ in range(args.repeat)]
        repaired = [repair(root, keep_backups=True), repair(root, keep_backups=False)]
    finally:
        if args.dir is None:
            shutil.rmtree(base, ignore_errors=True)
    med = {k: statistics.median(r[k] for r in runs) for k in ("import", "open", "open_list")}
    worst = {k: max(r[k] for r in runs) for k in ("open", "open_list")}
    print("| images | open (median / worst) | open + list all (median / worst) | import | index size |")
    print("|---|---|---|---|---|")
    print(f"| {runs[0]['n']:,} | {med['open'] * 1e3:.1f} / {worst['open'] * 1e3:.1f} ms "
          f"| {med['open_list'] * 1e3:.0f} / {worst['open_list'] * 1e3:.0f} ms | {med['import'] * 1e3:.0f} ms "
          f"| {db_mb:.1f} MB |")
    print(f"\nclose with one change (makes the rolling backup): {statistics.median(closes) * 1e3:.0f} ms median, "
          f"{max(closes) * 1e3:.0f} ms worst")
    for what, r in zip(("from backups + label files", "from label files alone"), repaired):
        print(f"repair of the emptied index {what}: {r['seconds']:.1f} s; {int(r['images']):,} images, "
              f"{int(r['annotations'])} annotation versions, {int(r['results'])} results back")
    print(f"\nbuilt with: {args.n:,} files in {built['make_files_s']:.1f} s; add_folder {built['add_s']:.1f} s "
          f"({built['add_s'] / max(1, built['n_images']) * 1e3:.2f} ms/image); "
          f"{len(range(0, args.n, 10))} results + {len(range(0, args.n, 50))} annotations in "
          f"{built['results_annotations_s']:.1f} s; {args.repeat} fresh-process probes")


if __name__ == "__main__":
    main()
