"""Recipe that trains the built-in compact encoder together with the generalist adapters, on a CPU or a GPU.

    python -m efficell_app.core.training_pack --data ../shared/data --out work/pack_v2      # once
    python -m efficell_app.core.builtin_training --device cpu --pack work/pack_v2 --work work/builtin_v2 \\
        --init builtin --steps 3000 --lr 5e-4 --val-every 200                                # CPU, hours; --resume goes on
    python -m efficell_app.core.builtin_training --device cuda --pack work/pack_v2 --work /tmp/run --init builtin \\
        --steps 100000 --minutes 6 --batch 96 --lr 1e-3 --val-every 600 --workers 14 --threads 8   # GPU (docs/models.md)

Data: the train part of split v2 (``resources/models/data_split_v2.json``) from a training pack
(``core/training_pack``), every image rescaled so its median cell diameter is ``TARGET_DIAMETER``;
the samples stay on the training device and every batch is cut and augmented there
(``core/device_augment``: crop, scale, dihedral, density, illumination, focus, halo, contrast, stain,
noise). Crops are drawn from the three datasets in turn.

Selection: every ``--val-every`` steps the model segments the validation part of split v2 at the
given cell diameter with the same tiling and watershed as the app, and is scored with the project's
instance metric (``core/metrics``: pooled AP@0.5 per dataset); the checkpoint with the best *mean*
validation AP@0.5 over the datasets is kept (``best.safetensors``). The test split is not read here.

Same recipe on both devices: on CUDA bf16 autocast; fixed seeds; ``--resume`` continues a run from
``last.safetensors`` + ``state.json`` (model, optimiser moments, step, random-generator states,
history), so a run can be stopped and continued; the learning rate follows a cosine over whichever
budget ends first (``--steps`` or ``--minutes``). Hardware, steps and time go into ``train_meta.json``
and from there into the shipped adapter's metadata (``core/builtin_export``).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .data_split import DATASETS
from .training_pack import TARGET_DIAMETER  # noqa: F401 - the recipe's cell size (builtin_export imports it from here)

log = logging.getLogger("efficell.builtin_training")

ENCODER_MEAN, ENCODER_STD = 0.5, 0.25  # as the compact encoder's spec (efficell_compact)
# Watershed thresholds of every validation during training (those of the phase-2 model), so checkpoints
# compare on the network alone; the export tunes them afterwards, on validation too.
VALIDATION_FG, VALIDATION_MARKER = 0.4, 0.4


@dataclass
class RecipeConfig:
    device: str = "cpu"
    steps: int = 6000  # the cosine schedule's length (also a hard stop)
    minutes: float | None = None  # optional wall-clock budget; the schedule follows whichever ends first
    batch: int = 8
    lr: float = 5e-4
    warmup: int = 100
    weight_decay: float = 1e-4
    val_every: int = 250
    seed: int = 0
    threads: int = 1
    workers: int = 1  # processes preparing samples (targets) at start
    init: str | None = "builtin"  # "builtin" (shipped weights), a checkpoint file, or None (from scratch)
    bn_recalibrate: int = 0  # batches over which the encoder's BatchNorm statistics are re-estimated before step 0
    val_bn_batches: int = 50  # each validation (and checkpoint kept) uses BatchNorm statistics of clean crops
    train_fraction: float = 1.0  # share of each dataset's training images (for the data-size curve)
    augment: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict) -> RecipeConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def hardware(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        p = torch.cuda.get_device_properties(torch.device(device))
        return f"{p.name} ({p.total_memory / 2**30:.0f} GiB), torch {torch.__version__}, CUDA {torch.version.cuda}"
    from .device import cpu_name

    return f"{cpu_name()}, {torch.get_num_threads()} torch threads, no GPU, torch {torch.__version__} ({platform.platform()})"


# ---------------------------------------------------------------------------------------------- data
def _model_scale(labels: np.ndarray) -> float:
    from .training_data import object_diameter

    return TARGET_DIAMETER / max(object_diameter(labels), 1.0)


def _prepare(pair):  # noqa: ANN001, ANN202 - PackedPair -> TrainSample (top level: runs in worker processes)
    from .training_data import prepare_sample

    return prepare_sample(pair.image, pair.labels, TARGET_DIAMETER, scale=_model_scale(pair.labels),
                          name=f"{pair.dataset}/{pair.stem}")


def subset(pairs: Sequence, fraction: float, seed: int) -> list:
    """A seeded ``fraction`` of each dataset's pairs (at least one), for the data-size curve."""
    if fraction >= 1.0:
        return list(pairs)
    out = []
    for ds in DATASETS:
        mine = [p for p in pairs if p.dataset == ds]
        keep = np.random.default_rng(seed).permutation(len(mine))[:max(1, round(fraction * len(mine)))]
        out += [mine[i] for i in sorted(keep)]
    return out


def training_samples(pack: Path, fraction: float = 1.0, seed: int = 0, workers: int = 1) -> Iterator[tuple[int, Any]]:
    """(dataset index, TrainSample) of the train part of a pack; targets made in ``workers`` processes."""
    from .training_pack import read_pack

    pairs = subset(list(read_pack(pack, parts=("train",))), fraction, seed)
    ids = [DATASETS.index(p.dataset) for p in pairs]
    if workers <= 1:
        yield from zip(ids, map(_prepare, pairs))
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: the parent moves samples to a GPU while the workers still run
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as ex:
        yield from zip(ids, ex.map(_prepare, pairs, chunksize=4))


@dataclass
class ValidationItem:
    dataset: str
    name: str
    x: np.ndarray  # (3, h, w) float32 model input at the model scale (cell diameter given)
    truth: np.ndarray  # (H, W) labels at the pack's size


def validation_items(pack: Path) -> list[ValidationItem]:
    from .images import model_input
    from .strips import resize_each_channel
    from .training_pack import read_pack

    out = []
    for p in read_pack(pack, parts=("validation",)):
        x = resize_each_channel(model_input(p.image), float(np.clip(_model_scale(p.labels), 0.1, 8.0)))
        out.append(ValidationItem(p.dataset, p.stem, x.astype(np.float32), p.labels))
    return out


# ---------------------------------------------------------------------------------------------- model
class TrainModel:
    """Encoder + adapters being trained; ``module(x01)`` -> the adapters' outputs, like ``EffiCellModel``."""

    def __init__(self, init: str | None, device: str) -> None:
        import torch
        from torch import nn

        from .encoders.compact import CompactEncoder
        from .model.adapters import build_adapters

        self.encoder = CompactEncoder()
        self.adapters = build_adapters(self.encoder.out_channels, self.encoder.stride)
        if init:
            self.load(checkpoint_state(init))
        enc, ad = self.encoder, self.adapters

        class _Net(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.encoder, self.adapters = enc, ad

            def forward(self, x01: torch.Tensor) -> dict[str, torch.Tensor]:
                return self.adapters(self.encoder((x01 - ENCODER_MEAN) / ENCODER_STD), x01)

        self.module = _Net().to(device)

    def state(self) -> dict:
        state = {f"encoder.{k}": v.detach().cpu().contiguous() for k, v in self.encoder.state_dict().items()}
        state.update({f"adapters.{k}": v.detach().cpu().contiguous() for k, v in self.adapters.state_dict().items()})
        return state

    def load(self, state: dict) -> None:
        self.encoder.load_state_dict({k[8:]: v.float() if v.is_floating_point() else v for k, v in state.items() if k.startswith("encoder.")})
        self.adapters.load_state_dict({k[9:]: v.float() if v.is_floating_point() else v for k, v in state.items() if k.startswith("adapters.")})


def checkpoint_state(init: str) -> dict:
    """Weights to start from: the shipped model ("builtin") or a training checkpoint file."""
    from safetensors.torch import load_file

    if init == "builtin":
        from .encoders.compact import BUNDLED_FILE
        from .pipeline import DEFAULT_ADAPTER_FILE
        from .resources import models_dir

        state = {f"encoder.{k}": v for k, v in load_file(str(models_dir() / BUNDLED_FILE)).items()}
        state.update({f"adapters.{k}": v for k, v in load_file(str(models_dir() / DEFAULT_ADAPTER_FILE)).items()})
        return state
    return load_file(str(init))


def validate(module, items: Sequence[ValidationItem], device: str, params=None) -> dict[str, Any]:  # noqa: ANN001
    """Segment the validation items at the given diameter (app's tiling + watershed) and score them per dataset."""
    from .evaluation import summarize
    from .inference import DensePredictor
    from .instances import InstanceParams, dense_to_labels
    from .training_data import resize_labels

    was_training = module.training
    predictor = DensePredictor(module, device=device, tile=512, patch=16)
    params = params or InstanceParams(fg_threshold=VALIDATION_FG, marker_threshold=VALIDATION_MARKER)
    out: dict[str, Any] = {}
    try:
        by_ds: dict[str, tuple[list, list]] = {}
        for it in items:
            prob, geo = predictor.predict(it.x)
            pred = resize_labels(dense_to_labels(prob, geo[0], params), it.truth.shape)
            by_ds.setdefault(it.dataset, ([], []))[0].append(it.truth)
            by_ds[it.dataset][1].append(pred)
        for ds, (gts, preds) in by_ds.items():
            s = summarize(gts, preds)
            out[ds] = {"ap5": s["ap5"], "ap75": s["ap75"], "n_images": s["n_images"]}
    finally:
        module.train(was_training)
    out["mean_ap5"] = round(float(np.mean([out[ds]["ap5"] for ds in by_ds])), 4) if by_ds else 0.0
    out["mean_ap75"] = round(float(np.mean([out[ds]["ap75"] for ds in by_ds])), 4) if by_ds else 0.0
    return out


def recalibrate_batchnorm(module, dd, rng: np.random.Generator, batches: int, batch: int) -> None:  # noqa: ANN001
    """Re-estimate the encoder's BatchNorm running statistics as a plain average over ``batches`` batches of
    un-augmented crops drawn from every dataset (weights unchanged).

    Running statistics kept with momentum 0.1 follow the last ~10 training batches; the phase-1/2 recipe took
    its batches from one dataset at a time, so the shipped statistics lean towards whichever came last.
    """
    import torch
    from torch import nn

    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    was_training = module.training
    module.train()
    try:
        with torch.no_grad():
            for _ in range(batches):
                module(dd.crops(dd._draw(rng, batch))[:, 0:3])
    finally:
        for m, mom in zip(bns, momenta):
            m.momentum = mom
        module.train(was_training)


# ---------------------------------------------------------------------------------------------- checkpoints
def _save_weights(path: Path, state: dict, meta: dict) -> None:
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".part")
    save_file(state, str(tmp), metadata={k: json.dumps(v) for k, v in meta.items()})
    os.replace(tmp, path)


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def _optimizer_tensors(opt) -> dict:  # noqa: ANN001
    out = {}
    for i, p in enumerate(opt.param_groups[0]["params"]):
        st = opt.state.get(p)
        if st:
            for k in ("exp_avg", "exp_avg_sq", "step"):
                out[f"opt.{i}.{k}"] = st[k].detach().cpu().reshape(-1) if k == "step" else st[k].detach().cpu().contiguous()
    return out


def _load_optimizer(opt, state: dict) -> None:  # noqa: ANN001
    for i, p in enumerate(opt.param_groups[0]["params"]):
        if f"opt.{i}.exp_avg" in state:
            opt.state[p] = {"exp_avg": state[f"opt.{i}.exp_avg"].to(p.device), "exp_avg_sq": state[f"opt.{i}.exp_avg_sq"].to(p.device),
                            "step": state[f"opt.{i}.step"].reshape(()).float()}


def lr_at(step: int, elapsed: float, cfg: RecipeConfig) -> float:
    """Linear warm-up, then cosine to 2 % of the peak over whichever budget (steps, minutes) ends first."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = step / cfg.steps
    if cfg.minutes:
        frac = max(frac, elapsed / (cfg.minutes * 60.0))
    return cfg.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))


# ---------------------------------------------------------------------------------------------- training
def train(cfg: RecipeConfig, pack: Path, work: Path, resume: bool = False, stop_after: int | None = None,
          resume_steps: int | None = None) -> dict:
    """Train into ``work`` (best.safetensors, last.safetensors, state.json, history.json, train_meta.json).

    ``resume``: continue the run in ``work`` with its own recipe (only the device, threads, workers and
    ``cfg.minutes`` are taken from ``cfg``); ``resume_steps``: a new schedule length for it (longer or
    shorter, beyond the current step). ``stop_after``: leave after this many steps of this call.
    """
    import torch
    from safetensors.torch import load_file

    from .device_augment import AugmentConfig, DeviceData
    from .losses import total_loss

    device = cfg.device
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True  # fixed crop size: let cuDNN pick its fastest kernels once
    work.mkdir(parents=True, exist_ok=True)
    state_file, last_file, best_file = work / "state.json", work / "last.safetensors", work / "best.safetensors"
    prev = json.loads(state_file.read_text()) if resume and state_file.exists() else None
    if resume and prev is None:
        raise FileNotFoundError(f"{work}: nothing to resume (no state.json)")
    if prev:
        if resume_steps is not None and resume_steps <= prev["step"]:
            raise ValueError(f"{work}: the run is at step {prev['step']}; a schedule of {resume_steps} steps is already over")
        cfg = RecipeConfig.from_dict({**prev["config"], **{k: getattr(cfg, k) for k in ("device", "threads", "workers", "minutes",
                                                                                        "val_bn_batches")},
                                      "steps": resume_steps or prev["config"]["steps"]})
    aug = AugmentConfig.from_dict(cfg.augment)
    t0 = time.time()
    dd = DeviceData(training_samples(pack, cfg.train_fraction, cfg.seed, cfg.workers), device, aug)
    val = validation_items(pack)
    log.info("%d training samples (%.2f GiB on %s), %d validation images, prepared in %.0f s",
             len(dd.samples), dd.nbytes() / 2**30, device, len(val), time.time() - t0)

    model = TrainModel(None if prev else cfg.init, device)
    net = model.module
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(cfg.seed)
    gen_t = torch.Generator(device=device)
    gen_t.manual_seed(cfg.seed)
    step, elapsed0, history, best = 0, 0.0, [], None
    phases = []
    if prev:
        state = load_file(str(last_file))
        model.load(state)
        net.to(device)
        _load_optimizer(opt, state)
        gen_t.set_state(state["torch_generator"].to(torch.uint8))
        rng.bit_generator.state = prev["numpy_rng"]
        dd._turn = prev["turn"]
        step, elapsed0, best, phases = prev["step"], prev["elapsed"], prev["best"], prev["phases"]
        history = json.loads((work / "history.json").read_text())
        log.info("resumed at step %d (%.0f min trained; best mean validation AP@0.5 %s)", step, elapsed0 / 60,
                 best and best["mean_ap5"])
    amp = device.startswith("cuda")
    hw = hardware(device)
    phase = {"start_step": step, "hardware": hw, "device": device, "batch": cfg.batch, "threads": cfg.threads,
             "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    phases.append(phase)

    def checkpoint() -> None:
        elapsed = elapsed0 + time.time() - t_run
        st = model.state()
        st.update(_optimizer_tensors(opt))
        st["torch_generator"] = gen_t.get_state().cpu()
        _save_weights(last_file, st, {"step": step})
        phase.update(end_step=step, seconds=round(time.time() - t_run), steps=step - phase["start_step"])
        _write_json(work / "history.json", history)
        _write_json(state_file, {"config": asdict(cfg), "augment": aug.to_dict(), "step": step, "elapsed": elapsed,
                                 "best": best, "phases": phases, "numpy_rng": rng.bit_generator.state, "turn": dd._turn})
        write_meta(work, cfg, aug, step, elapsed, best, phases)

    def run_validation() -> None:
        nonlocal best
        tv = time.time()
        # Training-mode statistics describe augmented crops; validate (and keep) the weights with statistics of
        # clean ones, re-estimated from a generator of their own so the training's random stream is untouched.
        saved = {k: v.clone() for k, v in net.state_dict().items() if ".running_" in k or k.endswith("num_batches_tracked")}
        if cfg.val_bn_batches:
            recalibrate_batchnorm(net, dd, np.random.default_rng([cfg.seed, step]), cfg.val_bn_batches, cfg.batch)
        v = validate(net, val, device)
        rec = {"step": step, "t": round(elapsed0 + tv - t_run), "val": v, "val_seconds": round(time.time() - tv, 1)}
        history.append(rec)
        log.info("validation at step %d: mean AP@0.5 %.4f  %s  (%.0f s)", step, v["mean_ap5"],
                 " ".join(f"{ds}={v[ds]['ap5']:.3f}" for ds in DATASETS if ds in v), rec["val_seconds"])
        if best is None or v["mean_ap5"] > best["mean_ap5"]:
            best = {"step": step, **v}
            _save_weights(best_file, model.state(), {"step": step, "validation": v})
            log.info("new best checkpoint (step %d)", step)
        net.load_state_dict(saved, strict=False)  # training goes on with its own statistics

    t_run = time.time()
    net.train()
    if step == 0:
        write_meta(work, cfg, aug, 0, 0.0, None, phases, initial_record(cfg.init))
        if cfg.bn_recalibrate:
            tb = time.time()
            recalibrate_batchnorm(net, dd, np.random.default_rng(cfg.seed + 1), cfg.bn_recalibrate, cfg.batch)
            log.info("BatchNorm statistics re-estimated over %d batches (%.0f s)", cfg.bn_recalibrate, time.time() - tb)
        run_validation()  # the starting point (the shipped model when --init builtin)
        checkpoint()
    losses: list[float] = []
    skipped = 0
    last_step = cfg.steps if stop_after is None else min(cfg.steps, step + stop_after)
    while step < last_step and not (cfg.minutes and elapsed0 + time.time() - t_run >= cfg.minutes * 60.0):
        elapsed = elapsed0 + time.time() - t_run  # wall clock of the run, validation included
        lr = lr_at(step, elapsed, cfg)
        for g in opt.param_groups:
            g["lr"] = lr
        x, sem_t, geo_t, valid = dd.batch(rng, cfg.batch, gen_t)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            out = net(x)
        out = {k: v.float() for k, v in out.items()}
        loss, _ = total_loss(out, sem_t, geo_t, valid)
        opt.zero_grad(set_to_none=True)
        if torch.isfinite(loss):
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
            losses.append(float(loss.detach()))
        else:  # e.g. a bf16 overflow: skip the update rather than poison the weights
            skipped += 1
            log.warning("step %d: loss %s, update skipped (%d so far)", step, float(loss.detach()), skipped)
            if skipped > 20:
                raise FloatingPointError(f"{skipped} non-finite losses: lower --lr (best.safetensors is kept)")
        step += 1
        if step % 20 == 0:
            history.append({"step": step, "t": round(elapsed, 1), "lr": lr, "loss": round(float(np.mean(losses)), 5) if losses else None})
            log.info("step %d  %.0f s  lr %.2e  loss %.4f", step, elapsed, lr, np.mean(losses) if losses else float("nan"))
            losses = []
        if step % cfg.val_every == 0:
            run_validation()
            checkpoint()
    out_of_time = bool(cfg.minutes) and elapsed0 + time.time() - t_run >= cfg.minutes * 60.0
    if (step >= cfg.steps or out_of_time) and not any(h.get("step") == step and "val" in h for h in history):
        run_validation()  # the end of the schedule is always validated
    checkpoint()
    elapsed = elapsed0 + time.time() - t_run
    meta = write_meta(work, cfg, aug, step, elapsed, best, phases)
    log.info("done: %d steps, %.1f min of training; best step %s, mean validation AP@0.5 %s",
             step, elapsed / 60, best and best["step"], best and best["mean_ap5"])
    return meta


def initial_record(init: str | None) -> dict | None:
    """Where the weights started: the shipped model's identity and training record, or a file."""
    if init != "builtin":
        return {"file": init} if init else None
    from .model.adapter_io import file_sha256, read_adapter_meta
    from .pipeline import DEFAULT_ADAPTER_FILE
    from .resources import models_dir

    path = models_dir() / DEFAULT_ADAPTER_FILE
    m = read_adapter_meta(path)
    return {"adapter_sha256": file_sha256(path), "encoder_sha256": m.encoder_sha256, "training": m.training}


def write_meta(work: Path, cfg: RecipeConfig, aug, step: int, elapsed: float, best: dict | None, phases: list,  # noqa: ANN001
               init: dict | None = None) -> dict:
    meta_file = work / "train_meta.json"
    if init is None and meta_file.exists():
        init = json.loads(meta_file.read_text()).get("initialised_from")
    meta = {"recipe": "python -m efficell_app.core.builtin_training", "split": "resources/models/data_split_v2.json",
            "config": asdict(cfg), "augment": aug.to_dict(), "total_steps": step, "training_seconds": round(elapsed),
            "best": best, "phases": phases, "target_diameter": TARGET_DIAMETER, "initialised_from": init,
            "validation_thresholds": {"fg_threshold": VALIDATION_FG, "marker_threshold": VALIDATION_MARKER}}
    _write_json(work / "train_meta.json", meta)
    return meta


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--pack", type=Path, default=Path("work/pack_v2"), help="training pack (python -m efficell_app.core.training_pack)")
    p.add_argument("--work", type=Path, default=Path("work/builtin_v2"), help="run folder (checkpoints, history, log)")
    p.add_argument("--resume", action="store_true", help="continue the run in --work from its last checkpoint")
    p.add_argument("--init", default="builtin", help="'builtin' (shipped weights), a checkpoint file, or 'none' (from scratch)")
    d = RecipeConfig()
    p.add_argument("--steps", type=int, default=None,
                   help=f"length of the learning-rate schedule (default {d.steps}; with --resume: change the run's)")
    p.add_argument("--minutes", type=float, default=None, help="wall-clock budget of training (the schedule ends with it)")
    p.add_argument("--batch", type=int, default=None, help="crops per step (default: 8 on a CPU, 96 on a GPU)")
    p.add_argument("--lr", type=float, default=d.lr, help="peak learning rate")
    p.add_argument("--warmup", type=int, default=d.warmup)
    p.add_argument("--val-every", type=int, default=d.val_every)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, default=d.threads, help="torch CPU threads")
    p.add_argument("--workers", type=int, default=None, help="processes preparing the samples (default: 1 on a CPU, 12 on a GPU)")
    p.add_argument("--fraction", type=float, default=1.0, help="share of each dataset's training images (data-size curve)")
    p.add_argument("--bn-recalibrate", type=int, default=0, metavar="BATCHES",
                   help="re-estimate the encoder's BatchNorm statistics over this many un-augmented batches before step 0")
    p.add_argument("--val-bn-batches", type=int, default=d.val_bn_batches, metavar="BATCHES",
                   help="clean batches re-estimating BatchNorm statistics before each validation (0: training statistics)")
    p.add_argument("--stop-after", type=int, default=None, help="leave after this many steps (continue with --resume)")
    p.add_argument("--augment", default="{}", help='JSON overrides of device_augment.AugmentConfig, e.g. {"halo_p": 0}')
    a = p.parse_args(argv)
    cuda = a.device.startswith("cuda")
    cfg = RecipeConfig(device=a.device, steps=d.steps if a.steps is None else a.steps, minutes=a.minutes, batch=a.batch or (96 if cuda else 8), lr=a.lr,
                       warmup=a.warmup, val_every=a.val_every, seed=a.seed, threads=a.threads,
                       workers=a.workers or (12 if cuda else 1), init=None if a.init == "none" else a.init,
                       train_fraction=a.fraction, augment=json.loads(a.augment), bn_recalibrate=a.bn_recalibrate,
                       val_bn_batches=a.val_bn_batches)
    a.work.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                        handlers=[logging.StreamHandler(), logging.FileHandler(a.work / "train.log")])
    meta = train(cfg, a.pack, a.work, resume=a.resume, stop_after=a.stop_after, resume_steps=a.steps if a.resume else None)
    print(json.dumps({"best": meta["best"], "total_steps": meta["total_steps"], "training_seconds": meta["training_seconds"]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
