"""Few-shot training inputs: reading (image, mask) pairs, the starting adapter, samples at model scale, tiles.

Everything here runs once per training run, before any step: unusable pairs are named and
skipped, each image is rescaled so its cells (measured on its own mask) have the model's
target diameter, and a held-out band is cut off an image when it must validate on itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Union

import numpy as np

from .errors import EffiCellError, InputError
from .images import ImageData
from .training_data import TrainSample
from .training_fit import Tile
from .training_validation import ValImage, val_image

ImageLike = Union[str, Path, ImageData]
MaskLike = Union[str, Path, np.ndarray, None]


@dataclass
class Input:
    name: str
    img: ImageData
    mask: np.ndarray
    source: str


def _name(x: ImageLike, i: int) -> str:
    if isinstance(x, ImageData):
        return str(x.path) if x.path else f"image {i + 1}"
    return str(x)


def load_pairs(pairs: Sequence[tuple[ImageLike, MaskLike]], channels: tuple[int, ...] | None = None) -> tuple[list[Input], list[str]]:
    """Read and check (image, mask) pairs. Unusable ones are skipped and named in the warnings."""
    from .images import input_channels, read_image, read_mask

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
                mask = read_mask(mk, img.shape, warnings)  # a binary mask's note is the run's warning too
                where = str(mk)
            if mask.max() <= 0:
                raise InputError(where, "mask has no objects (nothing to learn from); skipped")
            if channels:
                input_channels(img, channels)
        except EffiCellError as exc:
            msg = str(exc)
            warnings.append(msg if msg.endswith("skipped") else f"{msg}; skipped")
            continue
        warnings.extend(f"{name}: {note}" for note in img.notes)  # e.g. NaN pixels replaced, PNG named .tif
        stem = img.path.stem if img.path else f"image{i + 1}"
        items.append(Input(stem, img, mask, name))
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


def init_adapters(init_adapter: str | Path | None, encoder, sha: str) -> tuple[Any, Any, list[str]]:  # noqa: ANN001
    """(adapters, init meta or None, warnings)."""
    from .errors import AdapterError
    from .model import build_adapters
    from .model.adapter_io import file_sha256, load_adapter

    notes: list[str] = []
    path = init_adapter
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


def prepare_image(it: Input, index: int, target_d: float, channels: tuple[int, ...] | None, scales: Sequence[float],
                  band_fraction: float, whole_val: bool) -> tuple[list[TrainSample], ValImage | None, dict[str, Any]]:
    """One image's training samples (one per scale), its validation part (or None) and its summary.

    ``band_fraction`` > 0: a band of the image is held out (validation) and the samples are the
    rest; ``whole_val``: the whole image also serves as a validation image (cross-validation
    over images: it is scored only by runs that did not train on it).
    """
    from .feature_cache import array_sha256
    from .images import model_input
    from .training_data import object_diameter, prepare_sample, resize_image

    d = object_diameter(it.mask)
    base = float(np.clip(target_d / d if d > 0 else 1.0, 0.1, 8.0))
    band = _band(it.mask, band_fraction) if band_fraction > 0 else None
    val = None
    if band is not None or whole_val:
        x = resize_image(model_input(it.img, channels), base).astype(np.float32)
        if band is not None:  # validation: the band of the whole normalised image, at model scale
            side, n = band
            b_sl, _ = _band_slices(x.shape[1:], side, int(round(n * base)))
            ob_sl, _ = _band_slices(it.mask.shape, side, n)
            val = val_image(f"{it.name} ({side} {band_fraction:.0%})", x[:, b_sl[0], b_sl[1]], it.mask[ob_sl], index)
        else:
            val = val_image(it.name, x, it.mask, index)
    per = []
    for s in scales:
        smp = prepare_sample(it.img, it.mask, target_d, channels, scale=base * s, name=it.name)
        if band is not None:  # train on the rest only (the loss never sees the band's labels)
            _, r_sl = _band_slices(smp.sem.shape, band[0], int(round(band[1] * smp.scale)))
            smp = _crop_sample(smp, r_sl)
        per.append(smp)
    info = {"name": it.name, "size": list(it.mask.shape), "sha256": array_sha256(it.img.data),
            "mask_sha256": array_sha256(it.mask),  # the annotation: what a lab changes most between two trainings
            "n_cells": int(len(np.unique(it.mask)) - 1), "diameter_px": round(d, 2), "scale": round(base, 4),
            "held_out": None if band is None else f"{band[0]} {band[1]} px"}
    return per, val, info


def make_tiles(samples: list[list[TrainSample]], tile: int, stride: int, crop: int) -> tuple[list[Tile], dict[int, list[int]]]:
    """Encoder tiles of every (padded) sample with labelled pixels, and the tile indices per image."""
    from .feature_cache import array_sha256, tile_boxes

    tiles: list[Tile] = []
    for i, per in enumerate(samples):
        for smp in per:
            shape, boxes = tile_boxes(*smp.sem.shape, tile, stride, min_side=crop)
            smp = _pad_sample(smp, shape)
            sha = array_sha256(smp.image)
            for b in boxes:
                area = float(smp.valid[b[0]:b[2], b[1]:b[3]].sum())
                if area > 0:
                    tiles.append(Tile(i, smp, sha, b, area))
    by_image: dict[int, list[int]] = {}
    for j, t in enumerate(tiles):
        by_image.setdefault(t.image, []).append(j)
    return tiles, by_image


