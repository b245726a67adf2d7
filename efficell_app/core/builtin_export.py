"""Turn a built-in training checkpoint into the shipped model files, choosing everything on validation.

    python -m efficell_app.core.builtin_export validate                                   # the shipped model on validation
    python -m efficell_app.core.builtin_export compare work/builtin_v2/best.safetensors   # validation only, writes nothing
    python -m efficell_app.core.builtin_export candidate CKPT --out work/cand/models      # files + validation, no test
    python -m efficell_app.core.builtin_export ship work/builtin_v2/best.safetensors      # into resources/models

``compare`` scores the candidate and the shipped model on the *validation* part of split v2 (at the
original image size, diameter given and estimated, the app's own segmentation path) with thresholds
tuned on validation for each; ``ship`` writes the float16 encoder and the adapter (metadata: recipe,
split, training phases and hardware from ``train_meta.json``, tuned thresholds, validation metrics)
and then reads the test split once for the metrics stored beside them. After ``ship``:
``python resources/samples/make_selftest_expectation.py`` and the benchmarks (docs/models.md).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .data_split import DATASETS, load_split, pair_paths

log = logging.getLogger("efficell.builtin_export")

LICENCE = "CC BY-NC-SA 4.0 (trained in part on MoNuSeg): non-commercial use only"
FG_GRID = (0.2, 0.3, 0.4, 0.5, 0.6)
MARKER_GRID = (0.2, 0.3, 0.4, 0.5, 0.6)


def write_model(ckpt: Path, out_dir: Path, train_meta: dict | None = None, instance_params: dict | None = None,
                metrics: dict | None = None) -> dict[str, Any]:
    """Write ``efficell_compact_encoder.safetensors`` + the generalist adapter (float16) from a checkpoint
    (a run's ``best.safetensors``, or "builtin": the shipped weights, e.g. to re-tune their thresholds)."""
    from safetensors.torch import save_file

    from .builtin_training import TARGET_DIAMETER, checkpoint_state
    from .encoders.compact import BUNDLED_FILE, NAME
    from .model.adapter_io import AdapterMeta, file_sha256, save_adapter
    from .model.adapters import build_adapters
    from .pipeline import DEFAULT_ADAPTER_FILE

    out_dir.mkdir(parents=True, exist_ok=True)
    state = checkpoint_state(str(ckpt))  # "builtin" or a file
    enc_state = {k[8:]: v.half() if v.is_floating_point() else v for k, v in state.items() if k.startswith("encoder.")}
    ad_state = {k[9:]: v.float() if v.is_floating_point() else v for k, v in state.items() if k.startswith("adapters.")}
    enc_path = out_dir / BUNDLED_FILE
    # one metadata key: safetensors writes several in no fixed order, and the file's sha256 is the encoder's identity
    save_file(enc_state, str(enc_path), metadata={"efficell": json.dumps({"encoder": NAME, "licence": LICENCE}, sort_keys=True)})
    from .encoders.compact import CompactEncoder

    enc_channels = CompactEncoder().out_channels
    adapters = build_adapters(enc_channels, CompactEncoder.stride)
    adapters.load_state_dict(ad_state)
    meta = AdapterMeta(encoder=NAME, encoder_sha256=file_sha256(enc_path), in_channels=enc_channels, stride=CompactEncoder.stride,
                       config=adapters.config.to_dict(), target_diameter=TARGET_DIAMETER, name="EffiCell generalist",
                       description="Generalist adapter for fluorescence nuclei, H&E nuclei and phase-contrast cells",
                       licence=LICENCE, instance_params=dict(instance_params or {}), metrics=dict(metrics or {}),
                       training={"recipe": "python -m efficell_app.core.builtin_training", "datasets": list(DATASETS),
                                 "split": "resources/models/data_split_v2.json", **(train_meta or {})})
    meta.created = ""  # same checkpoint + settings -> same file
    ad_path = out_dir / DEFAULT_ADAPTER_FILE
    sha = save_adapter(ad_path, adapters, meta, half=True)
    return {"encoder_file": str(enc_path), "encoder_sha256": meta.encoder_sha256, "encoder_mb": round(enc_path.stat().st_size / 1e6, 2),
            "adapter_file": str(ad_path), "adapter_sha256": sha, "adapter_mb": round(ad_path.stat().st_size / 1e6, 2)}


def load_segmenter(model_dir: Path | None):  # noqa: ANN201
    """The Segmenter of model files in ``model_dir`` (None: the shipped ones), on the CPU."""
    from .encoders.compact import BUNDLED_FILE
    from .pipeline import DEFAULT_ADAPTER_FILE, Segmenter

    if model_dir is None:
        return Segmenter.load(None, device="cpu")
    return Segmenter.load(model_dir / DEFAULT_ADAPTER_FILE, device="cpu", encoder_weights=model_dir / BUNDLED_FILE)


def dense_maps(seg, pairs: Sequence) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:  # noqa: ANN001
    """(prob, distance, truth) per pair at the model scale of its annotated diameter (one network pass each)."""
    from .images import model_input
    from .training_data import object_diameter, resize_image

    out = []
    for img, gt in pairs:
        scale = seg.target_diameter / max(object_diameter(gt), 1.0)
        prob, geo = seg.predictor.predict(resize_image(model_input(img), scale))
        out.append((prob, geo[0], gt))
    return out


def threshold_grid(seg, maps_by_ds: dict[str, list]) -> dict[tuple[float, float], dict[str, float]]:  # noqa: ANN001
    """Pooled AP@0.5 of every (fg, marker) setting, per dataset (the watershed is the cheap part)."""
    from .evaluation import summarize
    from .instances import InstanceParams, dense_to_labels
    from .training_data import resize_labels

    grid = {}
    for fg, mk in itertools.product(FG_GRID, MARKER_GRID):
        params = InstanceParams(fg_threshold=fg, marker_threshold=mk, min_size=seg.params.min_size)
        grid[(fg, mk)] = {ds: summarize([gt for _, _, gt in maps], [resize_labels(dense_to_labels(p, d, params), gt.shape)
                                                                   for p, d, gt in maps])["ap5"] for ds, maps in maps_by_ds.items()}
    return grid


PER_COLOUR_MARGIN = 0.005  # separate colour thresholds only when they gain at least this much mean validation AP


def tune(seg, data: Path, split: dict, part: str = "validation") -> dict[str, Any]:  # noqa: ANN001
    """Watershed thresholds by mean AP@0.5 over the datasets of ``part`` (diameter given).

    One setting for all, or one for grayscale and one for colour input (``Segmenter.params_colour``)
    when that gains at least ``PER_COLOUR_MARGIN`` mean AP: fluorescence wants lower thresholds
    (dim nuclei) than H&E.
    """
    from .evaluation import load_pairs
    from .pipeline import is_colour_input

    maps, colour = {}, {}
    for ds in _datasets(split):
        pairs = load_pairs(pair_paths(data, ds, split[ds][part]))
        colour[ds] = is_colour_input(pairs[0][0], None)
        maps[ds] = dense_maps(seg, pairs)
    grid = threshold_grid(seg, maps)

    def best_of(dss: list[str]) -> tuple[float, float]:  # ties: the setting nearest the middle of the grid
        return max(grid, key=lambda k: (np.mean([grid[k][d] for d in dss]), -abs(k[0] - 0.45) - abs(k[1] - 0.4)))

    single = best_of(list(maps))
    gray_ds, colour_ds = [d for d in maps if not colour[d]], [d for d in maps if colour[d]]
    by_ds = {d: single for d in maps}
    if gray_ds and colour_ds:
        g, c = best_of(gray_ds), best_of(colour_ds)
        split_mean = float(np.mean([grid[c if colour[d] else g][d] for d in maps]))
        if split_mean >= float(np.mean(list(grid[single].values()))) + PER_COLOUR_MARGIN:
            by_ds = {d: c if colour[d] else g for d in maps}
    gray_key = by_ds[gray_ds[0]] if gray_ds else single
    colour_key = by_ds[colour_ds[0]] if colour_ds else single
    out = {"fg_threshold": gray_key[0], "marker_threshold": gray_key[1],
           "colour": None if colour_key == gray_key else {"fg_threshold": colour_key[0], "marker_threshold": colour_key[1]},
           "mean_ap5": round(float(np.mean([grid[by_ds[d]][d] for d in maps])), 4),
           "mean_ap5_one_setting": round(float(np.mean(list(grid[single].values()))), 4),
           "one_setting": {"fg_threshold": single[0], "marker_threshold": single[1]},
           "per_dataset": {d: grid[by_ds[d]][d] for d in maps}, "grid": {f"{fg}/{mk}": v for (fg, mk), v in grid.items()}}
    return out


def apply_tuning(seg, tuning: dict) -> None:  # noqa: ANN001
    """Put tuned thresholds into a Segmenter (grayscale ones, and colour ones where tuned apart)."""
    from .instances import InstanceParams

    base = {**seg.params.__dict__, "fg_threshold": tuning["fg_threshold"], "marker_threshold": tuning["marker_threshold"]}
    seg.params = InstanceParams(**base)
    seg.params_colour = InstanceParams(**{**base, **tuning["colour"]}) if tuning.get("colour") else None


def instance_params_meta(tuning: dict, min_size: int, fill_holes: bool) -> dict[str, Any]:
    """The adapter metadata's ``instance_params`` (read back by ``Segmenter``)."""
    out: dict[str, Any] = {"fg_threshold": tuning["fg_threshold"], "marker_threshold": tuning["marker_threshold"],
                           "min_size": min_size, "fill_holes": fill_holes}
    if tuning.get("colour"):
        out["colour"] = dict(tuning["colour"])
    return out


def score(seg, data: Path, split: dict, part: str) -> dict[str, Any]:  # noqa: ANN001
    """Pooled AP per dataset of ``part``, diameter estimated ("auto") and given ("gt"), through ``Segmenter.segment``."""
    from .evaluation import evaluate, load_pairs, segmenter_fn

    out: dict[str, Any] = {}
    for ds in _datasets(split):
        pairs = load_pairs(pair_paths(data, ds, split[ds][part]))
        out[ds] = {"auto_diameter": evaluate(segmenter_fn(seg), pairs, "auto"), "given_diameter": evaluate(segmenter_fn(seg), pairs, "gt")}
    for mode in ("auto_diameter", "given_diameter"):
        out[f"mean_ap5_{mode}"] = round(float(np.mean([out[ds][mode]["ap5"] for ds in _datasets(split)])), 4)
    return out


def _datasets(split: dict) -> list[str]:
    return [ds for ds in DATASETS if ds in split]


def validation_report(seg, data: Path, split: dict) -> dict[str, Any]:  # noqa: ANN001
    """Tune the thresholds on validation, then score validation with them (what ``compare`` prints)."""
    t = tune(seg, data, split)
    apply_tuning(seg, t)
    return {"tuning": t, "validation": score(seg, data, split, "validation")}


def validate_checkpoint(ckpt: Path | None, data: Path) -> dict[str, Any]:
    """:func:`validation_report` of a checkpoint (written as float16 model files, as it would ship) or of the shipped model."""
    split = load_split(2)
    if ckpt is None:
        return validation_report(load_segmenter(None), data, split)
    with tempfile.TemporaryDirectory() as tmp:
        write_model(ckpt, Path(tmp))
        return validation_report(load_segmenter(Path(tmp)), data, split)


def compare(ckpt: Path, data: Path) -> dict[str, Any]:
    return {"candidate": validate_checkpoint(ckpt, data), "shipped": validate_checkpoint(None, data)}


def candidate(ckpt: Path, data: Path, out_dir: Path, train_meta: dict, split: dict | None = None) -> dict[str, Any]:
    """Write the model files with thresholds tuned on validation and the validation metrics; the test split is not read.

    ``out_dir`` may be a copy of ``resources/`` (``EFFICELL_RESOURCES``) so benchmarks can run on the candidate."""
    split = split or load_split(2)
    write_model(ckpt, out_dir, train_meta)
    rep = validation_report(load_segmenter(out_dir), data, split)
    min_size, fill = load_segmenter(out_dir).params.min_size, load_segmenter(out_dir).params.fill_holes
    params = instance_params_meta(rep["tuning"], min_size, fill)
    metrics = {"validation": rep["validation"], "threshold_tuning": {k: v for k, v in rep["tuning"].items() if k != "grid"}}
    summary = write_model(ckpt, out_dir, train_meta, params, metrics)
    summary.update(instance_params=params, metrics=metrics, threshold_grid=rep["tuning"]["grid"])
    return summary


def ship(ckpt: Path, data: Path, out_dir: Path, train_meta: dict, split: dict | None = None,
         from_candidate: Path | None = None) -> dict[str, Any]:
    """Write the model (thresholds tuned on validation, or those of a ``candidate`` folder made from the same
    checkpoint), then read the test split once; the metadata holds validation and test metrics."""
    split = split or load_split(2)
    if from_candidate is None:
        summary = candidate(ckpt, data, out_dir, train_meta, split)
        params, metrics = summary["instance_params"], summary["metrics"]
    else:
        meta = load_segmenter(from_candidate).meta
        params, metrics = dict(meta.instance_params), {k: meta.metrics[k] for k in ("validation", "threshold_tuning")}
        summary = write_model(ckpt, out_dir, train_meta, params, metrics)
    seg = load_segmenter(out_dir)
    metrics = {**metrics, "test_v2": score(seg, data, split, "test"),
               "test_v1": score(seg, data, {ds: {"test": split[ds]["test_v1"]} for ds in _datasets(split)}, "test")}
    summary.update(write_model(ckpt, out_dir, train_meta, params, metrics))
    summary.update(instance_params=params, metrics=metrics)
    return summary


def training_record(ckpt: Path) -> dict[str, Any]:
    """What the adapter metadata says about training: the run's ``train_meta.json``, or for "builtin" the
    shipped adapter's own record (its weights are kept; only thresholds and metrics change)."""
    if str(ckpt) == "builtin":
        from .model.adapter_io import read_adapter_meta
        from .pipeline import default_adapter_path

        old = read_adapter_meta(default_adapter_path()).training
        return {**old, "thresholds": "re-tuned on the validation part of split v2 (resources/models/data_split_v2.json)"}
    meta_file = ckpt.parent / "train_meta.json"
    return json.loads(meta_file.read_text()) if meta_file.exists() else {}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=("validate", "compare", "candidate", "ship"))
    p.add_argument("checkpoint", type=Path, nargs="?", default=None,
                   help="best.safetensors of a run, or 'builtin' (the shipped weights); validate without one: the shipped model")
    p.add_argument("--data", type=Path, default=Path("../shared/data"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=None, help="candidate / ship: model folder (ship default: resources/models)")
    p.add_argument("--from-candidate", type=Path, default=None, metavar="DIR",
                   help="ship: take the thresholds (and validation metrics) of a candidate folder made from the same checkpoint")
    p.add_argument("--report", type=Path, default=None, help="write the result as JSON here too")
    a = p.parse_args(argv)
    import torch

    from .resources import models_dir

    torch.set_num_threads(a.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if a.action != "validate" and a.checkpoint is None:
        p.error(f"{a.action} needs a checkpoint")
    if a.action == "validate":
        res = validate_checkpoint(a.checkpoint, a.data)
    elif a.action == "compare":
        res = compare(a.checkpoint, a.data)
    elif a.action == "candidate":
        if a.out is None:
            p.error("candidate needs --out (a copy of resources/ with the candidate in its models/ folder)")
        res = candidate(a.checkpoint, a.data, a.out, training_record(a.checkpoint))
    else:
        res = ship(a.checkpoint, a.data, a.out or models_dir(), training_record(a.checkpoint), from_candidate=a.from_candidate)
    text = json.dumps(res, indent=1, default=str)
    if a.report:
        a.report.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
