"""Few-shot training: EffiCell adapters vs Otsu + watershed vs Cellpose 3 trained from scratch.

    pip install "cellpose==3.1.1.2"    # benchmark-only dependency
    python benchmarks/fewshot.py [--datasets dsb2018_fluo,usiigaci_phase,monuseg] [--ks 1,3,5,10]

For each dataset of ../shared/data and each K, the first K images of the training split (seed-0
order of resources/models/data_split.json) train:
- EffiCell: ``efficell train`` (the real CLI, in a subprocess: built-in frozen encoder, adapters
  fine-tuned from the generalist adapter — the default path) with a wall-clock budget;
- Cellpose 3: its cyto3 network architecture from random weights (``train_seg``; its pretrained
  weights cannot be downloaded here), given the same wall-clock budget (epochs calibrated);
and all are evaluated on the dataset's held-out test images (never used in training) with the
cell diameter taken from the test masks (the same for every method). Peak memory is the peak
resident set size of the training process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report import load_average, machine, write_section  # noqa: E402

BUDGET_MIN = {1: 2.0, 3: 3.0, 5: 4.0, 10: 6.0}


def _peak_rss_of(proc: subprocess.Popen) -> list[int]:
    """Poll the child's (and grandchildren's) RSS; returns a one-element list updated in place."""
    import psutil

    peak = [0]

    def poll() -> None:
        try:
            p = psutil.Process(proc.pid)
            while proc.poll() is None:
                rss = p.memory_info().rss + sum(c.memory_info().rss for c in p.children(recursive=True))
                peak[0] = max(peak[0], rss)
                time.sleep(0.2)
        except psutil.Error:
            pass

    threading.Thread(target=poll, daemon=True).start()
    return peak


def link_pairs(data: Path, ds: str, stems: list[str], img_dir: Path, mask_dir: Path) -> None:
    """Folders of symbolic links to the chosen images and their masks (what ``efficell train`` reads)."""
    img_dir.mkdir(parents=True)
    mask_dir.mkdir(parents=True)
    for s in stems:
        os.symlink(data / ds / "images" / f"{s}.tif", img_dir / f"{s}.tif")
        os.symlink(data / ds / "masks" / f"{s}.tif", mask_dir / f"{s}.tif")


def train_efficell(data: Path, ds: str, stems: list[str], minutes: float, work: Path) -> dict:
    img_dir, mask_dir = work / "images", work / "masks"
    link_pairs(data, ds, stems, img_dir, mask_dir)
    out = work / "adapter.safetensors"
    cmd = [sys.executable, "-m", "efficell_app", "train", "--images", str(img_dir), "--masks", str(mask_dir),
           "--out", str(out), "--minutes", str(minutes), "--device", "cpu"]
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    peak = _peak_rss_of(proc)
    stdout, stderr = proc.communicate()
    secs = time.time() - t0
    if proc.returncode not in (0, 1) or not out.exists():
        raise RuntimeError(f"efficell train failed ({proc.returncode}): {stderr[-2000:]}")
    last = json.loads(stdout.strip().splitlines()[-1])
    return {"adapter": out, "seconds": secs, "peak_rss_gb": peak[0] / 2**30, "result": last}


def train_cellpose(imgs: list[np.ndarray], masks: list[np.ndarray], minutes: float, work: Path) -> dict:
    """Cellpose 3 from scratch for about ``minutes`` (epochs calibrated on a 2-epoch run), in this process."""
    import resource

    from cellpose import models, train

    def run(n_epochs: int, name: str):  # noqa: ANN202
        net = models.CellposeModel(gpu=False, pretrained_model=False).net
        return train.train_seg(net, train_data=imgs, train_labels=masks, channels=[0, 0], n_epochs=n_epochs,
                               learning_rate=0.005, weight_decay=1e-5, batch_size=8, nimg_per_epoch=8,
                               min_train_masks=1, save_path=str(work), model_name=name, save_every=10_000)

    t0 = time.time()
    run(2, "calibrate")
    per_epoch = (time.time() - t0) / 2
    n_epochs = int(max(10, minutes * 60 / per_epoch))
    t0 = time.time()
    path, _, _ = run(n_epochs, "scratch")
    return {"model": Path(path), "seconds": time.time() - t0, "epochs": n_epochs,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def gray(img) -> np.ndarray:  # noqa: ANN001 - ImageData
    from efficell_app.core.images import model_input

    return model_input(img)[:3].mean(axis=0).astype(np.float32)


def main() -> int:
    import torch

    from efficell_app.core.classical import otsu_watershed
    from efficell_app.core.evaluation import evaluate, load_pairs, segmenter_fn
    from efficell_app.core.pipeline import Segmenter
    from efficell_app.core.resources import models_dir

    p = argparse.ArgumentParser()
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--datasets", default="dsb2018_fluo,usiigaci_phase,monuseg")
    p.add_argument("--ks", default="1,3,5,10", help="K values for every dataset, or per dataset: 'dsb2018_fluo=1,3,5,10/monuseg=5'")
    p.add_argument("--cellpose-ks", default="5", help="K values at which Cellpose 3 is trained too")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    split = json.loads((models_dir() / "data_split.json").read_text())["split"]
    if "=" in a.ks:
        ks_by = {d: [int(k) for k in v.split(",")] for d, v in (part.split("=") for part in a.ks.split("/"))}
    else:
        ks_by = {d: [int(k) for k in a.ks.split(",")] for d in a.datasets.split(",")}
    cp_ks = {int(k) for k in a.cellpose_ks.split(",") if k}
    rows, raw = [], {}
    t_all = time.time()
    for ds in a.datasets.split(","):
        test = load_pairs([(a.data / ds / "images" / f"{s}.tif", a.data / ds / "masks" / f"{s}.tif") for s in split[ds]["test"]])
        classical = evaluate(lambda img, d: otsu_watershed(img, diameter=d), test, "gt")
        rows.append(f"| {ds} | – | Otsu + watershed (no training) | {classical['ap5']:.3f} | {classical['ap75']:.3f} | – | – |")
        raw[ds] = {"classical": classical}
        for k in ks_by.get(ds, []):
            stems = split[ds]["train"][:k]
            with tempfile.TemporaryDirectory() as tmp:
                tr = train_efficell(a.data, ds, stems, BUDGET_MIN.get(k, 5.0), Path(tmp) / "efficell")
                seg = Segmenter.load(tr["adapter"], device="cpu")
                ev = evaluate(segmenter_fn(seg), test, "gt")
                raw[ds][f"efficell_k{k}"] = {"eval": ev, "train_seconds": tr["seconds"], "peak_rss_gb": tr["peak_rss_gb"],
                                             "train_result": tr["result"]}
                rows.append(f"| {ds} | {k} | EffiCell (frozen built-in encoder, adapters from the generalist) | {ev['ap5']:.3f} | "
                            f"{ev['ap75']:.3f} | {tr['seconds'] / 60:.1f} | {tr['peak_rss_gb']:.2f} |")
                print(ds, k, "efficell", json.dumps(raw[ds][f"efficell_k{k}"], default=str), flush=True)
                if k in cp_ks:
                    try:
                        train_pairs = load_pairs([(a.data / ds / "images" / f"{s}.tif", a.data / ds / "masks" / f"{s}.tif") for s in stems])
                        cp = train_cellpose([gray(i) for i, _ in train_pairs], [m for _, m in train_pairs],
                                            BUDGET_MIN.get(k, 5.0), Path(tmp))
                        from cellpose import models

                        cpm = models.CellposeModel(gpu=False, pretrained_model=str(cp["model"]))
                        cpe = evaluate(lambda img, d: cpm.eval(gray(img), diameter=d, channels=[0, 0])[0].astype(np.int32), test, "gt")
                        raw[ds][f"cellpose_k{k}"] = {"eval": cpe, "train_seconds": cp["seconds"], "epochs": cp["epochs"]}
                        rows.append(f"| {ds} | {k} | Cellpose 3 from scratch ({cp['epochs']} epochs) | {cpe['ap5']:.3f} | "
                                    f"{cpe['ap75']:.3f} | {cp['seconds'] / 60:.1f} | {cp['peak_rss_gb']:.2f} (process peak) |")
                        print(ds, k, "cellpose", json.dumps(raw[ds][f"cellpose_k{k}"], default=str), flush=True)
                    except ImportError:
                        rows.append(f"| {ds} | {k} | Cellpose 3 (not installed) | – | – | – | – |")
    text = "\n".join([
        "## Few-shot training on a CPU (EffiCell vs classical vs Cellpose 3 from scratch)", "",
        f"Command: `python benchmarks/fewshot.py --datasets {a.datasets} --ks {a.ks} --cellpose-ks {a.cellpose_ks}` · "
        f"machine: {machine()} · {a.threads} threads · load average at end {load_average()} · {time.strftime('%Y-%m-%d')} · "
        f"total {(time.time() - t_all) / 60:.0f} min", "",
        "Training images: the first K of each dataset's training split; evaluation: the held-out test split, "
        "cell diameter from the test masks for every method. Budgets (wall clock, feature caching included): "
        + ", ".join(f"K={k}: {m:g} min" for k, m in BUDGET_MIN.items()) + ".", "",
        "| dataset | K | method | AP@0.5 | AP@0.75 | training time (min) | peak memory (GB) |",
        "|---|---|---|---|---|---|---|", *rows,
    ])
    write_section("fewshot", text)
    (ROOT / "benchmarks" / "results" / "fewshot.json").write_text(json.dumps(raw, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
