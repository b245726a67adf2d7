"""``efficell train``: few-shot training of an adapter for a frozen encoder from annotated images.

Masks pair with images by stem (``<stem>.tif`` or ``<stem>_masks.tif``, ``.tiff`` / ``.png``
too). Progress goes to stderr; at the end ONE JSON line on stdout gives the adapter file and
its sha256, the validation scores of the starting adapter and of what was kept, whether
training improved on the start (``improved_on_start``; when it did not, the adapter keeps the
starting weights and ``message`` says so), the time and the number of trained parameters.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from . import EXIT_OK, EXIT_PARTIAL, EXIT_USAGE


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train an adapter on your annotated images (the encoder stays frozen)",
        description="Train EffiCell adapters on annotated images: a frozen encoder, minutes on a CPU. Masks are label "
                    "images (0 = background, one integer per cell) named like their image (<stem>.tif or "
                    "<stem>_masks.tif). Without --val-images the images validate each other (cross-validation over "
                    "images; a single image holds out a band of 20%). The adapter keeps the starting weights "
                    "unless training beats them on held-out images.")
    p.add_argument("--images", required=True, type=Path, metavar="DIR", help="folder of training images")
    p.add_argument("--masks", required=True, type=Path, metavar="DIR", help="folder of their label masks")
    p.add_argument("--out", required=True, type=Path, metavar="FILE", help="adapter file to write (.safetensors)")
    p.add_argument("--encoder", default="efficell_compact", help="encoder name (see 'efficell models'; default efficell_compact)")
    p.add_argument("--encoder-weights", default="auto", metavar="FILE", help="encoder checkpoint (default: installed weights)")
    p.add_argument("--init", default="auto", metavar="ADAPTER",
                   help="adapter to start from: 'auto' (the built-in generalist when it fits the encoder), 'none' "
                        "(fresh adapters) or an adapter file")
    p.add_argument("--val-images", type=Path, metavar="DIR", help="folder of validation images")
    p.add_argument("--val-masks", type=Path, metavar="DIR", help="folder of their masks")
    budget = p.add_mutually_exclusive_group()
    p.add_argument("--minutes", type=float, help="at most this long for the whole run: the steps are cut to fit "
                                                "(default: no limit; the recipe's steps take minutes on a CPU)")
    budget.add_argument("--steps", type=int, help="steps of each training run (default: the recipe's, from the "
                                                  "number of images)")
    budget.add_argument("--epochs", type=int, help="train each run for this many epochs instead")
    p.add_argument("--diameter", type=float, metavar="PX",
                   help="NOT your cells' size (that is measured on the masks): the size in pixels the model works at, "
                        "each image rescaled so its cells have it (default: the starting adapter's, 24 px for the "
                        "built-in one; 4-256). An adapter that keeps the start keeps the start's")
    p.add_argument("--store-diameter", choices=("auto", "yes", "no"), default="no",
                   help="store the masks' cell diameter in the adapter, used when segmenting without --diameter: "
                        "'no' (default: estimated per image), 'auto' where it beats estimating it on your images "
                        "(2+ images), 'yes' (all your images are at one magnification)")
    p.add_argument("--keep", choices=("auto", "trained"), default="auto",
                   help="'auto' (default): the trained weights only where your held-out images show they beat the "
                        "starting adapter, else its weights are kept; 'trained': the trained weights in any case")
    p.add_argument("--channels", default=None, help="channels to use: '0', 'cyto,nucleus' as '1,0', or 'rgb' (default: auto)")
    p.add_argument("--z", default=None, help="for z-stacks: plane index, counted from 0 (the window's 'z 1' is 0), or 'max' (maximum projection)")
    p.add_argument("--t", default=None, help="for time series: time point index, counted from 0 (the window's 't 1' is 0)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--batch-size", type=int, default=None, help="crops per step (default 4 on a CPU, 8 on a GPU)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default 1e-3 fine-tuning, 2e-3 fresh)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", type=Path, default=None, help="keep encoder features in this folder (default: memory; a run too large for memory uses a "
                        "temporary folder in the user cache, removed when it ends)")
    p.add_argument("--name", default="", help="adapter name stored in the file (default: the file name)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=run)


# ----------------------------------------------------------------------------- pairing


def pair_files(images: Path, masks: Path) -> tuple[list[tuple[Path, Path | None]], list[str]]:
    """Images of ``images`` with their masks in ``masks`` by stem; problems as ``path: reason``.

    An image without a mask is kept as ``(image, None)`` so the training names and skips it.
    """
    from ..core.images import is_image_file
    from ..core.pairing import is_mask_name, mask_files_by_stem, mask_stem, shared_stems

    for d in (images, masks):
        if not d.is_dir():
            raise FileNotFoundError(f"{d}: not a folder")
    same = images.resolve() == masks.resolve()
    # in a shared folder only <stem>_masks.tif etc. are masks
    found = mask_files_by_stem(masks, keep=is_mask_name if same else None)
    problems = [f"{path}: {reason}" for path, reason in shared_stems(found, "masks")]
    pairs: list[tuple[Path, Path | None]] = []
    for f in sorted(images.iterdir()):
        if not f.is_file() or not is_image_file(f) or (same and is_mask_name(f)):
            continue
        fs = found.get(mask_stem(f), [])
        pairs.append((f, fs[0] if len(fs) == 1 else None))
    return pairs, problems


# ----------------------------------------------------------------------------- config and loop


def config_from_args(args: argparse.Namespace):  # noqa: ANN201 - TrainConfig
    """Build the TrainConfig; ValueError / FileNotFoundError for usage errors."""
    from ..core.images import PlaneChoice, parse_channels
    from ..core.training import TrainConfig

    if args.minutes is not None and args.minutes <= 0:
        raise ValueError("--minutes must be positive")
    if args.epochs is not None and args.epochs <= 0:
        raise ValueError("--epochs must be positive")
    if args.steps is not None and args.steps <= 0:
        raise ValueError("--steps must be positive")
    if args.diameter is not None and not 4 <= args.diameter <= 256:
        raise ValueError("--diameter is the size the model works at, 4 to 256 px (your cells' own size is "
                         "measured on the masks)")
    if args.batch_size is not None and args.batch_size <= 0:
        raise ValueError("--batch-size must be a positive number of crops")
    if args.lr is not None and not args.lr > 0:
        raise ValueError("--lr must be a positive learning rate")
    if (args.val_images is None) != (args.val_masks is None):
        raise ValueError("give both --val-images and --val-masks, or neither")
    channels = parse_channels(args.channels)
    planes = PlaneChoice.parse(getattr(args, "z", None), getattr(args, "t", None))
    from ..core.encoders import get_spec
    from ..core.inference import choose_device

    try:
        get_spec(args.encoder)
    except KeyError as exc:
        raise ValueError(exc.args[0]) from None
    from ..core.device import DeviceUnavailable
    from .hints import with_options

    try:
        choose_device(args.device)
    except DeviceUnavailable as exc:
        raise ValueError(with_options(exc)) from None
    pairs, problems = pair_files(args.images, args.masks)
    if not pairs:
        raise FileNotFoundError(f"{args.images}: no image files found")
    val = None
    if args.val_images is not None:
        val, vp = pair_files(args.val_images, args.val_masks)
        problems += vp
    if planes != PlaneChoice():  # stacks: each image is read here with the plane choice
        pairs, pp = _read_planes(pairs, planes)
        problems += pp
        if val is not None:
            val, vp = _read_planes(val, planes)
            problems += vp
    init = None if str(args.init).lower() == "none" else args.init
    weights = None if str(args.encoder_weights).lower() == "none" else args.encoder_weights
    cfg = TrainConfig(train=pairs, out=args.out, val=val, encoder=args.encoder, encoder_weights=weights,
                      init_adapter=init, target_diameter=args.diameter, channels=channels, minutes=args.minutes,
                      epochs=args.epochs, steps=args.steps, store_diameter=args.store_diameter, keep=args.keep, lr=args.lr,
                      batch_size=args.batch_size, seed=args.seed,
                      device=args.device, cache_dir=args.cache_dir, name=args.name, overwrite=args.overwrite)
    return cfg, problems


def _read_planes(pairs: list[tuple[Path, Path | None]], planes: Any) -> tuple[list[tuple[Any, Path | None]], list[str]]:
    """Images of ``pairs`` read with the ``--z``/``--t`` choice; unreadable ones named and left out."""
    from ..core.errors import EffiCellError
    from ..core.images import read_image

    out, problems = [], []
    for image, mask in pairs:
        try:
            out.append((read_image(image, planes), mask))
        except EffiCellError as exc:
            from .hints import with_options

            problems.append(f"{with_options(exc)}; skipped")
    return out, problems


def check_output(path: Path) -> None:
    """Fail now, not after the training budget, when the adapter could not be written there."""
    import tempfile

    from ..core.errors import OutputError
    from ..core.fileio import _explain

    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".check.part", dir=path.parent)
    except OSError as exc:
        raise OutputError(path, _explain(path, exc)) from exc
    os.close(fd)
    os.unlink(tmp)


def _fmt_eta(s: float | None) -> str:
    if s is None:
        return "?"
    s = int(round(s))
    return f"{s // 60}:{s % 60:02d}"


def run_training(config, err: TextIO = sys.stderr, out: TextIO = sys.stdout, cancel=None,  # noqa: ANN001
                 problems: list[str] | None = None) -> int:
    """Run the train use case (``tasks.train``, in this process) printing progress to ``err`` and the
    result as one JSON line to ``out``."""
    from ..core.model.adapter_io import read_adapter_meta
    from ..tasks.train import TrainingJob, TrainingStarted, train

    warned = list(problems or [])
    for w in warned:
        print(f"warning: {w}", file=err)
    last_print = 0.0
    final = None
    phase = ""
    for p in train(TrainingJob(config), separate_process=False, cancel=cancel):
        if isinstance(p, TrainingStarted):
            continue
        for w in p.warnings:
            warned.append(w)
            print(f"warning: {w}", file=err)
        now = time.time()
        if p.phase != phase:
            phase = p.phase
            print(f"[{p.elapsed_s:6.1f} s] {p.phase}{': ' + p.message if p.message else ''}", file=err, flush=True)
            last_print = now
        elif p.phase == "validating" and p.val is not None and p.message:
            print(f"[{p.elapsed_s:6.1f} s]   step {p.step}: {p.message}", file=err, flush=True)
        elif now - last_print >= 5.0 and p.phase in ("training", "caching features"):
            if p.phase == "training":
                loss = p.losses.get("total")
                print(f"[{p.elapsed_s:6.1f} s]   step {p.step}/{p.total_steps or '?'} epoch {p.epoch:.1f} "
                      f"loss {loss:.3f} eta {_fmt_eta(p.eta_s)}", file=err, flush=True)
            else:
                print(f"[{p.elapsed_s:6.1f} s]   features {p.message} eta {_fmt_eta(p.eta_s)}", file=err, flush=True)
            last_print = now
        if p.phase == "done":
            final = p
    assert final is not None
    meta = read_adapter_meta(final.adapter_path)
    training = dict(meta.training or {})
    outcome = final.outcome
    result: dict[str, Any] = {
        "adapter": str(final.adapter_path), "sha256": final.adapter_sha256,
        "tensors_sha256": meta.tensors_sha256,  # the weights alone: equal for equal inputs and seed (the file's
        # sha256 differs by the time it was made)
        "improved_on_start": outcome.get("improved"), "kept": outcome.get("kept"), "message": outcome.get("message"),
        "start_validation": outcome.get("start"), "spread": outcome.get("spread"), "evidence": outcome.get("evidence"),
        "chosen_step": outcome.get("chosen_step"), "chosen_mix": outcome.get("chosen_mix"),
        "validation": final.metrics.get("validation"), "validation_source": final.metrics.get("validation_source"),
        "cell_diameter": meta.cell_diameter, "instance_params": meta.instance_params,
        "seconds": round(final.seconds, 1), "train_seconds": training.get("train_seconds"),
        "cache_seconds": training.get("cache_seconds"), "steps": final.step,
        "validation_seconds": training.get("validation_seconds"),
        "steps_per_second": training.get("steps_per_second"),
        "trainable_parameters": final.trainable_params, "images": len(training.get("images", [])),
        "skipped": warned,
    }
    print(json.dumps(result), file=out, flush=True)
    print(f"{outcome.get('message', '')}\nadapter written: {final.adapter_path}", file=err)
    return EXIT_PARTIAL if warned else EXIT_OK


def run(args: argparse.Namespace) -> int:
    from ..core.cancel import CancelToken
    from ..core.errors import EffiCellError

    err = sys.stderr
    if Path(args.out).is_dir():
        print(f"efficell train: error: --out {args.out} is a folder; give the adapter file's name "
              "(e.g. my_adapter.safetensors)", file=err)
        return EXIT_USAGE
    try:
        config, problems = config_from_args(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"efficell train: error: {exc}", file=err)
        return EXIT_USAGE
    if Path(args.out).exists() and not args.overwrite:
        print(f"error: {args.out}: file exists; give --overwrite to replace it", file=err)
        return EXIT_PARTIAL
    cancel = CancelToken()
    try:
        check_output(Path(args.out))
        return run_training(config, err, sys.stdout, cancel, problems)
    except EffiCellError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_PARTIAL
    except (ValueError, MemoryError) as exc:  # what the core refuses that the options above did not catch
        print(f"error: {exc or type(exc).__name__}; no adapter written", file=err)
        return EXIT_PARTIAL
    except KeyboardInterrupt:
        cancel.cancel()
        print("\ncancelled; no adapter written", file=err)
        return 130
