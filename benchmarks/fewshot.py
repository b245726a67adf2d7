"""Few-shot training: the untrained start vs the trained adapter, on the same held-out test images.

    python benchmarks/fewshot.py [--pool rest|train] [--datasets dsb2018_fluo,monuseg,usiigaci_phase] [--ks 1,3,5,10] [--draws 3]

For each dataset of ../shared/data, each K and each of ``--draws`` random draws of K images,
``efficell train`` (the real CLI, in a subprocess, default recipe: budgets in steps, so a busy
machine changes the time, not the result) fine-tunes the built-in generalist. Where the K images
come from and what they are scored on (``--pool``):

- ``rest`` (default; the issue's protocol: "train on 5 images, then segment the rest"): the K images
  are drawn from the dataset's test part of split v2 (resources/models/data_split_v2.json: images no
  training or choice of the built-in model saw, from sources it never saw: for Usiigaci the four
  tiles of each test field of view, for MoNuSeg the four tiles of each test slide), and the start
  and the adapter are scored on the rest of that part (the same images for both; they change with
  the draw, so the start is scored for every draw);
- ``train``: the K images are drawn from the dataset's training part (images the generalist was
  trained on) and everything is scored on the fixed test images (``--test``), used for nothing else.

Scores:

- start: the untrained built-in model as a user runs it (diameter estimated, its own thresholds);
- + diameter: the start at the cell diameter the adapter stores (from the K masks), if it stores one;
- + thresholds: the start's weights with the thresholds the training re-tuned for them;
- trained: the adapter ``efficell train`` wrote, used as ``efficell segment --model`` uses it;
- and, as a reference, start and trained with each test image's true diameter (from its mask).

Each finished run is appended to benchmarks/results/fewshot[_rest]_runs.jsonl, so an interrupted grid
resumes where it stopped (``--fresh`` starts over); several invocations may share the grid (each
claims a run before starting it, ``--order`` lets them start from different ends). Once every run is
there, one more invocation writes the table. The table gives mean and spread (sd) over the
draws. Peak memory is the peak resident set size of the training process.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report import RESULTS, load_average, machine, write_section  # noqa: E402

STARTS = RESULTS / "fewshot_starts.json"  # the untrained start's scores, by dataset and test images (with the model)
K_TARGET, GAIN_TARGET = 5, 0.05  # issue 22: at K = 5, +0.05 AP@0.5 on at least two of the three datasets


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


def link_pairs(folder: Path, stems: list[str], img_dir: Path, mask_dir: Path) -> None:
    """Folders of symbolic links to the chosen images and their masks (what ``efficell train`` reads)."""
    img_dir.mkdir(parents=True)
    mask_dir.mkdir(parents=True)
    for s in stems:
        os.symlink(folder / "images" / f"{s}.tif", img_dir / f"{s}.tif")
        os.symlink(folder / "masks" / f"{s}.tif", mask_dir / f"{s}.tif")


# Datasets derived from one of ../shared/data, for a kind of image the built-in model was not trained on:
# name -> (source dataset, what it is). Each image becomes its 8-bit luminance (ITU-R 601 weights); masks stay.
DERIVED = {"monuseg_gray": ("monuseg", ("MoNuSeg's tiles as 8-bit grey luminance, dark nuclei on a light ground "
                                        "(grey brightfield: a modality the built-in model was not trained on)"))}


def dataset_folder(data: Path, ds: str) -> Path:
    """The folder of ``ds`` (images/, masks/); a derived dataset is written once to a temporary folder."""
    if ds not in DERIVED:
        return data / ds
    import tifffile

    src, out = data / DERIVED[ds][0], Path(tempfile.gettempdir()) / "efficell_fewshot" / ds
    (out / "images").mkdir(parents=True, exist_ok=True)
    if not (out / "masks").exists():
        os.symlink(src / "masks", out / "masks")
    for f in sorted((src / "images").glob("*.tif")):
        if not (out / "images" / f.name).exists():
            rgb = tifffile.imread(f).astype(np.float32)
            grey = np.clip(rgb @ np.array([0.299, 0.587, 0.114], np.float32) + 0.5, 0, 255).astype(np.uint8)
            tmp = out / "images" / f"{f.stem}.part"
            tifffile.imwrite(tmp, grey, compression="zlib")
            tmp.replace(out / "images" / f.name)
    return out


def draw_stems(pool: list[str], k: int, draw: int) -> list[str]:
    """The ``draw``-th random choice of ``k`` training images (seeded: the same on every machine)."""
    return sorted(random.Random(f"fewshot-{k}-{draw}").sample(pool, k))


def files(pool: str, keep: str = "auto") -> tuple[Path, Path, str]:
    """The runs file, the claims folder (one empty file per run some invocation is doing or did) and the docs
    section of a pool (and of ``--keep trained``)."""
    tag = ("" if pool == "train" else f"_{pool}") + ("" if keep == "auto" else f"_keep_{keep}")
    return RESULTS / f"fewshot{tag}_runs.jsonl", RESULTS / f"fewshot{tag}_claims", f"fewshot{tag}"


def draw(split: dict[str, list[str]], pool: str, k: int, d: int) -> tuple[list[str], list[str]]:
    """The K training images of draw ``d`` and the test images they are scored on."""
    if pool == "train":
        return draw_stems(split["train"], k, d), split["test"]
    stems = draw_stems(split["test"], k, d)
    return stems, [s for s in split["test"] if s not in stems]


def train_efficell(folder: Path, stems: list[str], work: Path, threads: int, keep: str) -> dict[str, Any]:
    img_dir, mask_dir = work / "images", work / "masks"
    link_pairs(folder, stems, img_dir, mask_dir)
    out = work / "adapter.safetensors"
    cmd = [sys.executable, "-m", "efficell_app", "train", "--images", str(img_dir), "--masks", str(mask_dir),
           "--out", str(out), "--device", "cpu", "--keep", keep]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    import resource

    t0, cpu0 = time.time(), resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    peak = _peak_rss_of(proc)
    stdout, stderr = proc.communicate()
    secs = time.time() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = cpu1.ru_utime - cpu0.ru_utime + cpu1.ru_stime - cpu0.ru_stime
    if proc.returncode not in (0, 1) or not out.exists():
        raise RuntimeError(f"efficell train failed ({proc.returncode}): {stderr[-2000:]}")
    return {"adapter": out, "seconds": secs, "cpu_seconds": cpu, "peak_rss_gb": peak[0] / 2**30, "result": json.loads(stdout.strip().splitlines()[-1])}


def _evaluate(seg, test, diameter: str | float | None, params=None) -> dict[str, Any]:  # noqa: ANN001
    """Pooled scores of ``seg`` on ``test``: diameter "gt" (each image's own), a number, or None (the model's default)."""
    from efficell_app.core.evaluation import evaluate

    if params is not None:
        seg.params = params
    if diameter == "gt":
        return evaluate(lambda img, d: seg.segment(img, diameter=d).labels, test, "gt")
    return evaluate(lambda img, d: seg.segment(img, diameter=diameter).labels, test, "auto")  # noqa: ARG005


def run_one(folder: Path, ds: str, k: int, draw: int, stems: list[str], test, start, start_scores: dict,  # noqa: ANN001, PLR0913
            threads: int, keep: str = "auto") -> dict[str, Any]:
    """Train on ``stems``, score the adapter and its parts on ``test``. Passes that would repeat one already
    made are not run again (an adapter that kept the start's weights is the start at its diameter and thresholds)."""
    from efficell_app.core.instances import InstanceParams
    from efficell_app.core.model.adapter_io import read_adapter_meta
    from efficell_app.core.pipeline import Segmenter

    p0 = start.params
    with tempfile.TemporaryDirectory() as tmp:
        tr = train_efficell(folder, stems, Path(tmp) / "run", threads, keep)
        meta = read_adapter_meta(tr["adapter"])
        outcome = meta.training["outcome"]
        ps = InstanceParams(**outcome["start_instance_params"])
        d = meta.cell_diameter
        with_d = _evaluate(start, test, d, p0) if d else start_scores["auto"]
        with_d_thr = _evaluate(start, test, d, ps) if ps != p0 else with_d
        start.params = p0
        trained_gt = None
        if outcome["kept"] == "start":
            trained = with_d_thr
        else:
            seg = Segmenter.load(tr["adapter"], device="cpu")
            trained = _evaluate(seg, test, None)
            if k == K_TARGET:  # the weights alone, every test image at its true diameter
                trained_gt = _evaluate(seg, test, "gt")
    return {"dataset": ds, "k": k, "draw": draw, "stems": stems, "adapter_sha256": tr["result"]["sha256"],
            "train_seconds": round(tr["seconds"], 1), "train_cpu_seconds": round(tr["cpu_seconds"], 1), "peak_rss_gb": round(tr["peak_rss_gb"], 2),
            "cli": tr["result"], "cell_diameter": d, "outcome": outcome,
            "test_images": len(test),
            "test": {"start": start_scores["auto"], "start_gt_diameter": start_scores["gt"], "start_diameter": with_d,
                     "start_diameter_thresholds": with_d_thr, "trained": trained, "trained_gt_diameter": trained_gt},
            "load_average": load_average(), "date": time.strftime("%Y-%m-%d %H:%M")}


def _ms(values: list[float]) -> str:
    v = [x for x in values if x is not None]
    if not v:
        return "–"
    return f"{np.mean(v):.3f} ± {np.std(v):.3f}" if len(v) > 1 else f"{v[0]:.3f}"


def table(runs: list[dict], ks: dict[str, list[int]]) -> tuple[list[str], list[str]]:
    """Markdown rows (mean ± sd over draws) and the verdict lines (on the datasets of ../shared/data; derived ones
    are reported only). The gain is the mean over draws of trained - start, both scored on that draw's test images."""
    rows, verdict, gains_k, below = [], [], {}, False
    for ds, kl in ks.items():
        for k in kl:
            rs = [r for r in runs if r["dataset"] == ds and r["k"] == k]
            if not rs:
                continue
            t = [r["test"] for r in rs]
            a0 = [x["start"]["ap5"] for x in t]
            ad = [x["start_diameter"]["ap5"] for x in t]
            adt = [x["start_diameter_thresholds"]["ap5"] for x in t]
            tr = [x["trained"]["ap5"] for x in t]
            gains = [b - a for a, b in zip(a0, tr)]
            gain = float(np.mean(gains))
            kept = sum(r["outcome"]["kept"] == "trained" for r in rs)
            tmin = [r["train_seconds"] / 60 for r in rs]
            cmin = [r["train_cpu_seconds"] / 60 for r in rs]
            n_test = sorted({r["test_images"] for r in rs})
            rows.append(f"| {ds} | {k} | {len(rs)} | {'/'.join(map(str, n_test))} | {_ms(a0)} | {_ms(ad)} | {_ms(adt)} | "
                        f"**{_ms(tr)}** | {gain:+.3f} ({min(gains):+.3f}..{max(gains):+.3f}) | "
                        f"{_ms([x['start_gt_diameter']['ap5'] for x in t])} | "
                        f"{_ms([(x['trained_gt_diameter'] or {}).get('ap5') for x in t])} | {kept}/{len(rs)} | "
                        f"{np.mean(tmin):.1f} (max {np.max(tmin):.1f}) | {np.mean(cmin):.1f} | {max(r['peak_rss_gb'] for r in rs):.2f} |")
            if ds in DERIVED:  # not a dataset of ../shared/data: reported, not judged
                continue
            if gain < 0:
                below = True
                verdict.append(f"- {ds}, K={k}: trained {np.mean(tr):.3f} < start {np.mean(a0):.3f} (mean over {len(rs)} draws)")
            if k == K_TARGET:
                gains_k[ds] = gain
    n_ok = sum(g >= GAIN_TARGET for g in gains_k.values())
    verdict.insert(0, f"- trained >= start (mean over draws) for every dataset and K: {'NO' if below else 'yes'}")
    verdict.append(f"- K={K_TARGET}: gain >= +{GAIN_TARGET} AP@0.5 on {n_ok} of {len(gains_k)} datasets "
                   f"({', '.join(f'{d} {g:+.3f}' for d, g in gains_k.items())}) -> "
                   f"{'met' if n_ok >= 2 else 'NOT met'} (target: at least two of three)")
    return rows, verdict


RULES = {"none": "AP margin alone (the rule before 2026-12-05)", "unpaired": "unpaired evidence (the rule)",
         "paired": "paired evidence (McNemar, measured beside the rule)"}


def replay(runs: list[dict], ks: dict[str, list[int]]) -> list[str]:
    """With ``--keep trained`` every run has the trained weights' test scores and its held-out evidence, so each
    keep rule's result is exact: the trained scores where the rule keeps them, else the start's (a kept start is
    the start: its own weights, thresholds and estimated diameter). Rows: dataset and K; cells: mean gain over the
    draws (runs the rule keeps trained / runs)."""
    from efficell_app.core.training_validation import keeps_trained

    out = ["| dataset | K | trained always | " + " | ".join(RULES.values()) + " |", "|---|---|---|" + "---|" * len(RULES)]
    for ds, kl in ks.items():
        for k in kl:
            rs = [r for r in runs if r["dataset"] == ds and r["k"] == k]
            if not rs:
                continue
            gain = [r["test"]["trained"]["ap5"] - r["test"]["start"]["ap5"] for r in rs]
            cells = [f"{np.mean(gain):+.3f} (min {min(gain):+.3f})"]
            for rule in RULES:
                kept = [bool(o.get("start") and o.get("trained") and keeps_trained(o["start"], o["trained"], o.get("evidence"), rule))
                        for o in (r["outcome"] for r in rs)]
                g = [x if kp else 0.0 for x, kp in zip(gain, kept)]
                cells.append(f"{np.mean(g):+.3f} ({sum(kept)}/{len(rs)})")
            out.append(f"| {ds} | {k} | " + " | ".join(cells) + " |")
    return out


def _start_scores(starts: dict[str, dict], key: str, model_sha: str, stems: list[str], seg, load) -> dict[str, Any]:  # noqa: ANN001
    """The start's scores on ``stems`` (diameter estimated, and each image's true diameter), cached in STARTS."""
    if (starts.get(key) or {}).get("key") != [model_sha, stems]:
        test = load(stems)
        starts[key] = {"key": [model_sha, stems], "auto": _evaluate(seg, test, None), "gt": _evaluate(seg, test, "gt")}
        RESULTS.mkdir(parents=True, exist_ok=True)
        STARTS.write_text(json.dumps(starts, indent=1))
    return starts[key]


def main() -> int:  # noqa: PLR0915
    import torch

    from efficell_app.core.evaluation import load_pairs
    from efficell_app.core.pipeline import Segmenter
    from efficell_app.core.resources import models_dir

    p = argparse.ArgumentParser()
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--pool", choices=("rest", "train"), default="rest",
                   help="rest: K images of each dataset's test part, scored on the rest of it; "
                        "train: K images of its training part, scored on --test")
    p.add_argument("--datasets", default="dsb2018_fluo,monuseg,usiigaci_phase",
                   help=f"datasets of --data, or derived from one: {', '.join(f'{k} (from {v[0]})' for k, v in DERIVED.items())}")
    p.add_argument("--keep", choices=("auto", "trained"), default="auto",
                   help="efficell train --keep: 'trained' measures the trained weights where the evidence rule would keep the start")
    p.add_argument("--ks", default="1,3,5,10")
    p.add_argument("--draws", type=int, default=3)
    p.add_argument("--threads", type=int, default=2, help="torch threads of this process and of each training")
    p.add_argument("--fresh", action="store_true", help="ignore the runs already in the pool's runs file")
    p.add_argument("--test", choices=("test_v1", "test"), default="test_v1",
                   help="--pool train: split v2's v1 test images (default; comparable with earlier tables) or its whole test part")
    p.add_argument("--order", choices=("target-first", "reverse"), default="target-first",
                   help="which runs this invocation starts with (another invocation may take the other end)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    runs_file, claims, section = files(a.pool, a.keep)
    split_file = models_dir() / "data_split_v2.json"
    split = json.loads(split_file.read_text())["split"]
    if a.pool == "train":
        for ds_split in split.values():
            ds_split["test"] = ds_split[a.test]
    datasets = a.datasets.split(",")
    folders = {ds: dataset_folder(a.data, ds) for ds in datasets}
    for ds in datasets:
        split.setdefault(ds, split[DERIVED[ds][0] if ds in DERIVED else ds])
    ks = {ds: [int(k) for k in a.ks.split(",")] for ds in datasets}
    if a.fresh:
        runs_file.unlink(missing_ok=True)
        for f in claims.glob("*") if claims.exists() else []:
            f.unlink()
    start = Segmenter.load(None, device="cpu")
    t_all = time.time()
    starts: dict[str, dict] = json.loads(STARTS.read_text()) if STARTS.exists() else {}

    def load(ds: str, stems: list[str]):  # noqa: ANN202
        return load_pairs([(folders[ds] / "images" / f"{s}.tif", folders[ds] / "masks" / f"{s}.tif") for s in stems])

    order = sorted({k for kl in ks.values() for k in kl}, key=lambda k: (k != K_TARGET, k))  # K=5 first: the target
    grid = [(k, ds, d) for k in order for ds in datasets if k in ks[ds] for d in range(a.draws)]
    claims.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `kill PID` releases the claim of the run it stops
    for line in runs_file.read_text().splitlines() if runs_file.exists() else []:  # runs done before claims existed
        r = json.loads(line)
        (claims / f"{r['dataset']}_k{r['k']}_d{r['draw']}").touch()
    for k, ds, d in grid[::-1] if a.order == "reverse" else grid:
        stems, test_stems = draw(split[ds], a.pool, k, d)
        claim = claims / f"{ds}_k{k}_d{d}"
        try:
            claim.open("x").close()
        except FileExistsError:  # done already, or being done by another invocation
            continue
        try:
            key = ds if a.pool == "train" else f"{ds} rest k{k} d{d}"
            st = _start_scores(starts, key, start.adapter_sha256, test_stems, start, lambda s, ds=ds: load(ds, s))
            r = run_one(folders[ds], ds, k, d, stems, load(ds, test_stems), start, st, a.threads, a.keep)
        except BaseException:
            claim.unlink()
            raise
        with runs_file.open("a") as fh:
            fh.write(json.dumps(r, default=str) + "\n")
        print(ds, k, d, r["outcome"]["kept"], "start", st["auto"]["ap5"], "trained", r["test"]["trained"]["ap5"],
              f"{r['train_seconds']:.0f} s", flush=True)
    runs, seen = [], set()
    for line in runs_file.read_text().splitlines() if runs_file.exists() else []:
        r = json.loads(line)
        key = (r["dataset"], r["k"], tuple(r["stems"]))
        if key not in seen and r["dataset"] in datasets and r["k"] in ks[r["dataset"]] and r["draw"] < a.draws:
            seen.add(key)
            runs.append(r)
    missing = len(grid) - len(runs)
    if missing:
        print(f"{missing} run(s) of the grid are not finished yet (another invocation may be doing them); "
              "the table is written when all are there", flush=True)
        return 0
    rows, verdict = table(runs, ks)
    secs = [r["train_seconds"] for r in runs]
    split_name = split_file.relative_to(ROOT) if split_file.is_relative_to(ROOT) else split_file
    if a.pool == "rest":
        title = "Few-shot training on a lab's own images: train on K, segment the rest (issue 22)"
        where = (f"Training images: {a.draws} random draws of K images from each dataset's test part of `{split_name}` "
                 "(split v2: images of sources no training or choice of the built-in model saw; Usiigaci: 8 fields of "
                 "view x 4 tiles, MoNuSeg: 3 slides x 4 tiles, DSB2018: 83 images); test: the rest of that part "
                 "(*test images*), the same for the start and the adapter of a draw. ")
    else:
        title = "Few-shot training on images the generalist has seen: untrained start vs trained adapter (issue 22)"
        where = (f"Training images: {a.draws} random draws of K images from each dataset's training part of `{split_name}` "
                 "(split v2: the built-in generalist was trained on that part, so the K images are ones it has seen); test: "
                 + ("the v1 test images of its test part (as in earlier tables)" if a.test == "test_v1" else "its whole test part")
                 + ", which no training or choice saw. ")
    if a.keep != "auto":
        title = ("Few-shot training, the trained weights always kept (`efficell train --keep trained`): what the "
                 "evidence rule decides against")
    derived = [ds for ds in datasets if ds in DERIVED]
    if derived:
        where += "Derived datasets (reported, not judged): " + "; ".join(
            f"{ds} = {DERIVED[ds][1]}, the same draws and test images as {DERIVED[ds][0]}" for ds in derived) + ". "
    text = "\n".join([
        f"## {title}", "",
        f"Command: `python benchmarks/fewshot.py --pool {a.pool}" + (f" --keep {a.keep}" if a.keep != "auto" else "") + f" --datasets {a.datasets} --ks {a.ks} --draws {a.draws} --threads {a.threads}"
        + (f" --test {a.test}" if a.pool == "train" else "") + "` · "
        f"machine: {machine()} · {a.threads} threads per training · load average at end {load_average()} (shared machine; "
        f"times vary with load, results do not: budgets are in steps) · {time.strftime('%Y-%m-%d')} · "
        f"this invocation {(time.time() - t_all) / 60:.0f} min, trainings {sum(secs) / 60:.0f} min in all", "",
        where + "AP@0.5 on all test images pooled; mean ± sd over the draws; *gain*: mean over draws of trained - start "
        "(smallest..largest). "
        "*start*: the untrained built-in model, diameter estimated; *+ diameter*: the start at the cell diameter the "
        "adapter stores (median of the K masks; the estimate where the adapter stores none); *+ thresholds*: and the "
        "thresholds training re-tuned for the start's weights; *trained*: the adapter as `efficell segment --model` "
        "uses it; *true d*: every test image at the diameter of its own mask (a reference no user has; for the trained "
        f"adapter only at K={K_TARGET} and where it kept trained weights). "
        "*kept trained*: runs whose held-out validation beat the start (the others keep the start's weights).", "",
        ("| dataset | K | draws | test images | start | + diameter | + thresholds | trained | gain | start, true d | "
         "trained, true d | kept trained | training min (wall) | CPU min | peak GB |"),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|", *rows, "",
        "Verdict (issue 22):" if a.keep == "auto" else "Against the issue's targets (a comparison: the default is --keep auto):",
        *verdict,
        *(["", "Each keep rule replayed on these runs (exact: where a rule keeps the start, the start's score counts): "
           "mean gain over the draws on the test images (runs the rule keeps trained / runs).", "",
           *replay(runs, ks)] if a.keep == "trained" else []),
    ])
    write_section(section, text)
    (RESULTS / f"{section}.json").write_text(json.dumps({"starts": {k: v for k, v in starts.items() if k.split()[0] in datasets},
                                                        "runs": runs}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
