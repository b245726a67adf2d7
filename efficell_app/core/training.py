"""Few-shot training of the adapters on a frozen encoder: a generator of progress events.

    for p in train_adapter(TrainConfig(train=[(img_path, mask_path), ...], out=Path("lab.safetensors"))):
        print(p.phase, p.step, p.losses.get("total"), p.val)

The same generator runs under the CLI and in the GUI's worker process. Only the adapters
train: encoder features are computed once per tile and dihedral transform
(:mod:`.feature_cache`) and each step runs the adapters alone (:mod:`.training_fit`).

Never below the start. Before the first step the starting adapter is scored on the
validation images (with its own instance thresholds). Training then has to beat that
score on images it did not train on, clearly (fewer errors than the start with p < 0.05:
``training_validation.evidence``), or the starting weights are kept and the run says so
(progress event, adapter metadata ``training.outcome``, the CLI's JSON line):

- with 2 or more training images: cross-validation over images. Each fold fine-tunes from the
  start on the other images and is scored, at a few checkpoints and at the recipe's mixes of
  start and trained weights (``Recipe.mixes``), on its held-out images (whole images, not
  bands: a band of 1-10 images is a few dozen cells). The pooled held-out score chooses the
  number of steps, the mix and the thresholds; if it beats the start, one last run on all
  images with that number of steps, mixed alike, makes the adapter, else the start is kept;
- with 1 image: a band of it is held out, and the best checkpoint is kept only if it beats
  the start on that band;
- with separate validation images: those, the same way.

The object diameter the masks give (median over the training images) can be stored in the
adapter (``AdapterMeta.cell_diameter``, ``store_diameter``); segmenting with the adapter then
uses it unless a diameter is given. A cancelled run (``Cancelled`` at the next step) writes nothing; the
adapter is saved atomically at the end.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import random
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .cancel import CancelToken
from .errors import EffiCellError, InputError, OutputError
from .instances import InstanceParams
from .training_fit import Fit, Recipe, mix_state
from .training_inputs import ImageLike, Input, MaskLike, load_pairs
from .training_validation import (Counts, ValImage, can_tune, choose_diameter, evidence, keeps_trained, labels_of,
                                  paired_evidence, scores, summary, tune, val_image)

log = logging.getLogger(__name__)

PHASES = ("preparing", "caching features", "training", "validating", "saving", "done")
DEFAULT_FOLDS = 3
CACHE_SHARE = 0.35  # at most this part of a time budget goes to computing encoder features
PLAN_AFTER_STEPS = 3
MAX_KEPT_PIXELS = 40_000_000  # dense maps of the held-out images kept over all checkpoints x mixes (float16, 4 maps each)  # with a time budget: steps of the first run timed before the plan is cut to fit


@dataclass
class TrainConfig:
    """Everything one training run needs (picklable: the GUI sends it to a worker process)."""

    train: Sequence[tuple[ImageLike, MaskLike]]  # (image, mask) pairs; a mask of None = missing
    out: Path  # the adapter file to write
    val: Sequence[tuple[ImageLike, MaskLike]] | None = None  # None: cross-validation over images (1 image: a band)
    val_fraction: float = 0.2  # band held out of a single training image; 0 = no validation at all
    encoder: Any = "efficell_compact"  # registered name, or a FrozenEncoder instance (tests)
    encoder_weights: str | Path | None = "auto"
    init_adapter: str | Path | None = "auto"  # "auto": the built-in generalist if it fits; None: fresh
    target_diameter: float | None = None  # model-scale diameter; None: the init adapter's, else 24 px
    channels: tuple[int, ...] | None = None
    minutes: float | None = None  # at most this long (wall clock): the run's steps are cut to fit
    epochs: int | None = None  # steps per run = epochs x steps per epoch (instead of the recipe's)
    steps: int | None = None  # steps per run (instead of the recipe's)
    lr: float | None = None  # scales the recipe's learning rates so the prompt encoder's is this
    batch_size: int | None = None  # None: the recipe's
    crop: int | None = None  # training crop side (rounded to the encoder stride); None: the recipe's
    scales: tuple[float, ...] | None = None  # rescalings of each image (each cached separately); None: the recipe's
    seed: int = 0
    device: str = "auto"
    cache_dir: Path | None = None  # None: features in memory (disk above ``memory_cache_mb``)
    memory_cache_mb: int = 2048
    tune_thresholds: bool = True  # re-tune the instance thresholds on the validation images
    folds: int = DEFAULT_FOLDS  # cross-validation folds over images (at most one per image); < 2: no cross-validation
    # the masks' cell diameter in the adapter, used when segmenting without a diameter: "no" (estimated per image:
    # measured better on held-out images, docs/method.md), "auto" (where it beats estimating on the training
    # images, leave-one-image-out, 2+ images), "yes"
    store_diameter: str = "no"
    # "auto": trained weights only on evidence that they beat the start (else the start's are kept); "trained": the
    # trained weights whatever the held-out images say (the evidence is still measured and reported)
    keep: str = "auto"
    recipe: Recipe | None = None  # None: :func:`default_recipe`
    name: str = ""
    description: str = ""
    # a file at ``out`` when the adapter is saved: replaced (True), or kept and the adapter saved beside it
    # (``<stem>_2.safetensors``; False: the command line checks at the start, but a file may appear during the run)
    overwrite: bool = False


@dataclass
class TrainProgress:
    """One progress event. The last one (phase "done") carries the result."""

    phase: str
    step: int = 0  # steps so far, over all runs of this training (folds and the final run)
    epoch: float = 0.0
    total_steps: int | None = None
    fraction: float = 0.0  # of the whole run, 0..1
    losses: dict[str, float] = field(default_factory=dict)
    val: dict[str, float] | None = None  # latest validation scores
    best: dict[str, float] | None = None  # best validation scores so far (the start's, until beaten)
    start: dict[str, float] | None = None  # the starting adapter's validation scores
    eta_s: float | None = None
    elapsed_s: float = 0.0
    message: str = ""
    warnings: list[str] = field(default_factory=list)  # new in this event
    adapter_path: Path | None = None
    adapter_sha256: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    outcome: dict[str, Any] = field(default_factory=dict)  # "done": what was kept and why
    seconds: float = 0.0
    trainable_params: int = 0


def default_recipe(n_images: int, fine_tune: bool) -> Recipe:
    """The fine-tuning recipe for ``n_images`` training images (chosen on the training split, docs/method.md)."""
    if not fine_tune:
        return Recipe(steps=300, lr=2e-3, decoder_lr=2e-3, weight_decay=1e-4, crop=256, checkpoints=6, warmup=15)
    # Fine-tuning: short (held-out AP peaked within 8-16 steps in every trial), a slower decoder, pulled toward
    # the start (L2-SP) and averaged (EMA): the trial whose held-out folds lost least (docs/method.md). Each
    # checkpoint is also scored half and three quarters of the way from the start (WiSE-FT's mixes). Each image is
    # seen at five sizes around its cells' (x0.7-x1.4, the generalist's own jitter was x0.75-x1.35): fine-tuned at
    # one size only, the adapter's per-image diameter estimate drifted and cost Usiigaci 0.03 AP@0.5 (docs/method.md).
    return Recipe(steps=16, lr=1e-3, decoder_lr=3e-4, l2sp=1e-2, ema=0.9, crop=192, batch=4, checkpoints=4, warmup=4,
                  mixes=(0.5, 0.75, 1.0), scales=(0.7, 0.85, 1.0, 1.2, 1.4))


def image_folds(n: int, folds: int, seed: int) -> list[list[int]]:
    """Held-out image indices of each cross-validation fold (every image held out once)."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    k = max(2, min(folds, n))
    return [sorted(order[i::k]) for i in range(k)]


def _recipe(cfg: TrainConfig, n_images: int, fine_tune: bool, stride: int, input_size: int) -> Recipe:
    r = cfg.recipe or default_recipe(n_images, fine_tune)
    if cfg.lr is not None:
        r = replace(r, lr=cfg.lr, decoder_lr=r.decoder_lr * cfg.lr / r.lr)
    if cfg.batch_size is not None:
        r = replace(r, batch=cfg.batch_size)
    if cfg.scales is not None:
        r = replace(r, scales=tuple(cfg.scales))
    crop = r.crop if cfg.crop is None else cfg.crop
    crop = max(stride, int(round(crop / stride)) * stride)
    return replace(r, crop=min(crop, max(stride, input_size // stride * stride)))


def _written_params(init: dict[str, Any], params: InstanceParams, colour_run: bool) -> dict[str, Any]:
    """The adapter's thresholds: the run's for its kind of input, the start's for the other kind."""
    if colour_run:
        return {**{k: v for k, v in init.items() if k != "colour"}, "colour": dict(params.__dict__)}
    return {**dict(params.__dict__), **({"colour": init["colour"]} if init.get("colour") else {})}


def _smooth(ema: dict[str, float], terms: dict[str, float]) -> None:
    """Each loss term into its exponential moving average (what the progress shows)."""
    for k, v in terms.items():
        ema[k] = v if k not in ema else 0.9 * ema[k] + 0.1 * v


def _pooled(counts: dict[int, Counts], idx: Sequence[int]) -> Counts:
    return [c for i in idx for c in counts[i]]


# ----------------------------------------------------------------------------- the run


def train_adapter(config: TrainConfig, cancel: CancelToken | None = None) -> Iterator[TrainProgress]:
    """Train adapters for a frozen encoder; yields :class:`TrainProgress` events.

    Raises :class:`~efficell_app.core.errors.Cancelled` (at the next step) when ``cancel``
    is set, leaving no adapter file; :class:`InputError` when no usable image is left. Features
    spilled to disk for a run too large for memory are removed when it ends, however it ends.
    """
    spills: list[Path] = []
    try:
        yield from _train(config, cancel, spills)
    finally:
        for folder in spills:
            shutil.rmtree(folder, ignore_errors=True)


def _train(config: TrainConfig, cancel: CancelToken | None, spills: list[Path]) -> Iterator[TrainProgress]:  # noqa: C901, PLR0912, PLR0915
    import torch

    from .encoders import build_encoder
    from .feature_cache import FeatureCache, default_cache_dir
    from .images import model_input
    from .inference import choose_device
    from .model.adapter_io import RANDOM_WEIGHTS
    from .training_data import object_diameter, resize_image
    from .training_inputs import init_adapters, make_tiles, prepare_image
    from .training_validation import Validator

    cfg = config
    t_start = time.time()
    for what in ("minutes", "epochs", "steps", "batch_size", "lr"):
        v = getattr(cfg, what)
        if v is not None and not v > 0:
            raise ValueError(f"{what.replace('_', ' ')} must be positive")
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
    val_items: list[Input] = []
    if cfg.val is not None:
        val_items, vw = load_pairs(cfg.val, cfg.channels)
        warnings += vw
        if vw:
            n_skipped = len(cfg.val) - len(val_items)
            yield event("preparing", warnings=vw, message=f"{n_skipped} validation pair(s) skipped" if n_skipped
                        else "warnings while reading the validation images")
    if val_items:  # a validation image that is a training image would score what training saw: left out
        from .feature_cache import array_sha256

        seen = {array_sha256(it.img.data) for it in items}
        same = [it for it in val_items if array_sha256(it.img.data) in seen]
        if same:
            w = (f"{len(same)} validation image(s) are also training images (the same pixels: "
                 f"{', '.join(it.name for it in same[:3])}{', …' if len(same) > 3 else ''}); left out of validation, "
                 "which must be images training did not see")
            warnings.append(w)
            yield event("preparing", warnings=[w])
            val_items = [it for it in val_items if it not in same]
    check()
    device = choose_device(cfg.device)
    torch.manual_seed(cfg.seed)
    if isinstance(cfg.encoder, str):
        encoder = build_encoder(cfg.encoder, weights=cfg.encoder_weights, device=device)
    else:
        encoder = cfg.encoder.to(device)
    enc_sha = encoder.weights_sha256 or RANDOM_WEIGHTS
    adapters, init_meta, notes = init_adapters(cfg.init_adapter, encoder, enc_sha)
    if notes:
        warnings += notes
        yield event("preparing", warnings=notes)
    adapters = adapters.to(device).train()
    fine_tune = init_meta is not None
    stride, spec = encoder.stride, encoder.spec
    target_d = float(cfg.target_diameter or (init_meta.target_diameter if init_meta else 24.0))

    channels = cfg.channels if cfg.channels is not None else (tuple(init_meta.channels) if init_meta and init_meta.channels else None)
    from .pipeline import is_colour_input, params_from_meta

    # the start's thresholds for this kind of input (its colour ones where every image is colour input and it has them)
    init_params = dict((init_meta.instance_params if init_meta else None) or {})
    colour_run = bool(init_params.get("colour")) and all(is_colour_input(it.img, channels) for it in items)
    params0 = params_from_meta({**init_params, **init_params["colour"]} if colour_run else init_params)
    recipe = _recipe(cfg, len(items), fine_tune, stride, spec.input_size)

    # -- how the run validates itself
    if cfg.val is not None and not val_items:
        w = "no usable validation images; validating on the training images instead"
        warnings.append(w)
        yield event("preparing", warnings=[w])
    if val_items:
        mode = "validation images"
    elif cfg.val_fraction <= 0:
        mode = "none"
    elif len(items) >= 2 and cfg.folds >= 2:
        mode = "cross-validation"
    else:
        mode = "held-out band"

    # -- samples at model scale, validation images, tiles
    samples, vals, summary_ = [], [], []
    for i, it in enumerate(items):
        per, val, info = prepare_image(it, i, target_d, channels, recipe.scales,
                                       cfg.val_fraction if mode == "held-out band" else 0.0, mode == "cross-validation")
        samples.append(per)
        vals += [val] if val is not None else []
        summary_.append(info)
        check()
    for it in val_items:
        d = object_diameter(it.mask)
        scale = float(np.clip(target_d / d if d > 0 else 1.0, 0.1, 8.0))
        vals.append(val_image(it.name, resize_image(model_input(it.img, channels), scale), it.mask))
    no_evidence = False  # validation was asked for but nothing can be held out: the start stays (never below it)
    if mode == "held-out band" and not vals:
        no_evidence = fine_tune and cfg.keep != "trained"
        w = ("no image has room for a held-out band with cells: nothing can show that training beats the starting "
             "adapter, so its weights are kept (--keep trained trains and keeps them unchecked)" if no_evidence else
             "no image has room for a held-out band with cells; training without validation (the last state is kept)")
        warnings.append(w)
        yield event("preparing", warnings=[w])
        mode = "none"
    if mode == "cross-validation":
        held = image_folds(len(items), cfg.folds, cfg.seed)
        folds = [([i for i in range(len(items)) if i not in h], [j for j, v in enumerate(vals) if v.image in h]) for h in held]
    elif mode == "none":
        folds = []
    else:
        folds = [(list(range(len(items))), list(range(len(vals))))]

    tiles, by_image = make_tiles(samples, spec.input_size, stride, recipe.crop)
    n_crops = sum(max(1, round((t.box[2] - t.box[0]) * (t.box[3] - t.box[1]) / recipe.crop**2)) for t in tiles)
    steps_per_epoch = max(1, math.ceil(n_crops / recipe.batch))

    # -- feature cache
    feat_bytes = sum(encoder.out_channels) * 2 * sum((t.box[2] - t.box[0]) * (t.box[3] - t.box[1]) for t in tiles) // stride**2
    cache_dir = cfg.cache_dir
    if cache_dir is None and feat_bytes * 8 > cfg.memory_cache_mb * 2**20:  # too large for memory: a folder of its own
        default_cache_dir().mkdir(parents=True, exist_ok=True)
        cache_dir = Path(tempfile.mkdtemp(prefix="training-", dir=default_cache_dir()))
        spills.append(cache_dir)
        log.info("encoder features go to %s for this run (removed when it ends)", cache_dir)
    cache = FeatureCache(encoder, device=device, cache_dir=cache_dir)
    t_cache = time.time()
    budget = CACHE_SHARE * (deadline - t_start) if deadline is not None else None
    yield event("caching features", message=f"{len(tiles)} tile(s), up to 8 transforms each", fraction=0.0)
    for done, total in cache.fill([(t.sample.image, t.sha, t.box, t.sample.scale) for t in tiles], budget):
        check()
        el = time.time() - t_cache
        yield event("caching features", fraction=0.1 * done / total, eta_s=el / max(done, 1) * (total - done),
                    message=f"{done}/{total}")
    ks = cache.transforms_cached
    validator = Validator(cache, vals, device, spec.input_size, stride)
    if vals:
        check()
        yield event("caching features", fraction=0.1, message="validation images")
        validator.warm(adapters)
    cache_seconds = time.time() - t_cache
    log.info("feature cache: %d passes, %.1f s, %d hits", cache.stats.misses, cache_seconds, cache.stats.hits)

    # -- the start
    tune_thresholds = cfg.tune_thresholds and can_tune(vals)
    # cross-validation: a threshold change must also win on each fold's images when chosen on the others'
    tune_groups = [val_idx for _, val_idx in folds] if mode == "cross-validation" else None
    start_state = {k: v.detach().clone() for k, v in adapters.state_dict().items()}
    all_idx = list(range(len(vals)))
    # The start keeps its own thresholds: re-tuned on a few images it was already fit to, they lowered the kept
    # start on new images in the benchmark (docs/method.md); trained weights get theirs re-tuned (below).
    params_start, start_counts, start_scores, start_labels = params0, None, None, None
    if vals and fine_tune:
        check()
        yield event("validating", fraction=0.12, message=f"scoring the starting adapter on {len(vals)} validation image(s)")
        dense = validator.predict(adapters)
        counts = validator.score(all_idx, dense, [params0])[0]
        start_labels = [labels_of(vals[i], prob, dist[0], params0) for i, (prob, dist) in enumerate(dense)]  # to pair errors
        del dense
        start_counts = dict(enumerate([[c] for c in counts]))
        start_scores = scores(counts)
        yield event("validating", fraction=0.15, val=start_scores, best=start_scores, start=start_scores,
                    message=f"starting adapter: AP@0.5 {start_scores['ap50']:.3f}")

    # -- the diameter to segment at: the masks' (stored in the adapter) or estimated per image
    diameter = _diameter_plan(cfg.store_diameter, items)
    if cfg.store_diameter == "auto" and fine_tune and len(items) >= 2:  # one image: nothing held out to compare on
        check()
        yield event("validating", fraction=0.15, message="comparing the masks' cell diameter with estimating it per image")
        from .model import EffiCellModel
        from .pipeline import Segmenter

        probe = Segmenter(EffiCellModel(encoder, adapters), replace(init_meta, cell_diameter=None), "", None, device,
                          params_start)
        diameter = choose_diameter(probe, items, cancel)
        adapters.train()
        yield event("validating", fraction=0.15, message=(
            f"segmenting at the masks' diameter ({diameter['median_px']:g} px): AP@0.5 {diameter['ap50_at_mask_diameter']:.3f} "
            f"vs {diameter['ap50_estimated']:.3f} estimated" + ("" if diameter["used"] else "; the diameter stays estimated")))

    # -- the plan: runs x steps, checkpoints
    n_steps = cfg.steps or (cfg.epochs * steps_per_epoch if cfg.epochs is not None else recipe.steps)
    n_runs = len(folds) + (1 if mode in ("cross-validation", "none") else 0)
    checkpoints = recipe.checkpoint_steps(n_steps)
    # per candidate (checkpoint step, mix of start and trained weights): per validation image (folds fill disjoint
    # images) its counts under the start's thresholds, and its dense maps (to re-tune the thresholds at the chosen
    # candidate; while they fit in memory)
    mixes = tuple(recipe.mixes)
    ck_counts: dict[tuple[int, float], dict[int, Counts]] = {}
    ck_dense: dict[tuple[int, float], dict[int, tuple[np.ndarray, np.ndarray]]] = {}
    keep_dense = validator.pixels() * len(checkpoints) * len(mixes) <= MAX_KEPT_PIXELS
    ck_state: dict[int, dict[str, Any]] = {}  # one-fold modes: the trained state at each checkpoint (mixed when chosen)
    total_steps = n_steps * n_runs
    done_steps = 0
    t_train = time.time()
    step_seconds = 0.0
    ema_losses: dict[str, float] = {}
    best_so_far = start_scores
    stopped = ""
    trainable = adapters.num_trainable()
    if deadline is not None and time.time() >= deadline:
        raise EffiCellError(f"the time budget ran out before the first training step (reading the images and caching "
                            f"encoder features took {time.time() - t_start:.0f} s); give more minutes")

    def fraction() -> float:
        return 0.15 + 0.8 * done_steps / max(total_steps, 1)

    def eta() -> float | None:
        if done_steps == 0:
            return None
        val_all = len(checkpoints) * len(mixes) * validator.estimate_seconds(None, 1) if folds else 0.0
        left = 1 - done_steps / max(total_steps, 1)
        return step_seconds / done_steps * (total_steps - done_steps) + val_all * left

    def plan_to_fit() -> None:
        """With a time budget: cut the steps of every run (the same for all) so the whole plan fits."""
        nonlocal n_steps, checkpoints, total_steps
        if deadline is None:
            return
        per = step_seconds / max(done_steps, 1)
        val_all = len(checkpoints) * len(mixes) * validator.estimate_seconds(None, 1) + validator.estimate_seconds(None, 8) * 0.9
        left = deadline - time.time() - 2.0 - val_all + per * done_steps  # (the steps done count again below)
        afford = int(left / max(per * n_runs, 1e-6))
        if afford < n_steps:
            n_steps = max(done_steps, afford, 1)
            checkpoints = recipe.checkpoint_steps(n_steps)
            total_steps = n_steps * n_runs
            log.info("time budget: %d steps per run", n_steps)

    # -- runs: one per fold, then (cross-validation / no validation) one on all images
    for f, (train_ids, val_idx) in enumerate(folds):
        fit = Fit(adapters, start_state, recipe, tiles, by_image, train_ids, cache, ks, stride, device, cfg.seed + f, n_steps)
        trainable, seconds_before = fit.trainable(), step_seconds
        label = f"fold {f + 1}/{len(folds)}" if mode == "cross-validation" else "training"
        if start_counts is not None and mode == "cross-validation":
            fold_start = scores(_pooled(start_counts, val_idx))
            yield event("validating", step=done_steps, fraction=fraction(), val=fold_start, best=best_so_far,
                        start=start_scores, message=f"{label}: the start scores AP@0.5 {fold_start['ap50']:.3f} on its "
                                                    f"{len(val_idx)} held-out image(s)")
        for step, terms in fit.steps():
            check()
            done_steps += 1
            step_seconds = seconds_before + fit.seconds
            _smooth(ema_losses, terms)
            if f == 0 and step == PLAN_AFTER_STEPS:
                plan_to_fit()
                fit.n_steps = n_steps
            yield event("training", step=done_steps, epoch=step / steps_per_epoch, total_steps=total_steps,
                        fraction=fraction(), losses=dict(ema_losses), best=best_so_far, start=start_scores, eta_s=eta(),
                        message=label)
            if deadline is not None and time.time() > deadline and step < fit.n_steps:
                stopped = "the time budget ran out"
                break
            if step not in checkpoints:
                continue
            yield event("validating", step=done_steps, fraction=fraction(), losses=dict(ema_losses), start=start_scores,
                        message=f"{label}: scoring step {step}")
            for mix in mixes:
                dense = validator.predict(fit.mixed(mix), val_idx)
                counts = validator.score(val_idx, dense, [params_start])[0]
                ck_counts.setdefault((step, mix), {}).update(dict(zip(val_idx, [[c] for c in counts])))
                if keep_dense:
                    ck_dense.setdefault((step, mix), {}).update(dict(zip(val_idx, dense)))
                del dense
                if len(folds) == 1 and (best_so_far is None or scores(counts)["ap50"] > best_so_far["ap50"]):
                    best_so_far = scores(counts)
            if len(folds) == 1:
                ck_state[step] = fit.state()
            now = scores(_pooled(ck_counts[(step, max(mixes))], val_idx))  # what the curve shows: the trained weights
            ref = "" if start_counts is None else f" (start {scores(_pooled(start_counts, val_idx))['ap50']:.3f})"
            yield event("validating", step=done_steps, fraction=fraction(), losses=dict(ema_losses), val=now,
                        best=best_so_far, start=start_scores, message=f"{label}, step {step}: AP@0.5 {now['ap50']:.3f}{ref}")
        if stopped:
            break
    check()

    # -- what the held-out images say
    chosen_step, chosen_mix, chosen_params, trained_scores, per_fold, curve, proof = None, 1.0, params_start, None, [], [], None
    complete = [c for c, per in sorted(ck_counts.items()) if len(per) == len(vals)]
    if complete:
        ap = {c: scores(_pooled(ck_counts[c], all_idx))["ap50"] for c in complete}
        curve = [{"step": c[0], "mix": c[1], "ap50": ap[c]} for c in complete]
        # ties: fewer steps, then the mix nearer the start
        chosen_key = max(complete, key=lambda c: (ap[c], -c[0], -c[1]))
        chosen_step, chosen_mix = chosen_key
        chosen = ck_counts[chosen_key]
        if tune_thresholds and chosen_key in ck_dense:  # thresholds re-tuned on the held-out predictions of that candidate
            check()
            yield event("validating", step=done_steps, fraction=0.96, message="re-tuning the instance thresholds")
            dense = [ck_dense[chosen_key][i] for i in all_idx]
            chosen_params, counts = tune(vals, dense, params_start, tune_groups)
            chosen = dict(enumerate([[c] for c in counts]))
        trained_scores = scores(_pooled(chosen, all_idx))
        if start_counts is not None:
            proof = evidence(_pooled(start_counts, all_idx), _pooled(chosen, all_idx))
            if start_labels is not None and chosen_key in ck_dense:  # reported beside the rule, not (yet) deciding
                proof["paired"] = paired_evidence([vals[i].gt for i in all_idx], start_labels,
                                                  [labels_of(vals[i], prob, dist[0], chosen_params)
                                                   for i, (prob, dist) in ((i, ck_dense[chosen_key][i]) for i in all_idx)])
        ck_dense.clear()
        for train_ids, val_idx in folds:
            entry = {"held_out": [vals[i].name for i in val_idx], "n_train_images": len(train_ids),
                     "trained": scores(_pooled(chosen, val_idx))}
            if start_counts is not None:
                entry["start"] = scores(_pooled(start_counts, val_idx))
            per_fold.append(entry)
    improved = trained_scores is not None and (start_scores is None or keeps_trained(start_scores, trained_scores, proof))
    overridden = cfg.keep == "trained" and not improved and trained_scores is not None
    if (mode == "none" and not no_evidence) or overridden:
        improved = True

    # -- the adapter: the final run, the kept checkpoint, or the start
    final_state: dict[str, Any] | None = None
    if improved and mode in ("cross-validation", "none") and not stopped:
        n_final = chosen_step or n_steps
        total_steps = done_steps + n_final
        fit = Fit(adapters, start_state, recipe, tiles, by_image, list(range(len(items))), cache, ks, stride, device,
                  cfg.seed + len(folds), n_final)
        seconds_before = step_seconds
        label = f"final run on all {len(items)} images" if mode == "cross-validation" else "training"
        for step, terms in fit.steps():
            check()
            done_steps += 1
            step_seconds = seconds_before + fit.seconds
            _smooth(ema_losses, terms)
            yield event("training", step=done_steps, epoch=step / steps_per_epoch, total_steps=total_steps,
                        fraction=fraction(), losses=dict(ema_losses), best=best_so_far, start=start_scores,
                        eta_s=step_seconds / done_steps * (n_final - step), message=label)
            if deadline is not None and time.time() > deadline and step < n_final:
                stopped = "the time budget ran out during the final run"
                break
        if not stopped or mode == "none":
            final_state = fit.state(chosen_mix)
            trainable = fit.trainable()
    elif improved and chosen_step in ck_state:
        final_state = mix_state(start_state, ck_state[chosen_step], chosen_mix)
    kept_start = final_state is None
    if kept_start:
        if not fine_tune:
            raise EffiCellError("the time budget ran out before the adapters were trained; give more minutes")
        final_state, chosen_params = start_state, params_start
        # the start whole: also the working size its weights were trained at (a run at another size, asked for
        # with target_diameter, was compared at that size; written, the start must segment as it does)
        target_d = float(init_meta.target_diameter)
    adapters.load_state_dict(final_state)
    check()

    # -- what happened, in words
    outcome = _outcome(mode, kept_start, start_scores, trained_scores, chosen_step, per_fold,
                       params0, chosen_params, stopped, len(folds), proof, overridden and not kept_start)
    if kept_start:  # the step and mix chosen belong to the trained candidate, not to the adapter written
        outcome["candidate_step"], outcome["chosen_step"], chosen_step = chosen_step, None, None
    outcome["chosen_mix"] = chosen_mix if chosen_step is not None else None
    if not kept_start and chosen_step is not None and chosen_mix != 1.0:
        outcome["message"] += f" (the weights {chosen_mix:.0%} of the way from the start's to the trained ones)"
    outcome["curve"] = curve
    outcome["start_instance_params"] = dict(params_start.__dict__)
    outcome["thresholds_tuned"] = tune_thresholds  # False: too few objects to choose them on (or not asked)
    yield event("validating", step=done_steps, fraction=0.97, val=trained_scores, best=best_so_far, start=start_scores,
                message=outcome["message"])

    # -- save (atomically; nothing is written before this point)
    yield event("saving", step=done_steps, message=str(out), val=trained_scores, start=start_scores)
    meta = _make_meta(cfg, encoder, enc_sha, adapters, init_meta, target_d, channels,
                      _written_params(init_params, chosen_params, colour_run), summary_, vals,
                      outcome, diameter, recipe,
                      dict(steps=done_steps, steps_per_run=n_steps, seconds=round(time.time() - t_start, 1),
                           train_seconds=round(time.time() - t_train, 1), cache_seconds=round(cache_seconds, 1),
                           step_seconds=round(step_seconds, 1),
                           steps_per_second=round(done_steps / step_seconds, 3) if step_seconds > 0 else None,
                           validation_seconds=round(validator.seconds_spent, 1),
                           encoder_passes=cache.stats.misses, dihedral=len(ks), batch=recipe.batch, crop=recipe.crop,
                           lr=recipe.lr, steps_per_epoch=steps_per_epoch, device=device, warnings=warnings))
    from .model.adapter_io import save_adapter

    check()
    if not cfg.overwrite and os.path.lexists(out):  # appeared during the run (a second training, a copy): kept
        taken = out
        out = _free_beside(out)
        w = f"{taken} appeared during the run and is kept; this adapter is saved as {out.name}"
        warnings.append(w)
        yield event("saving", warnings=[w], message=str(out))
    sha = save_adapter(out, adapters, meta)
    seconds = time.time() - t_start
    yield event("done", step=done_steps, epoch=done_steps / steps_per_epoch, total_steps=done_steps, fraction=1.0,
                losses=dict(ema_losses), val=outcome.get("kept_scores"), best=outcome.get("kept_scores"),
                start=start_scores, eta_s=0.0, adapter_path=out, adapter_sha256=sha, metrics=dict(meta.metrics),
                outcome=outcome, seconds=seconds, trainable_params=trainable,
                message=f"saved {out.name} ({done_steps} steps, {seconds:.0f} s): {outcome['message']}")


def _diameter_plan(store: str, items: list[Input]) -> dict[str, Any]:
    """The diameter summary when it is not chosen by validation ("yes" / "no", or fresh adapters)."""
    from .training_data import object_diameter

    if store not in ("auto", "yes", "no"):
        raise ValueError(f"store_diameter must be 'auto', 'yes' or 'no', not {store!r}")
    ds = [object_diameter(it.mask) for it in items]
    one_image = store == "auto" and len(ds) < 2
    return {"median_px": round(float(np.median(ds)), 2), "per_image_px": [round(d, 2) for d in ds],
            "used": store == "yes" or (store == "auto" and not one_image),
            "rule": {"yes": "stored as asked", "no": "estimated per image (the default)"}.get(
                store, "estimated per image: one image leaves none to compare on" if one_image
                else "stored: no starting model to compare estimating the diameter with")}


def _free_beside(path: Path) -> Path:
    """``stem_2.suffix``, ``stem_3.suffix``, ...: the first name beside ``path`` not taken."""
    n = 2
    while os.path.lexists(path.with_name(f"{path.stem}_{n}{path.suffix}")):
        n += 1
    return path.with_name(f"{path.stem}_{n}{path.suffix}")


def _outcome(mode: str, kept_start: bool, start: dict | None, trained: dict | None,  # noqa: PLR0913
             chosen_step: int | None, per_fold: list[dict], params0: InstanceParams, params: InstanceParams,
             stopped: str, n_folds: int, proof: dict | None = None, overridden: bool = False) -> dict[str, Any]:
    """What was kept and why, for the user (``message``) and the metadata."""
    where = {"cross-validation": f"on held-out images ({n_folds}-fold cross-validation over images)",
             "held-out band": "on the held-out band", "validation images": "on the validation images"}.get(mode, "")
    if mode == "none" and kept_start:
        msg = ("no image had room for held-out cells, so nothing could show that training beats the starting "
               "adapter; its weights are kept")
    elif mode == "none":
        msg = "no validation: the trained adapter is kept without a check against the start"
    elif kept_start:
        if stopped or not (trained and start):
            why = stopped or "no validation finished"
        elif trained["ap50"] > start["ap50"] and proof is not None:
            why = (f"training did not clearly improve on the starting adapter {where}: AP@0.5 {start['ap50']:.3f} -> "
                   f"{trained['ap50']:.3f}, errors {proof['start_errors']} -> {proof['trained_errors']}, a difference chance "
                   f"gives with p = {proof['p_value']:.2f} (needs < {proof['alpha']:g})")
        else:
            why = f"training did not improve on the starting adapter {where}: AP@0.5 {start['ap50']:.3f} -> {trained['ap50']:.3f}"
        msg = f"{why}; the starting adapter's weights are kept"
        if params != params0:
            msg += f" with re-tuned thresholds (fg {params.fg_threshold:g}, seed {params.marker_threshold:g})"
    elif overridden and start is not None and trained is not None:
        msg = (f"the trained weights are kept as asked, although they did not clearly improve on the starting adapter "
               f"{where}: AP@0.5 {start['ap50']:.3f} -> {trained['ap50']:.3f}")
    elif start is not None and trained is not None:
        msg = f"improved on the starting adapter {where}: AP@0.5 {start['ap50']:.3f} -> {trained['ap50']:.3f}"
        if proof is not None:
            msg += f", errors {proof['start_errors']} -> {proof['trained_errors']} (p = {proof['p_value']:.2g})"
    else:
        msg = f"trained from fresh adapters: AP@0.5 {trained['ap50']:.3f} {where}" if trained else "trained"
    out: dict[str, Any] = {
        "kept": "start" if kept_start else "trained", "improved": (not kept_start) and mode != "none" and not overridden,
        "overridden": overridden,
        "validation": mode, "message": msg, "start": start, "trained": trained,
        "kept_scores": start if kept_start else (trained or start), "chosen_step": chosen_step,
        "instance_params": dict(params.__dict__)}
    if proof is not None:
        out["evidence"] = proof
    if per_fold:
        out["folds"] = per_fold
        if start is not None:
            out["spread"] = summary(per_fold)
    if stopped:
        out["stopped"] = stopped
    return out


def _make_meta(cfg: TrainConfig, encoder, enc_sha: str, adapters, init_meta, target_d: float,  # noqa: ANN001, ANN202, PLR0913
               channels: tuple[int, ...] | None, params: dict[str, Any], summary_: list[dict[str, Any]],
               vals: list[ValImage], outcome: dict[str, Any], diameter: dict[str, Any], recipe: Recipe, run: dict[str, Any]):
    import torch

    from .device import describe_device
    from .model.adapter_io import AdapterMeta

    metrics: dict[str, Any] = {}
    if outcome.get("kept_scores") is not None:
        source = {"cross-validation": "held-out training images (cross-validation over images)",
                  "held-out band": f"held-out band ({cfg.val_fraction:.0%}) of the training image",
                  "validation images": "validation images"}[outcome["validation"]]
        metrics = {"validation": dict(outcome["kept_scores"]), "validation_source": source,
                   "n_validation_images": len(vals), "start_validation": outcome.get("start"),
                   "improved_on_start": outcome["improved"]}
    init = None
    if init_meta is not None:
        init = {"name": init_meta.name, "file": (init_meta.training or {}).get("file"),
                "sha256": (init_meta.training or {}).get("file_sha256")}
    training = {"images": summary_, "init_adapter": init, "target_diameter": target_d, "scales": list(recipe.scales),
                "seed": cfg.seed, "minutes": cfg.minutes, "epochs": cfg.epochs, "recipe": recipe.to_dict(),
                "outcome": {k: v for k, v in outcome.items() if k != "kept_scores"},
                "diameter": diameter,
                "hardware": f"{platform.machine()}, {torch.get_num_threads()} threads, {run['device']}",
                "device_info": describe_device(run["device"]),
                "torch": torch.__version__, **run}
    name = cfg.name or Path(cfg.out).stem
    kept = "starting adapter kept: training did not clearly improve on it" if outcome["kept"] == "start" else \
        f"few-shot adapter trained on {len(summary_)} image(s)"
    return AdapterMeta(encoder=encoder.spec.name, encoder_sha256=enc_sha, in_channels=tuple(encoder.out_channels),
                       stride=encoder.stride, config=adapters.config.to_dict(), target_diameter=target_d, channels=channels,
                       instance_params=params, name=name,
                       cell_diameter=diameter["median_px"] if diameter["used"] else None,
                       description=cfg.description or kept, training=training, metrics=metrics,
                       licence=getattr(init_meta, "licence", "") if init_meta is not None else "")
