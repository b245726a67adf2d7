"""The CUDA path, run and timed on a GPU: one prepared script for a lent GPU machine (issue 16).

On the GPU machine (the device tool; docs/gpu.md gives the whole call, carry list included):

    python3 benchmarks/gpu_data.py prepare             # here, once: real images into .gpu_data/, wheels into .whl/
    python3 benchmarks/gpu.py --out $OUT               # there: about 4 minutes (--budget 240)
    python3 benchmarks/gpu.py --publish DIR            # here, after: DIR/gpu.json into docs/benchmarks.md

A dry run on this machine's CPU at tiny sizes (every part runs end to end, a few minutes):

    python3 benchmarks/gpu.py --device cpu --tiny --out /tmp/gpu_dry --write-docs

Parts, in this order (each time-boxed; ``--skip a,b`` leaves parts out; the JSON and the Markdown
are rewritten after every measurement, so a run stopped at any point keeps what it measured):

- ``info``: the machine (GPU name and memory, torch and CUDA, CPU cores).
- ``agreement``: labels of the built-in model on 4 real 1024² images, CPU fp32 against the GPU
  in fp32 and bf16 (tolerance below); the largest difference of the probability maps.
- ``encoders``: the built-in model and SAM ViT-B/L/H, DINOv2 ViT-S/B/L (random weights at their
  published sizes: the compute of the real ones), fp32 and bf16: seconds per 1024² image for the
  encoder alone (batches of 1 and 4 images) and the whole pipeline (``Segmenter.segment``), peak memory.
- ``throughput``: images/s over 100 real 1024² images with the built-in model, GPU inference
  overlapped with post-processing (watershed, measurement) in CPU worker processes
  (``core/pipelined.py``), against the same work without overlap.
- ``oom``: the out-of-memory fallback, forced with ``torch.cuda.set_per_process_memory_fraction``:
  first a limit that makes the batch shrink, then one under which only the CPU can finish.
  (On a CPU dry run the limit is simulated.)
- ``fewshot``: few-shot training on 5 real images end to end (image reading, feature caching,
  training, validation, saving) with SAM ViT-B, SAM ViT-H (random weights) and the built-in encoder,
  132 epochs (the number of crops the CPU few-shot benchmark's K=5 run saw in its 4 minutes).

Output: ``OUT/gpu.json`` (every number) and ``OUT/gpu.md`` (the docs/benchmarks.md section);
``--write-docs`` also copies the section to benchmarks/results/gpu.md and reassembles docs/benchmarks.md.

Heavy imports stay inside functions: the CPU worker processes (spawned) import this file again.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PARTS = ("info", "agreement", "encoders", "throughput", "oom", "fewshot")
BOX_S = {"info": 10, "agreement": 20, "encoders": 80, "throughput": 40, "oom": 20, "fewshot": 80}
ENCODERS = ("efficell_compact", "sam_vit_h", "sam_vit_b", "sam_vit_l", "dinov2_vit_s14", "dinov2_vit_b14", "dinov2_vit_l14")
FEWSHOT_ENCODERS = ("sam_vit_b", "sam_vit_h", "efficell_compact")
FEWSHOT_EPOCHS = 132  # 2 steps of 8 crops per epoch on these 5 images: ~2100 crops, as the CPU K=5 run (529 steps of 4)
TOLERANCE = {"fp32": {"f1_50": 0.99, "max_abs_prob": 1e-2}, "bf16": {"f1_50": 0.95, "max_abs_prob": 0.1}}
TARGETS = {"pipeline_images_per_s": 20.0, "sam_vit_h_bf16_encoder_s": 0.08, "fewshot_sam_vit_b_s": 30.0,
           "fewshot_sam_vit_h_s": 60.0}


class Run:
    """Results, time budget and output files of one benchmark run."""

    def __init__(self, args: argparse.Namespace) -> None:
        from efficell_app.core.device import choose_device

        self.args = args
        self.dev = choose_device(args.device)
        self.gpu = self.dev.startswith("cuda")
        self.size = 256 if args.tiny else 1024
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.t0 = time.time()
        self.data = Path(args.data)
        cmd = "python3 benchmarks/gpu.py " + " ".join(sys.argv[1:])
        self.results: dict[str, Any] = {"command": cmd, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                        "device": self.dev, "tiny": bool(args.tiny), "size": self.size,
                                        "dry_run": not self.gpu or bool(args.tiny), "parts": {}}

    def left(self) -> float:
        return self.args.budget - (time.time() - self.t0)

    def log(self, *msg: Any) -> None:
        print(f"[{time.time() - self.t0:6.1f} s]", *msg, flush=True)

    def save(self) -> None:
        from benchmarks.report import load_average

        self.results["seconds"] = round(time.time() - self.t0, 1)
        self.results["load_average"] = load_average()
        for name, text in (("gpu.json", json.dumps(self.results, indent=1, default=str)), ("gpu.md", markdown(self.results))):
            tmp = self.out / (name + ".part")
            tmp.write_text(text)
            os.replace(tmp, self.out / name)

    def part(self, name: str, fn: Any) -> None:
        rec: dict[str, Any] = {"status": "running"}
        self.results["parts"][name] = rec
        if name in self.args.skip:
            rec["status"] = "skipped (--skip)"
            self.save()
            return
        box = min(BOX_S[name] * self.args.box_scale, self.left())
        if box < 3:
            rec["status"] = "skipped: the run's --budget was spent"
            self.save()
            return
        self.log(f"== {name} (time box {box:.0f} s)")
        t = time.time()
        rec["deadline"] = t + box
        try:
            fn(self, rec)
            rec["status"] = "stopped at its time box (the rest not measured)" if rec.get("cut") else "done"
        except Exception as exc:  # noqa: BLE001 - a failed part is recorded, and the next part still runs
            rec["status"] = f"failed: {type(exc).__name__}: {exc}"
            rec["traceback"] = traceback.format_exc()[-3000:]
            self.log(rec["traceback"])
        finally:
            rec.pop("deadline", None)
            rec["seconds"] = round(time.time() - t, 1)
            release(self.dev)
            self.save()
            self.log(f"   {name}: {rec['status']} ({rec['seconds']} s)")

    def over(self, rec: dict[str, Any]) -> bool:
        """True (and the part marked cut) once its time box has passed."""
        if time.time() > rec["deadline"]:
            rec["cut"] = True
            return True
        return False


def release(dev: str) -> None:
    """Free what a part left on the GPU, and lift any memory limit it set."""
    import torch

    from efficell_app.core.device import cuda_index

    gc.collect()
    if dev.startswith("cuda"):
        torch.cuda.set_per_process_memory_fraction(1.0, cuda_index(dev))  # an int: torch.device('cuda') is refused
        torch.cuda.empty_cache()


def timed(fn: Any, dev: str, reps: int = 3, min_s: float = 0.3, warmup: int = 1) -> dict[str, Any]:
    """Median wall seconds of ``fn()`` (the device synchronised around each call), after ``warmup`` calls."""
    from efficell_app.core.device import synchronize

    for _ in range(warmup):
        fn()
    synchronize(dev)
    ts: list[float] = []
    while len(ts) < reps or (sum(ts) < min_s and len(ts) < 4 * reps):
        t = time.perf_counter()
        fn()
        synchronize(dev)
        ts.append(time.perf_counter() - t)
    return {"median_s": statistics.median(ts), "runs": len(ts), "min_s": min(ts)}


def build_segmenter(run: Run, name: str, precision: str = "auto", batch_size: int | None = None):  # noqa: ANN201
    """The built-in model (real weights), or ``name`` with random weights and random adapters (published
    size, or the tiny test size with --tiny), on the run's device."""
    from efficell_app.core.pipeline import Segmenter

    if name == "efficell_compact":
        return Segmenter.load(None, device=run.dev, precision=precision, batch_size=batch_size)
    from efficell_app.core.encoders import build_encoder
    from efficell_app.core.model import EffiCellModel, build_adapters
    from efficell_app.core.model.adapter_io import RANDOM_WEIGHTS, AdapterMeta

    enc = build_encoder(name, weights=None, small=run.args.tiny, device=run.dev)
    ad = build_adapters(enc.out_channels, enc.stride).to(run.dev)
    meta = AdapterMeta(encoder=name, encoder_sha256=RANDOM_WEIGHTS, in_channels=enc.out_channels, stride=enc.stride,
                       config=ad.config.to_dict(), name=f"random {name}")
    return Segmenter(EffiCellModel(enc, ad), meta, RANDOM_WEIGHTS, None, run.dev, precision=precision, batch_size=batch_size)


_IMAGES: dict[tuple[int, int], list] = {}


def real_images(run: Run, n: int, size: int | None = None) -> list:
    """``n`` real images of ``size``² (the run's size by default): a quarter Usiigaci phase contrast, then DSB2018 mosaics."""
    from benchmarks.gpu_data import images_1024

    key = (n, size or run.size)
    if key not in _IMAGES:
        _IMAGES[key] = images_1024(run.data, *key)
    return _IMAGES[key]


def f1_and_counts(ref: Any, got: Any) -> dict[str, Any]:
    from efficell_app.core.metrics import average_precision

    st = average_precision(ref, got, (0.5,))["pooled"][0.5]
    return {"f1_50": round(float(st.f1), 4), "cells_ref": int(ref.max()), "cells": int(got.max())}


# ----------------------------------------------------------------------------- parts


def part_info(run: Run, rec: dict[str, Any]) -> None:
    import platform

    import numpy
    import scipy
    import skimage
    import timm
    import torch

    from efficell_app.core.device import cpu_name, describe_device

    rec.update(device=describe_device(run.dev), cpu=cpu_name(), cores=os.cpu_count(), python=platform.python_version(),
               torch=torch.__version__, timm=timm.__version__, numpy=numpy.__version__, scipy=scipy.__version__,
               skimage=skimage.__version__, cudnn=torch.backends.cudnn.version() if run.gpu else None,
               tf32_conv=bool(torch.backends.cudnn.allow_tf32), tf32_matmul=bool(torch.backends.cuda.matmul.allow_tf32))
    run.log(rec["device"])


def part_agreement(run: Run, rec: dict[str, Any]) -> None:
    """CPU fp32 labels and dense maps against the run's device in fp32 and bf16 (same model, same images)."""
    import numpy as np

    from efficell_app.core.images import model_input

    imgs = real_images(run, 8)
    imgs = [imgs[0], imgs[-1]] if run.args.tiny else [imgs[0], imgs[1], imgs[-2], imgs[-1]]  # phase and fluorescence
    cpu = build_segmenter_cpu(run)
    rec["tolerance"] = TOLERANCE
    rows = rec["rows"] = []
    refs = []
    for img in imgs:
        res = cpu.segment(img, diameter=cpu.target_diameter)
        refs.append((res.labels, cpu.predictor.predict(model_input(img, cpu.meta.channels))[0]))
    for prec in ("fp32", "bf16"):
        seg = build_segmenter(run, "efficell_compact", precision=prec)
        for img, (ref_labels, ref_prob) in zip(imgs, refs):
            if run.over(rec):
                return
            got = seg.segment(img, diameter=seg.target_diameter)
            prob = seg.predictor.predict(model_input(img, seg.meta.channels))[0]
            row = {"image": img.path.name, "precision": prec, **f1_and_counts(ref_labels, got.labels),
                   "max_abs_prob": round(float(np.abs(prob - ref_prob).max()), 5),
                   "identical_labels": bool(np.array_equal(ref_labels, got.labels))}
            tol = TOLERANCE[prec]
            row["within_tolerance"] = row["f1_50"] >= tol["f1_50"] and row["max_abs_prob"] <= tol["max_abs_prob"]
            rows.append(row)
            run.log(row)
            run.save()
        del seg
    rec["all_within_tolerance"] = all(r["within_tolerance"] for r in rows)


def build_segmenter_cpu(run: Run):  # noqa: ANN201
    from efficell_app.core.pipeline import Segmenter

    return Segmenter.load(None, device="cpu", precision="fp32")


def part_encoders(run: Run, rec: dict[str, Any]) -> None:
    img = real_images(run, 8)[-1]  # a DSB2018 mosaic: the same image for every encoder
    rec["rows"] = []
    for name in run.args.encoders:
        if run.over(rec):
            return
        _one_encoder(run, rec, name, img)
        release(run.dev)


def _one_encoder(run: Run, rec: dict[str, Any], name: str, img: Any) -> None:
    """Encoder alone (batches of 1 and 4 images), dense pass and whole pipeline of ``name``, fp32 then bf16."""
    import torch

    from efficell_app.core.device import autocast, peak_memory_gib, reset_peak_memory
    from efficell_app.core.images import model_input
    from efficell_app.core.inference import plan_tiles

    batches = (1, 2) if run.args.tiny else (1, 4)
    t = time.perf_counter()
    seg = build_segmenter(run, name, precision="fp32")
    build_s = time.perf_counter() - t
    enc, pred = seg.model.encoder, seg.predictor
    x = model_input(img, seg.meta.channels)
    plan = plan_tiles(run.size, run.size, pred.tile, pred.patch, pred.overlap)
    th, tw = plan.tile
    tiles = torch.stack([torch.from_numpy(x[:, y:y + th, x0:x0 + tw].copy()) for y in plan.starts_y
                         for x0 in plan.starts_x]).to(run.dev)
    quick: dict[str, Any] = {"reps": 1, "min_s": 0, "warmup": 0}
    for prec in ("fp32", "bf16"):
        if run.over(rec):
            return
        pred.precision = prec
        row: dict[str, Any] = {"encoder": name, "precision": prec, "params_m": round(enc.num_parameters() / 1e6, 1),
                               "tiles_per_image": plan.n_tiles, "tile": th, "build_s": round(build_s, 2)}
        reset_peak_memory(run.dev)
        for b in batches:
            xb = tiles.repeat(b, 1, 1, 1)

            def encode(xb: torch.Tensor = xb, prec: str = prec) -> None:
                with torch.inference_mode(), autocast(run.dev, prec):
                    enc(xb)

            r = timed(encode, run.dev, **(quick if run.args.tiny else {"reps": 3 if b == 1 else 2}))
            row[f"encoder_s_per_image_b{b}"] = round(r["median_s"] / b, 4)
        row["encoder_peak_gib"] = peak_memory_gib(run.dev)
        reset_peak_memory(run.dev)
        pred.batch_size = max(pred.batch_size, 4) if run.gpu else 1
        row["tile_batch"] = pred.batch_size
        r = timed(lambda: pred.predict(x), run.dev, **(quick if run.args.tiny else {"reps": 2}))
        row["dense_s_per_image"] = round(r["median_s"], 4)
        # the watershed dominates the whole pipeline: one timed run (after one warm-up on a GPU) suffices
        r = timed(lambda: seg.segment(img, diameter=seg.target_diameter), run.dev, **{**quick, "warmup": int(run.gpu)})
        row["pipeline_s_per_image"] = round(r["median_s"], 4)
        row["pipeline_peak_gib"] = peak_memory_gib(run.dev)
        rec["rows"].append(row)
        run.log(row)
        run.save()


def part_throughput(run: Run, rec: dict[str, Any]) -> None:
    from efficell_app.core.device import (
        peak_memory_gib,
        precision_name,
        reset_peak_memory,
    )
    from efficell_app.core.pipelined import post_processing_pool, segment_stream

    n = 8 if run.args.tiny else run.args.images
    n_seq = max(2, n // 10)
    t = time.perf_counter()
    imgs = real_images(run, n)
    rec.update(images=n, size=run.size, read_s=round(time.perf_counter() - t, 2))
    rows = rec["rows"] = []

    def stream(seg: Any, images: list, pool: Any) -> dict[str, Any]:
        t = time.perf_counter()
        items = list(segment_stream(seg, images, seg.target_diameter, pool=pool, prefetch=run.args.prefetch))
        wall = time.perf_counter() - t
        bad = [i.error for i in items if not i.ok]
        if bad:
            raise RuntimeError(f"{len(bad)} image(s) failed, first: {bad[0]}")
        return {"images": len(items), "seconds": round(wall, 2), "images_per_s": round(len(items) / wall, 2),
                "main_process_dense_share": round(sum(i.dense_seconds for i in items) / wall, 3),
                "cells": int(sum(len(i.cells) for i in items))}

    workers = run.args.workers or max(1, (os.cpu_count() or 2) - 1)
    t = time.perf_counter()
    with post_processing_pool(workers) as pool:
        rec.update(workers=workers, pool_start_s=round(time.perf_counter() - t, 2))
        configs = (("auto", None),) if not run.gpu else (("auto", None), ("auto", 16), ("fp32", 16))
        for prec, tile_batch in configs:
            if run.over(rec):
                return
            seg = build_segmenter(run, "efficell_compact", precision=prec, batch_size=tile_batch)
            list(segment_stream(seg, imgs[:2], seg.target_diameter, pool=pool))  # warm-up (kernels, workers)
            base = {"precision": precision_name(run.dev, prec), "tile_batch": seg.predictor.batch_size}
            row = {**base, "mode": f"no overlap (first {n_seq} images)", **stream(seg, imgs[:n_seq], None)}
            rows.append(row)
            run.log(row)
            run.save()
            if run.over(rec):
                return
            reset_peak_memory(run.dev)
            row = {**base, "mode": f"overlapped, {workers} CPU workers", **stream(seg, imgs, pool),
                   "peak_gib": peak_memory_gib(run.dev)}
            rows.append(row)
            run.log(row)
            run.save()
            del seg
            release(run.dev)


class _SimulatedLimit:
    """A CPU dry run's stand-in for a GPU memory limit: the predictor believes it is on 'cuda' and its
    forward pass raises torch.OutOfMemoryError above ``max_tiles`` tiles (None: always)."""

    def __init__(self, pred: Any, max_tiles: int | None) -> None:
        import torch

        real = pred._real_forward = getattr(pred, "_real_forward", pred._forward)

        def forward(batch: Any) -> Any:
            if pred.device.startswith("cuda") and (max_tiles is None or len(batch) > max_tiles):
                raise torch.OutOfMemoryError("CUDA out of memory (simulated on a CPU dry run)")
            saved, pred.device = pred.device, "cpu"  # the 'GPU' computes on the CPU
            try:
                return real(batch)
            finally:
                pred.device = saved

        pred._forward, pred._staging_device = forward, lambda nbytes: "cpu"
        pred.device = "cuda"


def part_oom(run: Run, rec: dict[str, Any]) -> None:
    """Segment one image under a memory limit that forces smaller batches, then one under which only the CPU can finish."""
    import torch

    from efficell_app.core.device import cuda_index, peak_memory_gib, reset_peak_memory

    img = real_images(run, 8, 768 if run.args.tiny else 1024)[-1]  # several tiles, so that a batch of 8 can shrink
    rows = rec["rows"] = []
    seg = build_segmenter(run, "efficell_compact", batch_size=8)
    d = seg.target_diameter
    ref = seg.segment(img, diameter=d)
    if run.gpu:
        idx = cuda_index(run.dev)
        reset_peak_memory(run.dev)
        seg.segment(img, diameter=d)
        peak8 = torch.cuda.max_memory_allocated(idx)
        seg.predictor.batch_size = 1
        reset_peak_memory(run.dev)
        seg.segment(img, diameter=d)
        peak1 = torch.cuda.max_memory_allocated(idx)
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated(idx)
        total = torch.cuda.get_device_properties(idx).total_memory
        rec.update(base_gib=round(base / 2**30, 3), peak_batch8_gib=round(peak8 / 2**30, 3),
                   peak_batch1_gib=round(peak1 / 2**30, 3), total_gib=round(total / 2**30, 1))
        limits = [("batch shrinks", base + 2 * (peak1 - base) + 64 * 2**20), ("only the CPU can finish", base + 2**20)]
    else:
        limits = [("batch shrinks (simulated)", 2), ("only the CPU can finish (simulated)", None)]
    for label, limit in limits:
        if run.over(rec):
            return
        seg.predictor.batch_size = 8
        row: dict[str, Any] = {"limit": label}
        if run.gpu:
            if limit >= peak8:
                row["note"] = "batch 8 fits under this limit: nothing forced"
            torch.cuda.empty_cache()
            row["limit_gib"] = round(limit / 2**30, 3)
            torch.cuda.set_per_process_memory_fraction(min(1.0, limit / total), idx)
        else:
            seg.predictor.device = "cpu"
            seg.predictor.model.to("cpu")
            _SimulatedLimit(seg.predictor, limit)
        t = time.perf_counter()
        try:
            res = seg.segment(img, diameter=d)
        finally:
            if run.gpu:
                torch.cuda.set_per_process_memory_fraction(1.0, idx)
        row.update(seconds=round(time.perf_counter() - t, 2), notes=res.notes, finished_on=seg.predictor.device,
                   batch_after=seg.predictor.batch_size, **f1_and_counts(ref.labels, res.labels))
        row["completed_on_fallback"] = any("GPU out of memory" in n for n in res.notes)
        rows.append(row)
        run.log(row)
        run.save()
        if seg.predictor.device == "cpu" and run.gpu:  # back to the GPU for the next limit
            seg.predictor.device = run.dev
            seg.predictor.model.to(run.dev)
    rec["peak_gib_after"] = peak_memory_gib(run.dev)


def part_fewshot(run: Run, rec: dict[str, Any]) -> None:
    from benchmarks.gpu_data import fewshot_pairs
    from efficell_app.core.cancel import CancelToken
    from efficell_app.core.device import peak_memory_gib, reset_peak_memory, synchronize
    from efficell_app.core.encoders import build_encoder
    from efficell_app.core.errors import Cancelled
    from efficell_app.core.model.adapter_io import read_adapter_meta
    from efficell_app.core.training import TrainConfig, train_adapter

    pairs = fewshot_pairs(run.data)[: 2 if run.args.tiny else 5]
    epochs = 1 if run.args.tiny else run.args.fewshot_epochs
    rec.update(images=len(pairs), epochs=epochs)
    rows = rec["rows"] = []
    tmp = Path(tempfile.mkdtemp(prefix="efficell_gpu_fewshot_"))
    for name in run.args.fewshot_encoders:
        if run.over(rec):
            return
        builtin = name == "efficell_compact"
        t = time.perf_counter()
        enc = build_encoder(name, weights="auto" if builtin else None, small=run.args.tiny and not builtin, device=run.dev)
        synchronize(run.dev)
        row: dict[str, Any] = {"encoder": name, "weights": "built-in" if builtin else "random (published size)"
                               if not run.args.tiny else "random (tiny test size)",
                               "encoder_load_s": round(time.perf_counter() - t, 2)}
        out = tmp / f"{name}.safetensors"
        cfg = TrainConfig(train=pairs, out=out, encoder=enc, init_adapter="auto", epochs=epochs, device=run.dev, seed=0)
        token = CancelToken()
        reset_peak_memory(run.dev)
        t = time.perf_counter()
        try:
            for _ev in train_adapter(cfg, token):
                if time.time() > rec["deadline"]:
                    token.cancel()
        except Cancelled:
            row["stopped"] = f"time box reached after {time.perf_counter() - t:.0f} s"
            rec["cut"] = True
        row["end_to_end_s"] = round(time.perf_counter() - t, 2)
        row["peak_gib"] = peak_memory_gib(run.dev)
        if out.is_file():
            meta = read_adapter_meta(out)
            tr = meta.training
            row.update({k: tr.get(k) for k in ("steps", "steps_per_second", "cache_seconds", "train_seconds",
                                               "validation_seconds", "encoder_passes", "batch", "dihedral")})
            row["val_ap50"] = (meta.metrics.get("validation") or {}).get("ap50")
            row["init"] = "generalist adapter" if (tr.get("init_adapter") or {}).get("name") else "fresh adapters"
            row["recorded_device"] = (tr.get("device_info") or {}).get("name")
        rows.append(row)
        run.log(row)
        run.save()
        del enc
        release(run.dev)


# ----------------------------------------------------------------------------- report


def _fmt(v: Any, nd: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def markdown(res: dict[str, Any]) -> str:
    """The docs/benchmarks.md section for these results (partial results give a partial section)."""
    parts = res["parts"]
    info = parts.get("info", {})
    dev = info.get("device") or {}
    dry = res["dry_run"]
    title = "## GPU: speed, memory and CPU agreement (`benchmarks/gpu.py`)"
    lines = [title + (" — CPU DRY RUN, not GPU numbers" if dry else ""), ""]
    if dry:
        lines += ["**This is a dry run on a CPU at tiny sizes** (small random encoders, "
                  f"{res['size']}² images): it shows that every part of the script runs end to end; its numbers say "
                  "nothing about a GPU. **GPU numbers are pending**: no GPU was available to this work yet. "
                  "`docs/gpu.md` gives the one command that produces them on a GPU machine.", ""]
    machine = dev.get("name", "?")
    if dev.get("memory_gib"):
        machine += f", {dev['memory_gib']} GiB, compute capability {dev.get('capability')}, CUDA {dev.get('cuda')}"
    lines += [f"Command: `{res['command']}` · device `{res['device']}`: {machine} · CPU: {info.get('cpu', '?')}, "
              f"{info.get('cores', '?')} cores · torch {info.get('torch', '?')} · {res['date']} · total {res.get('seconds', 0):.0f} s"
              f" · load average at end {res.get('load_average', '?')}", ""]
    lines += ["| part | status | seconds |", "|---|---|---|"]
    lines += [f"| {k} | {v.get('status')} | {_fmt(v.get('seconds'), 1)} |" for k, v in parts.items()]
    size = f"{res['size']}²"
    a = parts.get("agreement", {})
    if a.get("rows"):
        tol = a["tolerance"]
        lines += ["", f"### Same labels on the CPU and the {'GPU' if not dry else 'run device'} (built-in model, {size} real images)", "",
                  f"Reference: CPU fp32. Tolerance: fp32 F1@0.5 ≥ {tol['fp32']['f1_50']} and probabilities within "
                  f"{tol['fp32']['max_abs_prob']} (cuDNN convolutions use TF32 by default); bf16 F1@0.5 ≥ {tol['bf16']['f1_50']} "
                  f"and within {tol['bf16']['max_abs_prob']}. F1@0.5 counts cells matched at IoU ≥ 0.5.", "",
                  "| image | precision | F1@0.5 vs CPU | cells CPU / here | max abs Δ probability | identical labels | within tolerance |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['image']} | {r['precision']} | {r['f1_50']:.4f} | {r['cells_ref']} / {r['cells']} | {r['max_abs_prob']:.5f} | "
                  f"{'yes' if r['identical_labels'] else 'no'} | {'yes' if r['within_tolerance'] else '**no**'} |" for r in a["rows"]]
    e = parts.get("encoders", {})
    if e.get("rows"):
        lines += ["", f"### Seconds per {size} image, by encoder and precision", "",
                  "Encoder alone: the encoder on the tiles the pipeline cuts from one image, in batches of 1 and "
                  f"{2 if res['tiny'] else 4} images. "
                  "Dense pass: tiling, encoder, adapters and blending (`DensePredictor.predict`). Whole pipeline: "
                  "`Segmenter.segment` with the diameter given (normalisation, dense pass, watershed), one image at a time. "
                  + ("All but the built-in model are tiny test configurations with random weights (a dry run). "
                     if res["tiny"] else "All but the built-in model have random weights at their published sizes (their "
                     "compute is the real one; their watershed time is not representative). ")
                  + "Peak: GPU memory held by tensors.", "",
                  f"| encoder | params (M) | precision | tiles × size | encoder alone, batch 1 | encoder alone, batch {2 if res['tiny'] else 4} "
                  "| dense pass | whole pipeline | peak GiB (encoder / pipeline) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in e["rows"]:
            b4 = r.get("encoder_s_per_image_b4", r.get("encoder_s_per_image_b2"))
            lines.append(f"| {r['encoder']} | {r['params_m']} | {r['precision']} | {r['tiles_per_image']} × {r['tile']}² | "
                         f"{_fmt(r.get('encoder_s_per_image_b1'), 4)} | {_fmt(b4, 4)} | {_fmt(r.get('dense_s_per_image'), 4)} | "
                         f"{_fmt(r.get('pipeline_s_per_image'), 4)} | {_fmt(r.get('encoder_peak_gib'), 2)} / {_fmt(r.get('pipeline_peak_gib'), 2)} |")
    tp = parts.get("throughput", {})
    if tp.get("rows"):
        n_img = tp.get("images") or 0
        lines += ["", f"### Throughput: {n_img} real {size} images, built-in model, measurements included", "",
                  f"Images: {n_img // 4} Usiigaci phase-contrast fields (6 fields, in up to 4 orientations) and "
                  f"{n_img - n_img // 4} mosaics of DSB2018 fluorescence images (`benchmarks/gpu_data.py`). Diameter "
                  "given (the model's own, no rescaling). Overlapped: "
                  f"`core/pipelined.py`, dense passes in the main process while {tp.get('workers')} worker process(es) run the "
                  f"watershed and the measurements (pool started once, {tp.get('pool_start_s')} s, not counted). "
                  "Dense share: the part of the wall time the main process spent in dense passes.", "",
                  "| mode | precision | tile batch | images | images/s | dense share | cells | peak GiB |", "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['mode']} | {r['precision']} | {r['tile_batch']} | {r['images']} | {r['images_per_s']:.2f} | "
                  f"{r['main_process_dense_share']:.2f} | {r['cells']} | {_fmt(r.get('peak_gib'), 2)} |" for r in tp["rows"]]
    o = parts.get("oom", {})
    if o.get("rows"):
        lines += ["", "### Out-of-memory fallback, forced", ""]
        if "base_gib" in o:
            lines += [f"Built-in model, one 1024² image (9 tiles), batch of 8 tiles. Memory held: {o['base_gib']} GiB before, peak "
                      f"{o['peak_batch8_gib']} GiB at batch 8 and {o['peak_batch1_gib']} GiB at batch 1, unconstrained. "
                      "Limits set with `torch.cuda.set_per_process_memory_fraction`.", ""]
        lines += ["| limit | GiB | finished on | batch after | notes to the user | F1@0.5 vs unconstrained | completed on the fallback |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['limit']} | {_fmt(r.get('limit_gib'), 3)} | {r['finished_on']} | {r['batch_after']} | "
                  f"{'; '.join(n for n in r['notes'] if 'memory' in n) or '–'} | {r['f1_50']:.4f} | {'yes' if r['completed_on_fallback'] else '**no**'} |"
                  for r in o["rows"]]
    fs = parts.get("fewshot", {})
    if fs.get("rows"):
        lines += ["", f"### Few-shot training, {fs.get('images')} images, end to end", "",
                  f"The first {fs.get('images')} images of the DSB2018 training split (resources/models/data_split.json), "
                  f"{fs.get('epochs')} epoch(s); end to end = `train_adapter` from reading the images to the "
                  "saved adapter (feature caching, training, validation on a held-out band, threshold choice). Encoder "
                  "load: building it (random weights) or loading the built-in weights, not included.", "",
                  "| encoder | weights | end to end (s) | caching (s) | steps | steps/s | validation (s) | val AP@0.5 | peak GiB | device recorded |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['encoder']} | {r['weights']} | {r['end_to_end_s']:.1f}{' (' + r['stopped'] + ')' if r.get('stopped') else ''} | "
                  f"{_fmt(r.get('cache_seconds'), 1)} | {_fmt(r.get('steps'))} | {_fmt(r.get('steps_per_second'), 1)} | "
                  f"{_fmt(r.get('validation_seconds'), 1)} | {_fmt(r.get('val_ap50'))} | {_fmt(r.get('peak_gib'), 2)} | {_fmt(r.get('recorded_device'))} |"
                  for r in fs["rows"]]
    lines += ["", "### Targets (issue 16)", ""] + targets(res)
    return "\n".join(lines) + "\n"


def targets(res: dict[str, Any]) -> list[str]:
    parts = res["parts"]
    pending = "pending (dry run: no GPU)" if res["dry_run"] else "not measured"

    def verdict(v: float | None, ok: bool) -> str:
        if v is None or res["dry_run"]:
            return pending if v is None else f"{v:.3f} measured on a dry run: {pending}"
        return f"{v:.3f} → {'met' if ok else 'NOT met'}"

    tp = [r for r in parts.get("throughput", {}).get("rows", []) if r["mode"].startswith("overlapped")]
    best = max((r["images_per_s"] for r in tp), default=None)
    h = [r for r in parts.get("encoders", {}).get("rows", []) if r["encoder"] == "sam_vit_h" and r["precision"] == "bf16"]
    hv = None
    if h:
        hv = min(h[0]["encoder_s_per_image_b1"], h[0].get("encoder_s_per_image_b4", 1e9))
    fs = {r["encoder"]: r for r in parts.get("fewshot", {}).get("rows", []) if not r.get("stopped")}
    fb = fs.get("sam_vit_b", {}).get("end_to_end_s")
    fh = fs.get("sam_vit_h", {}).get("end_to_end_s")
    return [f"- whole pipeline, built-in model, ≥ {TARGETS['pipeline_images_per_s']:.0f} images/s at 1024²: "
            f"{verdict(best, best is not None and best >= TARGETS['pipeline_images_per_s'])}",
            f"- SAM ViT-H encoder ≤ {TARGETS['sam_vit_h_bf16_encoder_s']} s per 1024² in bf16: "
            f"{verdict(hv, hv is not None and hv <= TARGETS['sam_vit_h_bf16_encoder_s'])}",
            f"- few-shot, 5 images end to end, SAM ViT-B ≤ {TARGETS['fewshot_sam_vit_b_s']:.0f} s: "
            f"{verdict(fb, fb is not None and fb <= TARGETS['fewshot_sam_vit_b_s'])}",
            f"- few-shot, 5 images end to end, SAM ViT-H ≤ {TARGETS['fewshot_sam_vit_h_s']:.0f} s: "
            f"{verdict(fh, fh is not None and fh <= TARGETS['fewshot_sam_vit_h_s'])}",
            "- forced out-of-memory run completes on the fallback path: "
            + ("; ".join(f"{r['limit']}: {'yes' if r['completed_on_fallback'] else 'no'} (on {r['finished_on']})"
                         for r in parts.get("oom", {}).get("rows", [])) or pending)]


# ----------------------------------------------------------------------------- main


def publish(results: dict[str, Any]) -> None:
    """Results into benchmarks/results/gpu.{json,md} and docs/benchmarks.md."""
    from benchmarks.report import write_section

    (ROOT / "benchmarks" / "results").mkdir(parents=True, exist_ok=True)
    (ROOT / "benchmarks" / "results" / "gpu.json").write_text(json.dumps(results, indent=1, default=str))
    print(write_section("gpu", markdown(results)))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, help="folder for gpu.json and gpu.md")
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu for a dry run")
    p.add_argument("--tiny", action="store_true", help="tiny sizes (small encoders, 256² images): a quick dry run")
    p.add_argument("--data", type=Path, default=ROOT / ".gpu_data", help="the pack made by benchmarks/gpu_data.py")
    p.add_argument("--budget", type=float, default=240.0, help="seconds for the whole run; parts beyond it are skipped")
    p.add_argument("--box-scale", type=float, default=1.0, help="multiply every part's time box")
    p.add_argument("--skip", default="", help=f"parts to leave out, comma-separated ({', '.join(PARTS)})")
    p.add_argument("--encoders", default=",".join(ENCODERS))
    p.add_argument("--fewshot-encoders", default=",".join(FEWSHOT_ENCODERS))
    p.add_argument("--fewshot-epochs", type=int, default=FEWSHOT_EPOCHS)
    p.add_argument("--images", type=int, default=100, help="images in the throughput part")
    p.add_argument("--workers", type=int, default=0, help="post-processing processes (0: one per core but one)")
    p.add_argument("--prefetch", type=int, default=3, help="threads reading and normalising the next images")
    p.add_argument("--write-docs", action="store_true", help="also write benchmarks/results/gpu.md and docs/benchmarks.md")
    p.add_argument("--publish", type=Path, metavar="DIR", help="no run: write the docs from DIR/gpu.json (a GPU run's output)")
    a = p.parse_args()
    if a.publish:
        publish(json.loads((a.publish / "gpu.json").read_text()))
        return 0
    if a.out is None:
        p.error("--out DIR is needed (or --publish DIR)")
    a.skip = {s.strip() for s in a.skip.split(",") if s.strip()}
    unknown = a.skip - set(PARTS)
    if unknown:
        p.error(f"unknown part(s) in --skip: {', '.join(sorted(unknown))} (parts: {', '.join(PARTS)})")
    a.encoders = [s.strip() for s in a.encoders.split(",") if s.strip()]
    a.fewshot_encoders = [s.strip() for s in a.fewshot_encoders.split(",") if s.strip()]
    os.environ.setdefault("EFFICELL_HOME", tempfile.mkdtemp(prefix="efficell_home_"))  # no user folders touched
    from benchmarks.gpu_data import check

    check(a.data)
    run = Run(a)
    if a.tiny:  # a CPU is slow even at tiny sizes: room for every part to finish
        for k in BOX_S:
            BOX_S[k] = max(BOX_S[k], 240)
    run.log(f"device {run.dev}, budget {a.budget:.0f} s, out {run.out}")
    for name, fn in zip(PARTS, (part_info, part_agreement, part_encoders, part_throughput, part_oom, part_fewshot)):
        run.part(name, fn)
    if a.write_docs:
        publish(run.results)
    print(markdown(run.results))
    failed = [k for k, v in run.results["parts"].items() if str(v.get("status", "")).startswith("failed")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
