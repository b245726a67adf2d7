"""Accuracy of the built-in model on the held-out test split of each dataset in ../shared/data,
next to the classical Otsu + watershed pipeline.

    python benchmarks/accuracy.py [--data ../shared/data]

AP = TP / (TP + FP + FN) at IoU 0.5 / 0.75 (Cellpose / StarDist / DSB2018 convention), pooled
over the images of a dataset; F1 at IoU 0.5. Test split: split v2 (resources/models/data_split_v2.json,
core/data_split.py), never used in training, checkpoint choice or threshold tuning; its v1 images
(the test split of split v1, the one earlier numbers were measured on) are also reported alone.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.report import load_average, machine, write_section  # noqa: E402

DATASETS = {"dsb2018_fluo": "fluorescence nuclei (DSB2018)", "monuseg": "H&E nuclei (MoNuSeg)",
            "usiigaci_phase": "phase-contrast cells (Usiigaci)"}
TARGETS = {"dsb2018_fluo": 0.85, "monuseg": 0.65, "usiigaci_phase": 0.70}
V1_BASELINE = {"dsb2018_fluo": 0.589, "monuseg": 0.496, "usiigaci_phase": 0.586}  # phase-2 model, diameter estimated


def _row(title: str, r: dict, method: str) -> str:
    return (f"| {title} | {r['n_images']} ({r['n_true']} cells) | {method} | {r['ap5']:.3f} | {r['ap75']:.3f} | "
            f"{r['f1_5']:.3f} | {r['ap5_mean_per_image']:.3f} | {r['seconds_per_image']:.2f} |")


def main() -> int:
    import torch

    from efficell_app.core.classical import otsu_watershed
    from efficell_app.core.data_split import load_split, pair_paths
    from efficell_app.core.evaluation import evaluate, load_pairs, segmenter_fn
    from efficell_app.core.pipeline import Segmenter

    p = argparse.ArgumentParser()
    p.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    split = load_split(2)
    seg = Segmenter.load(None, device="cpu")
    rows, v1_rows, raw = [], [], {}
    t0 = time.time()
    for ds, title in DATASETS.items():
        pairs = load_pairs(pair_paths(a.data, ds, split[ds]["test"]))
        v1 = set(split[ds]["test_v1"])
        res = {
            "EffiCell built-in, diameter estimated": evaluate(segmenter_fn(seg), pairs, "auto"),
            "EffiCell built-in, diameter given": evaluate(segmenter_fn(seg), pairs, "gt"),
            "Otsu + watershed, diameter estimated": evaluate(lambda img, d: otsu_watershed(img), pairs, "auto"),
            "Otsu + watershed, diameter given": evaluate(lambda img, d: otsu_watershed(img, diameter=d), pairs, "gt"),
        }
        v1_pairs = [pr for pr, stem in zip(pairs, split[ds]["test"]) if stem in v1]
        res_v1 = {"EffiCell built-in, diameter estimated": evaluate(segmenter_fn(seg), v1_pairs, "auto"),
                  "EffiCell built-in, diameter given": evaluate(segmenter_fn(seg), v1_pairs, "gt")}
        raw[ds] = {"test_v2": res, "test_v1": res_v1}
        rows += [_row(title, r, method) for method, r in res.items()]
        v1_rows += [_row(title, r, method) for method, r in res_v1.items()]
        print(ds, json.dumps(raw[ds]), flush=True)
    ident = seg.identity
    header = ["| dataset | test images | method | AP@0.5 | AP@0.75 | F1@0.5 | mean per-image AP@0.5 | s / image |",
              "|---|---|---|---|---|---|---|---|"]
    lines = [
        "## Accuracy on held-out images (built-in model)", "",
        (f"Command: `python benchmarks/accuracy.py` · machine: {machine()} · {a.threads} threads · load average at end {load_average()} · "
         f"{time.strftime('%Y-%m-%d')} · total {time.time() - t0:.0f} s"), "",
        (f"Model: encoder `{ident['encoder']}` (sha256 {ident['encoder_sha256'][:12]}…), adapter `{ident['adapter']}` "
         f"(sha256 {ident['adapter_sha256'][:12]}…). Test split: the test part of split v2 (`resources/models/data_split_v2.json`: "
         "every v1 test image plus 15 % of the new DSB2018 sources; never used in training, checkpoint choice or threshold tuning)."), "",
        *header, *rows, "",
        "Targets (AP@0.5 with the diameter estimated, test split v2): " + ", ".join(f"{DATASETS[k]} ≥ {v}" for k, v in TARGETS.items()) + ".",
    ]
    for ds, target in TARGETS.items():
        got = raw[ds]["test_v2"]["EffiCell built-in, diameter estimated"]["ap5"]
        lines.append(f"- {DATASETS[ds]}: {got:.3f} → {'met' if got >= target else 'NOT met'}")
    lines += ["", "### The v1 test images alone", "",
              "The test split of split v1 (`resources/models/data_split.json`), on which the earlier numbers were measured "
              "(phase-2 model, diameter estimated: " + ", ".join(f"{DATASETS[k]} {v}" for k, v in V1_BASELINE.items()) + ").", "",
              *header, *v1_rows]
    write_section("accuracy", "\n".join(lines))
    (Path(__file__).parent / "results" / "accuracy.json").write_text(json.dumps(raw, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
