"""Seconds per image for EffiCell's built-in model and Cellpose 3 on the same images, same run.

    pip install "cellpose==3.1.1.2"      # benchmark-only dependency (pip install -e ".[bench]")
    python benchmarks/speed.py [--threads 2] [--repeats 3]

Images: mosaics of real DSB2018 fluorescence test images at 512², 1024² and 2048². Both tools
segment at their native object size (EffiCell diameter 24 px, Cellpose diameter 30 px: no
rescaling), CPU, the given number of threads. Cellpose's published weights cannot be downloaded
here; its network (the cyto3 CPnet architecture) runs with random weights, which does not change
its network time. Its mask dynamics time can depend on the weights, so the Cellpose network-only
time (compute_masks=False) is reported too, and the ratio is given against both.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.mosaic import tile_mosaic  # noqa: E402
from benchmarks.report import load_average, machine, write_section  # noqa: E402

SIZES = (512, 1024, 2048)


def mosaic(data: Path, size: int) -> np.ndarray:
    """A size x size uint8 image tiled from the held-out DSB2018 test images (real content)."""
    from efficell_app.core.images import normalize, read_image
    from efficell_app.core.resources import models_dir

    stems = json.loads((models_dir() / "data_split.json").read_text())["split"]["dsb2018_fluo"]["test"]
    tiles = []
    for s in stems:
        img = read_image(data / "dsb2018_fluo" / "images" / f"{s}.tif")
        tiles.append((np.clip(normalize(img.data)[0], 0, 1) * 255).astype(np.uint8))
    return tile_mosaic(tiles, size)


def timed(fn, repeats: int) -> float:  # noqa: ANN001
    fn()  # warm-up (first call allocates, JIT-like kernel selection)
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main() -> int:
    import torch

    p = argparse.ArgumentParser()
    p.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    torch.set_num_threads(a.threads)

    from efficell_app.core.images import ImageData
    from efficell_app.core.pipeline import Segmenter

    seg = Segmenter.load(None, device="cpu")
    try:
        from cellpose import models as cp_models
        import cellpose

        cp = cp_models.CellposeModel(gpu=False, pretrained_model=False)
        cp_version = cellpose.version if hasattr(cellpose, "version") else "3.1.1.2"
    except ImportError:
        cp = None
        cp_version = None
    rows, raw = [], {}
    for size in SIZES:
        arr = mosaic(a.data, size)
        img = ImageData(arr[None])
        r = {"efficell": timed(lambda: seg.segment(img, diameter=seg.target_diameter), a.repeats),
             "efficell_auto_diameter": timed(lambda: seg.segment(img), max(1, a.repeats - 1))}
        if cp is not None:
            x = arr.astype(np.float32)
            r["cellpose"] = timed(lambda: cp.eval(x, diameter=30.0, channels=[0, 0]), a.repeats)
            r["cellpose_network_only"] = timed(lambda: cp.eval(x, diameter=30.0, channels=[0, 0], compute_masks=False), a.repeats)
        raw[size] = r
        print(size, json.dumps(r), flush=True)
        if cp is not None:
            rows.append(f"| {size}² | {r['efficell']:.2f} | {r['efficell_auto_diameter']:.2f} | {r['cellpose']:.2f} | "
                        f"{r['cellpose_network_only']:.2f} | {r['cellpose'] / r['efficell']:.1f}x | {r['cellpose_network_only'] / r['efficell']:.1f}x |")
        else:
            rows.append(f"| {size}² | {r['efficell']:.2f} | {r['efficell_auto_diameter']:.2f} | n/a | n/a | n/a | n/a |")
    text = "\n".join([
        "## Segmentation speed on the CPU (built-in model vs Cellpose 3)", "",
        f"Command: `python benchmarks/speed.py --threads {a.threads} --repeats {a.repeats}` · machine: {machine()} · "
        f"torch threads {a.threads} · load average at end {load_average()} · {time.strftime('%Y-%m-%d')}", "",
        "Median seconds per image (after one warm-up), whole pipeline from the loaded image to the label image. "
        f"Cellpose {cp_version or '(not installed)'}, cyto3 network architecture with random weights (no download possible here).", "",
        "| image | EffiCell (diameter given) | EffiCell (diameter estimated) | Cellpose 3 (full) | Cellpose 3 (network only) | "
        "speed-up vs Cellpose full | speed-up vs Cellpose network only |",
        "|---|---|---|---|---|---|---|", *rows, "",
        "Goal (issue 4): 1024² at least 2x faster than Cellpose 3, and under 2 s.",
    ])
    write_section("speed", text)
    (Path(__file__).parent / "results" / "speed.json").write_text(json.dumps(raw, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
