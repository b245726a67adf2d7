"""Few-shot training of the adapters on a frozen encoder: a generator of progress events.

    for p in train_adapter(TrainConfig(train=[(img_path, mask_path), ...], out=Path("lab.safetensors"), minutes=5)):
        print(p.phase, p.step, p.losses.get("total"), p.val)

The same generator runs under the CLI and in the GUI's worker process. It only trains the
adapters: encoder features are computed once per tile and dihedral transform
(:mod:`.feature_cache`) and each step runs the adapters alone. Validation uses held-out
images, or, when none are given, a held-out band (20 %) of each training image, scored by
AP@0.5 after the real post-processing (``instances.dense_to_labels``). The best-validation
state is saved atomically at the end; a cancelled run (``Cancelled`` raised at the next
step) writes nothing.
"""

from __future__ import annotations

import logging
import math
import platform
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Union

import numpy as np

from .cancel import CancelToken
from .errors import EffiCellError, InputError, OutputError
from .images import ImageData
from .instances import InstanceParams
from .training_data import TrainSample

log = logging.getLogger(__name__)

ImageLike = Union[str, Path, ImageData]
MaskLike = Union[str, Path, np.ndarray, None]
PHASES = ("preparing", "caching features", "training", "validating", "saving", "done")
DEFAULT_MINUTES = 10.0
MARKER_THRESHOLDS = (0.3, 0.4, 0.5, 0.6)
CACHE_SHARE = 0.35  # at most this part of a time budget goes to computing encoder features
MIN_STEPS_BEFORE_VALIDATION = 10  # with a time budget: scoring nearly untrained adapters wastes it


@dataclass
class TrainConfig:
    """Everything one training run needs (picklable: the GUI sends it to a worker process)."""

    train: Sequence[tuple[ImageLike, MaskLike]]  # (image, mask) pairs; a mask of None = missing
    out: Path  # the adapter file to write
    val: Sequence[tuple[ImageLike, MaskLike]] | None = None  # None: hold out a band of each image
    val_fraction: float = 0.2  # band held out per image when ``val`` is None; 0 = no validation
    encoder: Any = "efficell_compact"  # registered name, or a FrozenEncoder instance (tests)
    encoder_weights: str | Path | None = "auto"
    init_adapter: str | Path | None = "auto"  # "auto": the built-in generalist if it fits; None: fresh
    target_diameter: float | None = None  # None: the init adapter's, else 24 px
    channels: tuple[int, ...] | None = None
    minutes: float | None = None  # wall-clock budget of the whole run (default 10 without epochs)
    epochs: int | None = None
    lr: float | None = None  # None: 1e-3 when fine-tuning, 2e-3 for fresh adapters
    batch_size: int | None = None  # None: 4 on a CPU, 8 on a GPU
    crop: int = 256  # training crop side (rounded to the encoder stride)
    scales: tuple[float, ...] = (1.0,)  # extra rescalings of each image (each is cached separately)
    seed: int = 0
    patience: int = 5  # validations without improvement before stopping early
    device: str = "auto"
    cache_dir: Path | None = None  # None: features in memory (disk above ``memory_cache_mb``)
    memory_cache_mb: int = 2048
    tune_thresholds: bool = True  # pick marker_threshold on the validation images
    name: str = ""
    description: str = ""


@dataclass
class TrainProgress:
    """One progress event. The last one (phase "done") carries the result."""

    phase: str
    step: int = 0
    epoch: float = 0.0
    total_steps: int | None = None
    fraction: float = 0.0  # of the whole run, 0..1
    losses: dict[str, float] = field(default_factory=dict)
    val: dict[str, float] | None = None  # latest validation scores
    best: dict[str, float] | None = None  # best validation scores so far
    eta_s: float | None = None
    elapsed_s: float = 0.0
    message: str = ""
    warnings: list[str] = field(default_factory=list)  # new in this event
    adapter_path: Path | None = None
    adapter_sha256: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    trainable_params: int = 0


@dataclass
class _Input:
    name: str
    img: ImageData
    mask: np.ndarray
    source: str


@dataclass
class _Val:
    name: str
    x: np.ndarray  # (3, h, w) normalised, at model scale
    gt: np.ndarray  # (H, W) labels at the original scale


@dataclass
class _Tile:
    image: int  # index of the training image
    sample: TrainSample  # padded
    sha: str
    box: tuple[int, int, int, int]
    weight: float


# ----------------------------------------------------------------------------- inputs


def _name(x: ImageLike, i: int) -> str:
    if isinstance(x, ImageData):
        return str(x.path) if x.path else f"image {i + 1}"
    return str(x)


def load_pairs(pairs: Sequence[tuple[ImageLike, MaskLike]], channels: tuple[int, ...] | None = None) -> tuple[list[_Input], list[str]]:
    """Read and check (image, mask) pairs. Unusable ones are skipped and named in the warnings."""
    from .images import read_image, read_mask

    items, warnings = [], []
    for i, (im, mk) in enumerate(pairs):
        name = _name(im, i)
        try:
            img = im if isinstance(im, ImageData) else read_image(im)
            if mk is None:
                raise InputError(name, "no mask for this image; skipped")
            if isinstance(mk, np.ndarray):
                mask = np.asarray(mk)
                if mask.shape != img.shape:
                    raise InputError(name, f"mask is {mask.shape[0]}x{mask.shape[1]} but the image is "
                                           f"{img.shape[0]}x{img.shape[1]}; skipped")
                mask = mask.astype(np.int32)
                where = name
            else:
                mask = read_mask(mk, img.shape)
                where = str(mk)
            if mask.max() <= 0:
                raise InputError(where, "mask has no objects (nothing to learn from); skipped")
            for c in channels or ():
                if c >= img.n_channels:
                    raise InputError(name, f"channel {c} requested but the image has {img.n_channels}; skipped")
        except EffiCellError as exc:
            msg = str(exc)
            warnings.append(msg if msg.endswith("skipped") else f"{msg}; skipped")
            continue
        warnings.extend(f"{name}: {note}" for note in img.notes)  # e.g. NaN pixels replaced, PNG named .tif
        stem = img.path.stem if img.path else f"image{i + 1}"
        items.append(_Input(stem, img, mask, name))
    return items, warnings


def _band(mask: np.ndarray, fraction: float) -> tuple[str, int] | None:
    """The side ('bottom', 'top', 'right', 'left') and width of a held-out band.

    The band must hold objects and leave objects to train on; among such sides, the one
    whose share of objects is closest to ``fraction`` is taken (a representative band).
    """
    n_all = len(np.unique(mask)) - 1
    best = None
    for side in ("bottom", "top", "right", "left"):
        size = mask.shape[0] if side in ("bottom", "top") else mask.shape[1]
        n = int(round(size * fraction))
        if n < 8 or size - n < 8:
            continue
        band, rest = _band_slices(mask.shape, side, n)
        nb, nr = len(np.unique(mask[band])) - 1, len(np.unique(mask[rest])) - 1
        if nb < 1 or nr < 1:
            continue
        score = abs(nb / max(n_all, 1) - fraction)
        if best is None or score < best[0]:
            best = (score, side, n)
    return None if best is None else (best[1], best[2])


def _band_slices(shape: tuple[int, int], side: str, n: int) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    h, w = shape
    full = slice(None)
    if side == "bottom":
        return (slice(h - n, h), full), (slice(0, h - n), full)
    if side == "top":
        return (slice(0, n), full), (slice(n, h), full)
    if side == "right":
        return (full, slice(w - n, w)), (full, slice(0, w - n))
    return (full, slice(0, n)), (full, slice(n, w))


def _crop_sample(s: TrainSample, sl: tuple[slice, slice]) -> TrainSample:
    ys, xs = sl
    return replace(s, image=s.image[:, ys, xs], labels=s.labels[ys, xs], sem=s.sem[ys, xs], geo=s.geo[:, ys, xs],
                   valid=s.valid[ys, xs])


def _pad_sample(s: TrainSample, shape: tuple[int, int]) -> TrainSample:
    from .feature_cache import pad_image

    h, w = s.sem.shape
    ph, pw = shape[0] - h, shape[1] - w
    if ph == 0 and pw == 0:
        return s
    return replace(s, image=pad_image(s.image, shape).astype(np.float32), labels=np.pad(s.labels, ((0, ph), (0, pw))),
                   sem=np.pad(s.sem, ((0, ph), (0, pw))), geo=np.pad(s.geo, ((0, 0), (0, ph), (0, pw))),
                   valid=np.pad(s.valid, ((0, ph), (0, pw))))


# ----------------------------------------------------------------------------- model set-up


def _init_adapters(cfg: TrainConfig, encoder, sha: str) -> tuple[Any, Any, list[str]]:  # noqa: ANN001
    """(adapters, init meta or None, warnings)."""
    from .errors import AdapterError
    from .model import build_adapters
    from .model.adapter_io import file_sha256, load_adapter

    notes: list[str] = []
    path = cfg.init_adapter
    if path is not None and str(path).lower() == "auto":
        from .pipeline import default_adapter_path

        path = default_adapter_path() if encoder.spec.name == "efficell_compact" else None
        if path is not None and path.exists():
            try:
                adapters, meta, _ = load_adapter(path, encoder.spec.name, sha)
                meta.training = {**(meta.training or {}), "file_sha256": file_sha256(path), "file": str(path)}
                return adapters, meta, notes
            except AdapterError as exc:
                notes.append(f"built-in adapter not used ({exc.reason}); training fresh adapters")
        return build_adapters(encoder.out_channels, encoder.stride), None, notes
    if path is None:
        return build_adapters(encoder.out_channels, encoder.stride), None, notes
    adapters, meta, _ = load_adapter(path, encoder.spec.name, sha)
    meta.training = {**(meta.training or {}), "file_sha256": file_sha256(path), "file": str(path)}
    return adapters, meta, notes


def _lr_at(base: float, frac: float, step: int, warmup: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return base * (0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * min(max(frac, 0.0), 1.0))))


def _prepare(it: _Input, cfg: TrainConfig, target_d: float, channels: tuple[int, ...] | None,
             hold_out: bool) -> tuple[list[TrainSample], _Val | None, dict[str, Any]]:
    """One image's training samples (one per scale), its held-out band (or None) and its summary."""
    from .feature_cache import array_sha256
    from .images import model_input
    from .training_data import object_diameter, prepare_sample, resize_image

    d = object_diameter(it.mask)
    base = float(np.clip(target_d / d if d > 0 else 1.0, 0.1, 8.0))
    band = _band(it.mask, cfg.val_fraction) if hold_out else None
    val = None
    if band is not None:  # validation: the band of the whole normalised image, at model scale
        side, n = band
        x = resize_image(model_input(it.img, channels), base).astype(np.float32)
        b_sl, _ = _band_slices(x.shape[1:], side, int(round(n * base)))
        ob_sl, _ = _band_slices(it.mask.shape, side, n)
        val = _Val(f"{it.name} ({side} {cfg.val_fraction:.0%})", np.ascontiguousarray(x[:, b_sl[0], b_sl[1]]), it.mask[ob_sl])
    per = []
    for s in cfg.scales:
        smp = prepare_sample(it.img, it.mask, target_d, channels, scale=base * s, name=it.name)
        if band is not None:  # train on the rest only (the loss never sees the band's labels)
            _, r_sl = _band_slices(smp.sem.shape, band[0], int(round(band[1] * smp.scale)))
            smp = _crop_sample(smp, r_sl)
        per.append(smp)
    info = {"name": it.name, "size": list(it.mask.shape), "sha256": array_sha256(it.img.data),
            "n_cells": int(len(np.unique(it.mask)) - 1), "diameter_px": round(d, 2), "scale": round(base, 4),
            "held_out": None if band is None else f"{band[0]} {band[1]} px"}
    return per, val, info


def _make_tiles(samples: list[list[TrainSample]], tile: int, stride: int, crop: int) -> tuple[list[_Tile], dict[int, list[int]]]:
    """Encoder tiles of every (padded) sample with labelled pixels, and the tile indices per image."""
    from .feature_cache import array_sha256, tile_boxes

    tiles: list[_Tile] = []
    for i, per in enumerate(samples):
        for smp in per:
            shape, boxes = tile_boxes(*smp.sem.shape, tile, stride, min_side=crop)
            smp = _pad_sample(smp, shape)
            sha = array_sha256(smp.image)
            for b in boxes:
                area = float(smp.valid[b[0]:b[2], b[1]:b[3]].sum())
                if area > 0:
                    tiles.append(_Tile(i, smp, sha, b, area))
    by_image: dict[int, list[int]] = {}
    for j, t in enumerate(tiles):
        by_image.setdefault(t.image, []).append(j)
    return tiles, by_image


# ----------------------------------------------------------------------------- the loop


def train_adapter(config: TrainConfig, cancel: CancelToken | None = None) -> Iterator[TrainProgress]:
    """Train adapters for a frozen encoder; yields :class:`TrainProgress` events.

    Raises :class:`~efficell_app.core.errors.Cancelled` (at the next step) when ``cancel``
    is set, leaving no adapter file; :class:`InputError` when no usable image is left.
    """
    import torch

    from .encoders import build_encoder
    from .feature_cache import FeatureCache, default_cache_dir
    from .images import model_input
    from .inference import choose_device
    from .losses import total_loss
    from .model.adapter_io import RANDOM_WEIGHTS
    from .training_data import object_diameter, resize_image

    cfg = config
    t_start = time.time()
    if cfg.minutes is None and cfg.epochs is None:
        cfg = replace(cfg, minutes=DEFAULT_MINUTES)
    if cfg.minutes is not None and cfg.minutes <= 0 or cfg.epochs is not None and cfg.epochs <= 0:
        raise ValueError("minutes and epochs must be positive")
    deadline = t_start + cfg.minutes * 60.0 if cfg.minutes is not None else None
    out = Path(cfg.out)
    if not out.parent.is_dir():
        raise OutputError(out, f"the folder {out.parent} does not exist")

    def check() -> None:
        if cancel is not None:
            cancel.raise_if_cancelled()

    def event(phase: str, **kw: Any) -> TrainProgress:
        return TrainProgress(phase=phase, elapsed_s=time.time() - t_start, **kw)

    # -- inputs and model
    yield event("preparing", message="reading images and masks")
    items, warnings = load_pairs(cfg.train, cfg.channels)
    if warnings:
        n_skipped = len(cfg.train) - len(items)
        yield event("preparing", warnings=list(warnings),
                    message=f"{n_skipped} training pair(s) skipped" if n_skipped else "warnings while reading the training images")
    if not items:
        raise InputError(None, "no usable training images: " + ("; ".join(warnings) or "none given"))
    val_items: list[_Input] = []
    if cfg.val is not None:
        val_items, vw = load_pairs(cfg.val, cfg.channels)
        warnings += vw
        if vw:
            n_skipped = len(cfg.val) - len(val_items)
            yield event("preparing", warnings=vw, message=f"{n_skipped} validation pair(s) skipped" if n_skipped
                        else "warnings while reading the validation images")
    check()
    device = choose_device(cfg.device)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    if isinstance(cfg.encoder, str):
        encoder = build_encoder(cfg.encoder, weights=cfg.encoder_weights, device=device)
    else:
        encoder = cfg.encoder.to(device)
    enc_sha = encoder.weights_sha256 or RANDOM_WEIGHTS
    adapters, init_meta, notes = _init_adapters(cfg, encoder, enc_sha)
    if notes:
        warnings += notes
        yield event("preparing", warnings=notes)
    adapters = adapters.to(device).train()
    stride, spec = encoder.stride, encoder.spec
    target_d = float(cfg.target_diameter or (init_meta.target_diameter if init_meta else 24.0))
    channels = cfg.channels if cfg.channels is not None else (tuple(init_meta.channels) if init_meta and init_meta.channels else None)
    params = InstanceParams(**{k: v for k, v in ((init_meta.instance_params if init_meta else None) or {}).items()
                               if k in InstanceParams.__dataclass_fields__})
    crop = max(stride, int(round(cfg.crop / stride)) * stride)
    crop = min(crop, max(stride, spec.input_size // stride * stride))
    batch = cfg.batch_size or (4 if device == "cpu" else 8)

    # -- samples at model scale, validation bands, tiles
    samples: list[list[TrainSample]] = []
    vals: list[_Val] = []
    summary: list[dict[str, Any]] = []
    if cfg.val is not None and not val_items:
        w = "no usable validation images; holding out a band of each training image instead"
        warnings.append(w)
        yield event("preparing", warnings=[w])
    hold_out = not val_items and cfg.val_fraction > 0
    for it in items:
        per, val, info = _prepare(it, cfg, target_d, channels, hold_out)
        samples.append(per)
        vals += [val] if val is not None else []
        summary.append(info)
        check()
    for it in val_items:
        d = object_diameter(it.mask)
        scale = float(np.clip(target_d / d if d > 0 else 1.0, 0.1, 8.0))
        vals.append(_Val(it.name, resize_image(model_input(it.img, channels), scale).astype(np.float32), it.mask))
    if cfg.val_fraction > 0 and not vals:
        w = "no image has room for a held-out band with cells; training without validation (the last state is kept)"
        warnings.append(w)
        yield event("preparing", warnings=[w])

    tiles, by_image = _make_tiles(samples, spec.input_size, stride, crop)
    image_ids = sorted(by_image)
    n_crops = sum(max(1, round((t.box[2] - t.box[0]) * (t.box[3] - t.box[1]) / crop**2)) for t in tiles)
    steps_per_epoch = max(1, math.ceil(n_crops / batch))

    # -- feature cache
    feat_bytes = sum(encoder.out_channels) * 2 * sum((t.box[2] - t.box[0]) * (t.box[3] - t.box[1]) for t in tiles) // stride**2
    cache_dir = cfg.cache_dir
    if cache_dir is None and feat_bytes * 8 > cfg.memory_cache_mb * 2**20:
        cache_dir = default_cache_dir()
    cache = FeatureCache(encoder, device=device, cache_dir=cache_dir)
    t_cache = time.time()
    budget = CACHE_SHARE * (deadline - t_start) if deadline is not None else None
    yield event("caching features", message=f"{len(tiles)} tile(s), up to 8 transforms each", fraction=0.0)
    fill = cache.fill([(t.sample.image, t.sha, t.box, t.sample.scale) for t in tiles], budget)
    for done, total in fill:
        check()
        el = time.time() - t_cache
        yield event("caching features", fraction=0.3 * done / total, eta_s=el / max(done, 1) * (total - done),
                    message=f"{done}/{total}")
    ks = cache.transforms_cached
    validator = _Validator(cache, vals, device, spec.input_size, stride)
    if vals:
        check()
        yield event("caching features", fraction=0.3, message="validation images")
        validator.warm(adapters, params, timed=init_meta is None)
    cache_seconds = time.time() - t_cache
    log.info("feature cache: %d passes, %.1f s, %d hits", cache.stats.misses, cache_seconds, cache.stats.hits)

    # -- training
    fine_tune = init_meta is not None
    base_lr = cfg.lr or (1e-3 if fine_tune else 2e-3)
    opt = torch.optim.AdamW([p for p in adapters.parameters() if p.requires_grad], lr=base_lr, weight_decay=1e-4)
    total_steps = cfg.epochs * steps_per_epoch if cfg.epochs is not None else None
    warmup = min(20, max(3, (total_steps or 200) // 20))
    val_every_epochs = max(1, (cfg.epochs or 1) // 10)
    best_state: dict[str, Any] | None = None
    best: dict[str, float] | None = None
    best_dense: list | None = None
    best_step = 0
    since_best = 0
    last_val: dict[str, float] | None = None
    t_train = time.time()
    last_val_time = t_train
    step = last_val_step = 0
    step_seconds = 0.0  # time in training steps alone (batches, forward, backward, update)
    ema: dict[str, float] = {}

    if vals and fine_tune:
        yield event("validating", message="scoring the initial adapter")
        last_val, best_dense = validator.run(adapters, params)
        best, best_state = last_val, _copy_state(adapters)
        yield event("validating", val=last_val, best=best, message=f"initial adapter: AP@0.5 {last_val['ap50']:.3f}")
    stopped_early = False
    while True:
        check()
        now = time.time()
        if total_steps is not None and step >= total_steps:
            break
        reserve = validator.reserve(bool(vals), cfg.tune_thresholds)  # any further step needs a final validation
        mean_step = step_seconds / step if step else 0.0
        if deadline is not None and now + reserve + mean_step >= deadline:
            break
        frac = step / total_steps if total_steps else (now - t_train) / max(deadline - reserve - t_train, 1e-6)
        lr = _lr_at(base_lr, frac, step, warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        t_step = time.time()
        x, feats, sem_t, geo_t, valid = _make_batch(tiles, by_image, image_ids, cache, ks, rng, batch, crop, stride)
        x, sem_t, geo_t, valid = x.to(device), sem_t.to(device), geo_t.to(device), valid.to(device)
        feats = [f.to(device, torch.float32) for f in feats]
        outp = adapters(feats, x)
        loss, terms = total_loss(outp, sem_t, geo_t, valid, stride)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(adapters.parameters(), 5.0)
        opt.step()
        step += 1
        step_seconds += time.time() - t_step
        terms["total"] = float(loss.detach())
        if not math.isfinite(terms["total"]):  # diverged: the weights are no longer finite numbers
            raise EffiCellError(f"training diverged at step {step} (the loss is not finite); try a lower learning rate")
        for k_, v in terms.items():
            ema[k_] = v if k_ not in ema else 0.9 * ema[k_] + 0.1 * v
        el = time.time() - t_start
        if total_steps is not None:
            eta = (time.time() - t_train) / step * (total_steps - step)
            est_total = total_steps
            frac_all = 0.3 + 0.7 * step / total_steps
        else:
            eta = max(0.0, deadline - time.time())
            rate = step / max(time.time() - t_train - validator.seconds_spent, 1e-6)
            est_total = step + int(rate * max(deadline - time.time() - reserve, 0.0))
            frac_all = min(1.0, el / (deadline - t_start))
        yield event("training", step=step, epoch=step / steps_per_epoch, total_steps=est_total, fraction=frac_all,
                    losses=dict(ema), val=last_val, best=best, eta_s=eta)
        if not vals:
            continue
        if total_steps is not None:
            due = step % (steps_per_epoch * val_every_epochs) == 0 or step == total_steps
        else:
            due = (step >= MIN_STEPS_BEFORE_VALIDATION and
                   time.time() - last_val_time >= max((deadline - t_start) / 6.0, 5.0 * validator.last_seconds, 10.0))
        if not due:
            continue
        yield event("validating", step=step, epoch=step / steps_per_epoch, total_steps=est_total, losses=dict(ema))
        last_val, dense = validator.run(adapters, params)
        last_val_time, last_val_step = time.time(), step
        if best is None or last_val["ap50"] > best["ap50"] + 1e-4:
            best, best_state, best_dense, best_step, since_best = last_val, _copy_state(adapters), dense, step, 0
        else:
            since_best += 1
        yield event("validating", step=step, epoch=step / steps_per_epoch, total_steps=est_total, losses=dict(ema),
                    val=last_val, best=best, message=f"AP@0.5 {last_val['ap50']:.3f} (best {best['ap50']:.3f} at step {best_step})")
        if cfg.patience and since_best >= cfg.patience:
            stopped_early = True
            break
    check()
    train_seconds = time.time() - t_train
    if step == 0 and not fine_tune:
        raise EffiCellError(f"the time budget ran out before the first training step (reading the images and caching "
                            f"encoder features took {time.time() - t_start:.0f} s); give more minutes")
    if vals and step > 0 and last_val_step != step:
        yield event("validating", step=step, message="final validation")
        last_val, dense = validator.run(adapters, params)
        if best is None or last_val["ap50"] > best["ap50"] + 1e-4:
            best, best_state, best_dense, best_step = last_val, _copy_state(adapters), dense, step
    if best_state is not None:
        adapters.load_state_dict(best_state)
    if vals and cfg.tune_thresholds:
        check()
        yield event("validating", step=step, message="choosing the cell-seed threshold")
        params, best = validator.tune(adapters, params, best_dense, best)
    check()

    # -- save (atomically; nothing is written before this point)
    yield event("saving", step=step, message=str(out), val=last_val, best=best)
    meta = _make_meta(cfg, encoder, enc_sha, adapters, init_meta, target_d, channels, params, summary, vals, best,
                      dict(steps=step, best_step=best_step, seconds=round(time.time() - t_start, 1),
                           train_seconds=round(train_seconds, 1), cache_seconds=round(cache_seconds, 1),
                           validation_seconds=round(validator.seconds_spent, 1), step_seconds=round(step_seconds, 1),
                           steps_per_second=round(step / step_seconds, 3) if step_seconds > 0 else None,
                           encoder_passes=cache.stats.misses, dihedral=len(ks), batch=batch, crop=crop, lr=base_lr,
                           steps_per_epoch=steps_per_epoch, stopped_early=stopped_early, device=device,
                           warnings=warnings))
    from .model.adapter_io import save_adapter

    check()
    sha = save_adapter(out, adapters, meta)
    seconds = time.time() - t_start
    metrics = dict(meta.metrics)
    yield event("done", step=step, epoch=step / steps_per_epoch, total_steps=step, fraction=1.0, losses=dict(ema),
                val=last_val, best=best, eta_s=0.0, adapter_path=out, adapter_sha256=sha, metrics=metrics,
                seconds=seconds, trainable_params=adapters.num_trainable(),
                message=f"saved {out.name} ({step} steps, {seconds:.0f} s)")


def _copy_state(adapters) -> dict[str, Any]:  # noqa: ANN001
    return {k: v.detach().clone() for k, v in adapters.state_dict().items()}


def _make_batch(tiles: list[_Tile], by_image: dict[int, list[int]], image_ids: list[int], cache, ks: list[int],  # noqa: ANN001
                rng: np.random.Generator, batch: int, crop: int, stride: int):  # noqa: ANN202
    """A batch of stride-aligned crops: images balanced, tiles by labelled area, crops biased to cells."""
    import torch

    from .feature_cache import dihedral_box
    from .training_data import crop_box, dihedral, photometric

    ims, sems, geos, valids, feats = [], [], [], [], []
    for _ in range(batch):
        cand = by_image[image_ids[int(rng.integers(len(image_ids)))]]
        w = np.array([tiles[j].weight for j in cand])
        t = tiles[cand[int(rng.choice(len(cand), p=w / w.sum()))]]
        y0, x0, y1, x1 = t.box
        s = t.sample
        fg = (s.sem[y0:y1, x0:x1] > 0) & s.valid[y0:y1, x0:x1]
        cy0, cx0, _, _ = crop_box((y1 - y0, x1 - x0), crop, rng, fg)
        cy0, cx0 = cy0 // stride * stride, cx0 // stride * stride
        box = (cy0, cx0, cy0 + crop, cx0 + crop)
        k = int(ks[int(rng.integers(len(ks)))])
        sl = (slice(y0 + cy0, y0 + cy0 + crop), slice(x0 + cx0, x0 + cx0 + crop))
        im, se, ge, va = dihedral(k, s.image[:, sl[0], sl[1]], s.sem[sl], s.geo[:, sl[0], sl[1]], s.valid[sl])
        f = cache.get(s.image, t.sha, t.box, k, s.scale)
        ty0, tx0, ty1, tx1 = (v // stride for v in dihedral_box(box, (y1 - y0, x1 - x0), k))
        feats.append([lvl[:, ty0:ty1, tx0:tx1] for lvl in f])
        ims.append(photometric(im, rng))
        sems.append(se)
        geos.append(ge)
        valids.append(va)
    f_b = [torch.from_numpy(np.stack([f[i] for f in feats])) for i in range(len(feats[0]))]
    return (torch.from_numpy(np.stack(ims)), f_b, torch.from_numpy(np.stack(sems)).long(),
            torch.from_numpy(np.stack(geos)), torch.from_numpy(np.stack(valids)))


def _score(vals: list[_Val], dense: list[tuple[np.ndarray, np.ndarray]], params: InstanceParams) -> tuple[dict[str, float], list[np.ndarray]]:
    from skimage.segmentation import relabel_sequential

    from .instances import dense_to_labels
    from .metrics import average_precision
    from .training_data import resize_labels

    preds = []
    for v, (prob, geo) in zip(vals, dense):
        lab = resize_labels(dense_to_labels(prob, geo[0], params), v.gt.shape)
        preds.append(relabel_sequential(lab)[0].astype(np.int32))
    res = average_precision([v.gt for v in vals], preds, (0.5, 0.75, 0.9))
    p = res["pooled"]
    scores = {"ap50": p[0.5].ap, "ap75": p[0.75].ap, "ap90": p[0.9].ap, "f1_50": p[0.5].f1,
              "precision_50": p[0.5].precision, "recall_50": p[0.5].recall,
              "mean_matched_iou": p[0.5].mean_matched_iou or 0.0, "n_true": p[0.5].n_true, "n_pred": p[0.5].n_pred}
    return {k: (round(float(v), 4) if isinstance(v, float) else v) for k, v in scores.items()}, preds


class _Validator:
    """Scores adapters on the validation images through the real tiling and post-processing.

    Encoder features of the validation tiles come from the cache (``warm`` fills it), so a
    validation costs one adapter pass per tile plus the watershed. Keeps its own timings so
    the time budget can reserve room for the final validation and the threshold choice.
    """

    MAX_KEPT_PIXELS = 25_000_000  # dense maps of the best state are kept (float16) up to this size

    def __init__(self, cache, vals: list[_Val], device: str, tile: int, stride: int) -> None:  # noqa: ANN001
        self.cache, self.vals, self.device, self.tile, self.stride = cache, vals, device, tile, stride
        self.predict_seconds = 0.0  # last adapter pass over all validation images
        self.score_seconds = 0.0  # last post-processing + scoring
        self.seconds_spent = 0.0
        self.keep = sum(v.x.shape[1] * v.x.shape[2] for v in vals) <= self.MAX_KEPT_PIXELS

    @property
    def last_seconds(self) -> float:
        return self.predict_seconds + self.score_seconds

    def _predict(self, adapters, features_only: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:  # noqa: ANN001
        from .feature_cache import CachedFeatureModel
        from .inference import DensePredictor

        t0 = time.time()
        model = CachedFeatureModel(self.cache, adapters, features_only=features_only)
        # no CPU fallback: the adapters being trained stay on the training device
        pred = DensePredictor(model, device=self.device, tile=self.tile, patch=self.stride, cpu_fallback=False)
        try:
            return [pred.predict(v.x) for v in self.vals]
        finally:
            adapters.train()
            if not features_only:  # (warming the cache counts as caching time)
                self.predict_seconds = time.time() - t0
                self.seconds_spent += self.predict_seconds

    def warm(self, adapters, params: InstanceParams, timed: bool) -> None:  # noqa: ANN001
        """Compute (cache) the encoder features of every validation tile; with ``timed`` also run
        one validation, so the time budget knows what a validation costs before the first one."""
        self._predict(adapters, features_only=True)
        if timed:
            self.run(adapters, params)
        self.seconds_spent = 0.0

    def score(self, dense: list[tuple[np.ndarray, np.ndarray]], params: InstanceParams) -> dict[str, float]:
        t0 = time.time()
        try:
            return _score(self.vals, dense, params)[0]
        finally:
            self.score_seconds = time.time() - t0
            self.seconds_spent += self.score_seconds

    def run(self, adapters, params: InstanceParams) -> tuple[dict[str, float], list | None]:  # noqa: ANN001
        dense = self._predict(adapters)
        scores = self.score(dense, params)
        kept = [(p.astype(np.float16), g[:1].astype(np.float16)) for p, g in dense] if self.keep else None
        return scores, kept

    def reserve(self, final_validation: bool, tune: bool) -> float:
        """Seconds to keep free at the end of a time budget."""
        s = 2.0 + (1.5 * self.last_seconds if final_validation else 0.0)
        if tune:
            s += self.score_seconds * len(MARKER_THRESHOLDS) + (0.0 if self.keep else self.predict_seconds)
        return s

    def tune(self, adapters, params: InstanceParams, dense: list | None,  # noqa: ANN001
             best: dict[str, float] | None) -> tuple[InstanceParams, dict[str, float] | None]:
        """Pick ``marker_threshold`` maximising validation AP@0.5 (the current value wins ties)."""
        if dense is None:
            dense = self._predict(adapters)
        dense = [(p.astype(np.float32), g.astype(np.float32)) for p, g in dense]
        chosen, top = params, best if best is not None else self.score(dense, params)
        for m in MARKER_THRESHOLDS:
            p = replace(params, marker_threshold=m)
            s = self.score(dense, p)
            if s["ap50"] > top["ap50"] + 1e-4:
                chosen, top = p, s
        return chosen, top


def _make_meta(cfg: TrainConfig, encoder, enc_sha: str, adapters, init_meta, target_d: float,  # noqa: ANN001, PLR0913
               channels: tuple[int, ...] | None, params: InstanceParams, summary: list[dict[str, Any]], vals: list[_Val],
               best: dict[str, float] | None, run: dict[str, Any]):  # noqa: ANN202
    import torch

    from .device import describe_device
    from .model.adapter_io import AdapterMeta

    metrics: dict[str, Any] = {}
    if best is not None:
        metrics = {"validation": dict(best), "validation_source": "validation images" if cfg.val is not None else
                   f"held-out band ({cfg.val_fraction:.0%}) of each training image", "n_validation_images": len(vals)}
    init = None
    if init_meta is not None:
        init = {"name": init_meta.name, "file": (init_meta.training or {}).get("file"),
                "sha256": (init_meta.training or {}).get("file_sha256")}
    training = {"images": summary, "init_adapter": init, "target_diameter": target_d, "scales": list(cfg.scales),
                "seed": cfg.seed, "minutes": cfg.minutes, "epochs": cfg.epochs,
                "hardware": f"{platform.machine()}, {torch.get_num_threads()} threads, {run['device']}",
                "device_info": describe_device(run["device"]),
                "torch": torch.__version__, **run}
    name = cfg.name or Path(cfg.out).stem
    return AdapterMeta(encoder=encoder.spec.name, encoder_sha256=enc_sha, in_channels=tuple(encoder.out_channels),
                       stride=encoder.stride, config=adapters.config.to_dict(), target_diameter=target_d, channels=channels,
                       instance_params=dict(params.__dict__), name=name,
                       description=cfg.description or f"few-shot adapter trained on {len(summary)} image(s)",
                       training=training, metrics=metrics,
                       licence=getattr(init_meta, "licence", "") if init_meta is not None else "")
