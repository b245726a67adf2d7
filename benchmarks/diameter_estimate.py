"""Automatic object-size estimation of the built-in model: the multi-scale self-consistency estimate
(``core/size_estimate.py``) next to the earlier native-scale median, on the held-out test split.

    python benchmarks/diameter_estimate.py [--data ../shared/data] [--limit N] [--no-ap] [--part validation]

Per image: estimated diameter / true median diameter (from the annotated mask); per dataset the
median and max |ln ratio|. With AP (default): pooled AP@0.5 / 0.75 (as benchmarks/accuracy.py)
with the diameter estimated by each method and with the true diameter given. Cost: model pixels
processed per image (estimate + final segmentation; with --no-ap the estimate alone), in native
passes over the image.
Writes benchmarks/results/diameter_estimate.md and .json (``--part validation``: the validation part of
split v2, into diameter_estimate_validation.md / .json, the check made before shipping a model).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
import types
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.report import load_average, machine  # noqa: E402

DATASETS = {"dsb2018_fluo": "fluorescence nuclei (DSB2018)", "monuseg": "H&E nuclei (MoNuSeg)",
            "usiigaci_phase": "phase-contrast cells (Usiigaci)"}
RESULTS = Path(__file__).resolve().parent / "results"


def old_estimate(seg, x: np.ndarray, cancel=None, report=lambda f: None):  # noqa: ANN001, ANN201
    """The estimate EffiCell used before (verbatim): median diameter at the native scale, one
    refinement pass at the implied scale when it is off by more than 2x."""
    from efficell_app.core.instances import dense_to_labels
    from efficell_app.core.pipeline import AUTO_SCALE_RANGE
    from efficell_app.core.training_data import object_diameter, resize_image

    prob, geo = seg.predictor.predict(x, cancel, lambda d, n: report(d / n))
    labels = dense_to_labels(prob, geo[0], seg.scaled_params(1.0))
    d = object_diameter(labels)
    if d <= 0:
        return None, (prob, geo, labels)
    s = seg.target_diameter / d
    if abs(np.log(s)) > np.log(2.0):
        s = float(np.clip(s, *AUTO_SCALE_RANGE))
        xs = resize_image(x, s)
        p2, g2 = seg.predictor.predict(xs, cancel)
        d2 = object_diameter(dense_to_labels(p2, g2[0], seg.scaled_params(1.0)))
        if d2 > 0:
            d = d2 / s
    return d, (prob, geo, labels)


def main() -> int:
    import torch

    from efficell_app.core.evaluation import load_pairs, summarize
    from efficell_app.core.images import model_input
    from efficell_app.core.pipeline import Segmenter
    from efficell_app.core.size_estimate import probe_cost
    from efficell_app.core.training_data import object_diameter

    p = argparse.ArgumentParser()
    p.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--limit", type=int, default=0, help="first N test images per dataset (0: all)")
    p.add_argument("--no-ap", action="store_true", help="diameter ratios only (the estimate, no segmentation)")
    p.add_argument("--given", action="store_true", help="also AP with the true diameter given")
    p.add_argument("--part", choices=("test", "validation"), default="test",
                   help="test: the v1 test split (data_split.json); validation: the validation part of split v2")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    from efficell_app.core.data_split import load_split

    split = load_split(1 if a.part == "test" else 2)
    split = {ds: {"test": parts[a.part]} for ds, parts in split.items()}
    out_name = "diameter_estimate" if a.part == "test" else "diameter_estimate_validation"
    split_text = ("Held-out test split of `resources/models/data_split.json`" if a.part == "test"
                  else "Validation part of split v2 (`resources/models/data_split_v2.json`)")
    seg = Segmenter.load(None, device="cpu")
    old = copy.copy(seg)
    old.estimate_diameter = types.MethodType(old_estimate, old)
    counter: list[int] = []  # model pixels of every dense prediction (both segmenters share the predictor)
    real_predict = seg.predictor.predict

    def counting_predict(x, cancel=None, progress=None):  # noqa: ANN001, ANN202
        counter.append(int(x.shape[1] * x.shape[2]))
        return real_predict(x, cancel, progress)

    seg.predictor.predict = counting_predict
    t0 = time.time()
    per_image: dict[str, list[dict]] = {}
    summary: dict[str, dict] = {}
    for ds in DATASETS:
        stems = split[ds]["test"][: a.limit or None]
        pairs = load_pairs([(a.data / ds / "images" / f"{s}.tif", a.data / ds / "masks" / f"{s}.tif") for s in stems])
        rows: list[dict] = []
        preds: dict[str, list[np.ndarray]] = {"old": [], "new": [], "given": []}
        for stem, (img, gt) in zip(stems, pairs):
            d_true = object_diameter(gt)
            row = {"stem": stem, "shape": list(img.shape), "d_true": round(d_true, 2)}
            hw = float(img.shape[0] * img.shape[1])
            for name, s in (("new", seg), ("old", old)):
                counter.clear()
                t = time.perf_counter()
                if a.no_ap:  # the estimate alone
                    d, _ = s.estimate_diameter(model_input(img, seg.meta.channels), None, lambda f: None)
                else:  # the whole auto-diameter segmentation (estimate + final pass)
                    res = s.segment(img)
                    d = res.diameter or None
                    preds[name].append(res.labels)
                row[f"d_{name}"] = round(d, 2) if d else None
                row[f"passes_{name}"] = round(sum(counter) / hw, 3)
                row[f"seconds_{name}"] = round(time.perf_counter() - t, 2)
            if a.given:
                preds["given"].append(seg.segment(img, diameter=d_true).labels)
            rows.append(row)
            print(ds, json.dumps(row), flush=True)
        per_image[ds] = rows

        def lr(key: str, rows: list[dict] = rows) -> np.ndarray:
            return np.array([abs(np.log((r[key] or 1e-3 * r["d_true"]) / r["d_true"])) for r in rows])

        summary[ds] = {"n": len(rows), "median_abs_log_ratio_old": round(float(np.median(lr("d_old"))), 3),
                       "median_abs_log_ratio_new": round(float(np.median(lr("d_new"))), 3),
                       "max_abs_log_ratio_old": round(float(lr("d_old").max()), 3),
                       "max_abs_log_ratio_new": round(float(lr("d_new").max()), 3),
                       "within_25pct_old": int((lr("d_old") <= np.log(1.25)).sum()),
                       "within_25pct_new": int((lr("d_new") <= np.log(1.25)).sum()),
                       "mean_passes_new": round(float(np.mean([r["passes_new"] for r in rows])), 3),
                       "mean_passes_old": round(float(np.mean([r["passes_old"] for r in rows])), 3),
                       "mean_seconds_new": round(float(np.mean([r["seconds_new"] for r in rows])), 2),
                       "mean_seconds_old": round(float(np.mean([r["seconds_old"] for r in rows])), 2)}
        if not a.no_ap:
            gts = [g for _, g in pairs]
            for k, v in preds.items():
                if not v:
                    continue
                r = summarize(gts, v)
                summary[ds][f"ap5_{k}"], summary[ds][f"ap75_{k}"] = r["ap5"], r["ap75"]
        print(ds, json.dumps(summary[ds]), flush=True)
    ident = seg.identity
    cmd = ("nice -n 19 python benchmarks/diameter_estimate.py" + (f" --limit {a.limit}" if a.limit else "")
           + (" --no-ap" if a.no_ap else "") + (" --given" if a.given else "") + (f" --part {a.part}" if a.part != "test" else ""))
    what = "the estimate alone" if a.no_ap else "the whole segmentation with the diameter estimated (estimate + final pass)"
    lines = [
        "## Automatic object-size estimation (built-in model)", "",
        (f"Command: `{cmd}` · machine: {machine()} · {a.threads} threads · load average at end {load_average()} "
         f"(other jobs were using the CPU: seconds are indicative only) · {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
         f"· total {time.time() - t0:.0f} s"), "",
        (f"Model: encoder `{ident['encoder']}` (sha256 {ident['encoder_sha256'][:12]}…), adapter `{ident['adapter']}` "
         f"(sha256 {ident['adapter_sha256'][:12]}…), target diameter {seg.target_diameter:g} px. {split_text}; "
         "the true diameter is the median equivalent-circle diameter of the annotated objects."), "",
        ("Old: median diameter at the native scale, one more pass at the implied scale when off by > 2x. "
         "New (`core/size_estimate.py`): probes at x0.25 (whole image), x0.5, x1, x2, then x√2 either side of the best, each "
         "on a window of ≤ 256² model pixels where the coarse probe saw foreground; keeps the scale where the instances agree "
         "best with the model's own geometric branch (distance and centre-offset maps); never enlarges the image "
         "when the objects at x1 are already at least the target size."), "",
        f"Cost: model pixels of {what}, in native passes over the image (mean per image), and seconds per image.", "",
        "| dataset | images | median \\|ln(est/true)\\| old → new | max old → new | within 25 % old → new | "
        + ("AP@0.5 est. old → new | AP@0.75 old → new | " if not a.no_ap else "")
        + ("AP@0.5 / 0.75 diameter given | " if a.given else "")
        + "cost, passes old → new | s/image old → new |",
        "|---|---|---|---|---|" + ("---|---|" if not a.no_ap else "") + ("---|" if a.given else "") + "---|---|",
    ]
    for ds, s in summary.items():
        ap = (f"{s['ap5_old']:.3f} → **{s['ap5_new']:.3f}** | {s['ap75_old']:.3f} → {s['ap75_new']:.3f} | ") if not a.no_ap else ""
        ap += f"{s['ap5_given']:.3f} / {s['ap75_given']:.3f} | " if a.given else ""
        lines.append(f"| {DATASETS[ds]} | {s['n']} | {s['median_abs_log_ratio_old']:.3f} → **{s['median_abs_log_ratio_new']:.3f}** | "
                     f"{s['max_abs_log_ratio_old']:.2f} → {s['max_abs_log_ratio_new']:.2f} | {s['within_25pct_old']} → "
                     f"{s['within_25pct_new']} of {s['n']} | {ap}{s['mean_passes_old']:.2f} → {s['mean_passes_new']:.2f} | "
                     f"{s['mean_seconds_old']:.2f} → {s['mean_seconds_new']:.2f} |")
    lines += ["", "Upper bound of the new estimate's cost alone (model pixels / one native pass, `size_estimate.probe_cost`): "
              + ", ".join(f"{n}²: {probe_cost((n, n)):.2f}" for n in (256, 512, 1024, 2048)) + ". "
              "When the estimate implies a rescale within 15 % of 1 the final segmentation is one native pass, shared with a "
              "probe when that probe covered the whole image at scale 1 (images ≤ 256 px); the old estimate always shared its "
              "native pass with the final segmentation."]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{out_name}.md").write_text("\n".join(lines) + "\n")
    (RESULTS / f"{out_name}.json").write_text(json.dumps({"summary": summary, "per_image": per_image}, indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
