"""Validation AP of built-in training runs against training steps: a plot and a section of docs/benchmarks.md.

    QT_QPA_PLATFORM=offscreen python benchmarks/builtin_curve.py work/builtin_v2 [work/frac25:"25 % of train" ...]

Reads each run folder's ``history.json`` / ``train_meta.json`` (written by
``python -m efficell_app.core.builtin_training``), draws mean validation AP@0.5 (and, for the first
run, each dataset's) against steps into ``docs/images/builtin_validation_curve.png`` and writes the
table of every validation into the ``builtin_training`` section. Validation: the validation part of
split v2 at the annotated cell diameter, fixed watershed thresholds (those of the phase-2 model).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.report import ROOT, write_section  # noqa: E402

NAMES = {"dsb2018_fluo": "DSB2018", "monuseg": "MoNuSeg", "usiigaci_phase": "Usiigaci"}
COLOURS = {"mean": (20, 20, 20), "dsb2018_fluo": (31, 119, 180), "monuseg": (214, 39, 40), "usiigaci_phase": (44, 160, 44)}
EXTRA = [(148, 103, 189), (255, 127, 14), (140, 86, 75)]


def load_run(folder: Path) -> tuple[list[dict], dict]:
    hist = json.loads((folder / "history.json").read_text())
    meta = json.loads((folder / "train_meta.json").read_text()) if (folder / "train_meta.json").exists() else {}
    return [h for h in hist if "val" in h], meta


def plot(runs: list[tuple[str, list[dict]]], out: Path) -> None:
    import pyqtgraph as pg
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([])  # noqa: F841 - widgets need it
    pg.setConfigOptions(antialias=True, background="w", foreground="k")
    w = pg.PlotWidget()
    w.resize(900, 520)
    w.setLabel("bottom", "training step (batch of crops)")
    w.setLabel("left", "validation AP@0.5 (diameter given)")
    w.showGrid(x=True, y=True, alpha=0.3)
    w.getAxis("left").enableAutoSIPrefix(False)
    legend = w.addLegend(offset=(-10, 10))
    legend.setLabelTextSize("10pt")
    label0, vals0 = runs[0]
    steps = [v["step"] for v in vals0]
    for ds, name in NAMES.items():
        w.plot(steps, [v["val"][ds]["ap5"] for v in vals0], pen=pg.mkPen(COLOURS[ds], width=2), symbol="o", symbolSize=5,
               symbolBrush=COLOURS[ds], name=f"{name} ({label0})")
    w.plot(steps, [v["val"]["mean_ap5"] for v in vals0], pen=pg.mkPen(COLOURS["mean"], width=3), symbol="s", symbolSize=7,
           symbolBrush=COLOURS["mean"], name=f"mean ({label0})")
    for (label, vals), colour in zip(runs[1:], EXTRA):
        w.plot([v["step"] for v in vals], [v["val"]["mean_ap5"] for v in vals], pen=pg.mkPen(colour, width=3, style=Qt.PenStyle.DashLine),
               symbol="t", symbolSize=9, symbolBrush=colour, name=f"mean ({label})")
    app.processEvents()
    out.parent.mkdir(parents=True, exist_ok=True)
    w.grab().save(str(out))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run folder, optionally FOLDER:label")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "builtin_validation_curve.png")
    a = p.parse_args()
    runs, metas = [], []
    for spec in a.runs:
        folder, _, label = spec.partition(":")
        vals, meta = load_run(Path(folder))
        runs.append((label or Path(folder).name, vals))
        metas.append(meta)
    plot(runs, a.out)
    lines = ["## Built-in model: validation AP during training", "",
             f"Command: `python benchmarks/builtin_curve.py {' '.join(a.runs)}` · {time.strftime('%Y-%m-%d')}", "",
             "Validation part of split v2 (`resources/models/data_split_v2.json`: 67 DSB2018 images, 2 MoNuSeg slides = 8 tiles, "
             "5 Usiigaci sets = 20 tiles), cell diameter given, watershed thresholds fixed at those of the phase-2 model; pooled "
             "AP@0.5 per dataset and their mean (the checkpoint-selection criterion). The MoNuSeg and Usiigaci validation sources "
             "were training sources of split v1, so the phase-2 model (step 0 of a run started from it) saw them: its values "
             "there are flattered.", "",
             f"![validation AP against steps]({Path(os.path.relpath(a.out, ROOT / 'docs')).as_posix()})", ""]
    for (label, vals), meta in zip(runs, metas):
        phases = meta.get("phases", [])
        cfg = meta.get("config", {})
        hw = "; ".join(f"steps {ph.get('start_step')}–{ph.get('end_step')}: {ph.get('hardware')} ({ph.get('seconds', 0) / 60:.0f} min)"
                       for ph in phases)
        lines += [f"### {label}", "",
                  f"Recipe: batch {cfg.get('batch')}, peak LR {cfg.get('lr')}, {cfg.get('steps')} scheduled steps, "
                  f"{cfg.get('train_fraction', 1.0):.0%} of the training images, init `{cfg.get('init')}`, device {cfg.get('device')}. "
                  f"Hardware: {hw or 'n/a'}. Best: step {meta.get('best', {}).get('step')} "
                  f"(mean {meta.get('best', {}).get('mean_ap5')}).", "",
                  "| step | minutes | DSB2018 | MoNuSeg | Usiigaci | mean AP@0.5 | mean AP@0.75 |", "|---|---|---|---|---|---|---|"]
        best = meta.get("best", {}).get("step")
        for v in vals:
            m = v["val"]
            mark = "**" if v["step"] == best else ""
            lines.append(f"| {v['step']} | {v['t'] / 60:.0f} | {m['dsb2018_fluo']['ap5']:.3f} | {m['monuseg']['ap5']:.3f} | "
                         f"{m['usiigaci_phase']['ap5']:.3f} | {mark}{m['mean_ap5']:.3f}{mark} | {m['mean_ap75']:.3f} |")
        lines.append("")
    write_section("builtin_training", "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
