"""Evaluate a segmenter (or any labelling function) on annotated image/mask pairs.

Shared by the built-in model's export (metrics stored in its metadata), the few-shot
benchmark and ``benchmarks/accuracy.py``, so every reported number comes from one code path.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .images import ImageData, read_image, read_mask
from .metrics import average_precision
from .training_data import object_diameter

THRESHOLDS = (0.5, 0.75, 0.9)


def summarize(gts: Sequence[np.ndarray], preds: Sequence[np.ndarray]) -> dict[str, Any]:
    """Pooled AP/F1 at 0.5/0.75/0.9 (TP, FP, FN summed over images) and the mean of per-image AP@0.5."""
    res = average_precision(list(gts), list(preds), THRESHOLDS)
    pooled = res["pooled"]
    out: dict[str, Any] = {"n_images": len(gts), "n_true": int(pooled[0.5].n_true)}
    for t in THRESHOLDS:
        key = f"{t:g}".replace("0.", "")
        out[f"ap{key}"] = round(float(pooled[t].ap), 4)
        out[f"f1_{key}"] = round(float(pooled[t].f1), 4)
    miou = pooled[0.5].mean_matched_iou
    out["mean_matched_iou"] = None if miou is None else round(float(miou), 4)
    out["ap5_mean_per_image"] = round(float(np.mean([pi[0.5].ap for pi in res["per_image"]])), 4) if gts else 0.0
    return out


def load_pairs(pairs: Sequence[tuple[Path, Path]]) -> list[tuple[ImageData, np.ndarray]]:
    out = []
    for ip, mp in pairs:
        img = read_image(ip)
        out.append((img, read_mask(mp, img.shape)))
    return out


def evaluate(label_fn: Callable[[ImageData, float | None], np.ndarray], data: Sequence[tuple[ImageData, np.ndarray]],
             diameter: str = "auto") -> dict[str, Any]:
    """Run ``label_fn(image, diameter)`` on every pair; ``diameter``: "auto" (None) or "gt" (from the mask)."""
    preds, gts = [], []
    t0 = time.perf_counter()
    for img, gt in data:
        d = object_diameter(gt) if diameter == "gt" else None
        preds.append(label_fn(img, d))
        gts.append(gt)
    out = summarize(gts, preds)
    out["seconds_per_image"] = round((time.perf_counter() - t0) / max(len(data), 1), 3)
    return out


def segmenter_fn(segmenter) -> Callable[[ImageData, float | None], np.ndarray]:  # noqa: ANN001
    return lambda img, d: segmenter.segment(img, diameter=d).labels
