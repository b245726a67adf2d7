"""How long the window's viewer holds the event loop with a large image (a slide region).

A fresh process shows the synthetic cells of ``measure_speed.py`` tiled to SIZE² (uint16, one
channel) in the real ``ImageViewer`` (offscreen Qt) and times, each followed by the repaint it
causes: showing the image, showing its labels (colours chosen so that touching cells differ,
the filled overlay), switching to outlines and back, selecting a cell, and zooming to 1:1. Each
step runs in the window's thread, so its time is how long the window does not answer.
Writes ``benchmarks/results/viewer_large.md``.

    python benchmarks/viewer_large.py [--size 8192] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

STEPS = ("show the image", "show its labels (filled)", "outlines", "back to filled", "select a cell", "zoom to 1:1")


def one_run(size: int) -> dict[str, float]:
    """In this (fresh) process: the steps' seconds."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    from benchmarks.measure_speed import tiled_cells
    from efficell_app.gui.viewer import ImageViewer

    labels, image = tiled_cells(size)
    app = QApplication.instance() or QApplication([])
    viewer = ImageViewer()
    viewer.resize(1200, 800)
    viewer.show()
    app.processEvents()
    h, w = labels.shape
    actions = (lambda: viewer.set_image(image[None], ("ch0",)), lambda: viewer.set_labels(labels),
               lambda: viewer.overlay_box.setCurrentText("Outline"), lambda: viewer.overlay_box.setCurrentText("Fill"),
               lambda: viewer.select_cell(int(labels[h // 2, w // 2]) or 1, center=True),
               lambda: viewer.view.setRange(xRange=(w // 2, w // 2 + 1000), yRange=(h // 2, h // 2 + 700), padding=0))
    out = {}
    for name, act in zip(STEPS, actions):
        t = time.perf_counter()
        act()
        viewer.repaint()
        app.processEvents()
        out[name] = time.perf_counter() - t
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=8192)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # internal: one run, JSON on stdout
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(one_run(args.size)))
        return 0
    from benchmarks.report import load_average, machine, write_section

    runs = []
    for _ in range(args.repeats):
        out = subprocess.run([sys.executable, __file__, "--one", "--size", str(args.size)], capture_output=True,
                             text=True, check=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    command = "python benchmarks/viewer_large.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        f"## The viewer with a large image: how long the window does not answer ({args.size}²)",
        "",
        f"Command: `{command.strip()}` · machine: {machine()} · load average at end {load_average()} · "
        f"{time.strftime('%Y-%m-%d')} · offscreen Qt, a 1200 x 800 viewer.",
        "",
        f"Synthetic cells (`measure_speed.py`'s, tiled: {args.size}² uint16, one channel, about "
        f"{10_000 * (args.size / 4096) ** 2:,.0f} cells). Each step is timed with the repaint it causes, in a fresh "
        f"process per run ({args.repeats} runs: median, worst).",
        "",
        "| step | median (s) | worst (s) |",
        "|---|---:|---:|",
    ]
    for step in STEPS:
        values = [r[step] for r in runs]
        lines.append(f"| {step} | {statistics.median(values):.2f} | {max(values):.2f} |")
    write_section("viewer_large", "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
