"""Training from the window vs ``efficell train``: same images, same engine, same adapter quality?

    python benchmarks/project_vs_cli.py [--dataset dsb2018_fluo] [--k 5] [--epochs 30]

1. A project is created with the first K training images of the dataset (resources/models/data_split.json);
   their expert masks go in through the window's mask importer (``core.mask_import.import_masks``) and
   are saved as the images' annotations, marked finished ("reviewed").
2. The window's training dialog (``TrainingDialog``, offscreen) trains on them: its own choices
   (built-in encoder, generalist adapter as the start, 20 % of each image held out), run in its
   background process, the adapter saved in the project's library.
3. ``efficell train`` (a subprocess) trains on the same image files and mask files.
Both run for the same number of epochs (a time budget would let CPU load decide the step count) with
the same seed, and both adapters are evaluated on the dataset's held-out test images, diameter from the
test masks (as benchmarks/fewshot.py). Writes benchmarks/results/project_vs_cli.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.fewshot import link_pairs  # noqa: E402
from benchmarks.report import load_average, machine, write_section  # noqa: E402


def make_project(folder: Path, data: Path, ds: str, stems: list[str]):  # noqa: ANN201 - Project
    """A project holding the K images, each annotated by importing its mask file (the window's import path)."""
    from efficell_app.core.mask_import import import_masks
    from efficell_app.project import Project

    src = folder.parent / "images"
    src.mkdir()
    for s in stems:
        os.symlink(data / ds / "images" / f"{s}.tif", src / f"{s}.tif")
    p = Project.create(folder)
    ids = p.add_folder(src, ds).added
    for i in ids:
        rec = p.get_image(i)
        labels = import_masks(data / ds / "masks" / rec.name, (rec.height, rec.width))
        p.save_annotation(i, labels, note="imported expert mask")
        p.set_status(i, "reviewed")
    return p


def train_in_dialog(project, epochs: int, threads: int) -> tuple[Path, float]:  # noqa: ANN001
    """Drive the real training dialog offscreen until its adapter lands in the project's library."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    from efficell_app.gui.training import TrainingDialog

    app = QApplication.instance() or QApplication([])
    dlg = TrainingDialog(project, device="cpu")
    dlg.threads = threads
    dlg.config_overrides = {"epochs": epochs, "minutes": None}
    dlg.name.setText("from the window")
    done: list = []
    dlg.adapter_added.connect(done.append)
    dlg.runner.failed.connect(lambda msg: done.append(RuntimeError(msg)))
    t0 = time.time()
    if not dlg.start():
        raise RuntimeError(dlg.phase.text())
    while not done:
        app.processEvents()
        time.sleep(0.05)
    secs = time.time() - t0
    dlg.close()
    if isinstance(done[0], Exception):
        raise done[0]
    return Path(done[0].path), secs


def train_cli(data: Path, ds: str, stems: list[str], epochs: int, threads: int, work: Path) -> tuple[Path, float]:
    img_dir, mask_dir = work / "cli_images", work / "cli_masks"
    link_pairs(data, ds, stems, img_dir, mask_dir)
    out = work / "cli.safetensors"
    cmd = [sys.executable, "-m", "efficell_app", "train", "--images", str(img_dir), "--masks", str(mask_dir),
           "--out", str(out), "--epochs", str(epochs), "--device", "cpu", "--seed", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    if proc.returncode not in (0, 1) or not out.exists():
        raise RuntimeError(f"efficell train failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return out, time.time() - t0


def evaluate_adapter(path: Path, test_pairs: list) -> dict:  # noqa: ANN001
    from efficell_app.core.evaluation import evaluate, segmenter_fn
    from efficell_app.core.pipeline import Segmenter

    seg = Segmenter.load(path, device="cpu")
    return evaluate(segmenter_fn(seg), test_pairs, diameter="gt")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--dataset", default="dsb2018_fluo")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-test", type=int, default=None, help="evaluate on the first N test images only")
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    from efficell_app.core.evaluation import load_pairs
    from efficell_app.core.model.adapter_io import file_sha256
    from efficell_app.core.resources import models_dir

    split = json.loads((models_dir() / "data_split.json").read_text())["split"][a.dataset]
    stems = split["train"][: a.k]
    test = split["test"][: a.n_test] if a.n_test else split["test"]
    test_pairs = load_pairs([(a.data / a.dataset / "images" / f"{s}.tif", a.data / a.dataset / "masks" / f"{s}.tif")
                             for s in test])
    load = load_average()
    with tempfile.TemporaryDirectory(prefix="efficell-pvc-") as tmp:
        work = Path(tmp)
        project = make_project(work / "project", a.data, a.dataset, stems)
        with project:
            gui_adapter, gui_s = train_in_dialog(project, a.epochs, a.threads)
            cli_adapter, cli_s = train_cli(a.data, a.dataset, stems, a.epochs, a.threads, work)
            rows = {"window (project)": (gui_adapter, gui_s), "efficell train (CLI)": (cli_adapter, cli_s)}
            res = {}
            for name, (path, secs) in rows.items():
                m = evaluate_adapter(path, test_pairs)
                res[name] = {"train_seconds": round(secs, 1), "sha256": file_sha256(path), **m}
                print(name, json.dumps(res[name]), flush=True)
    out = {"dataset": a.dataset, "k": a.k, "epochs": a.epochs, "train_images": stems, "n_test": len(test),
           "load": load, "results": res}
    (ROOT / "benchmarks" / "results" / "project_vs_cli.json").write_text(json.dumps(out, indent=1))
    lines = [f"Machine: {machine()}; load while it ran: {load}.",
             f"Command: `python benchmarks/project_vs_cli.py --dataset {a.dataset} --k {a.k} --epochs {a.epochs}`",
             "",
             f"{a.k} training images of {a.dataset} (first {a.k} of the training split) annotated in a project by importing",
             "their expert masks, trained from the window's training dialog (offscreen, its background process) and with",
             f"`efficell train` on the same files, {a.epochs} epochs each, seed 0. Held-out test images: {len(test)}, diameter from",
             "the test masks.",
             "",
             "| trained from | AP@0.5 | AP@0.75 | F1@0.5 | train time (s) | adapter sha256 |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, r in res.items():
        lines.append(f"| {name} | {r['ap5']:.3f} | {r['ap75']:.3f} | {r['f1_5']:.3f} | {r['train_seconds']:.0f} | "
                     f"`{r['sha256'][:12]}` |")
    vals = [r["ap5"] for r in res.values()]
    lines += ["", f"Difference in AP@0.5: {abs(vals[0] - vals[1]):.4f}."]
    write_section("project_vs_cli", "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
