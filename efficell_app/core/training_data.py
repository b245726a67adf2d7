"""Training samples: image + mask brought to the model's scale, targets, crops and dihedral transforms.

Targets are computed once per sample (not per step); crops and the 8 flips/rotations are
applied to the image and targets together (offsets change sign / swap under them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .images import ImageData, model_input
from .targets import make_targets


@dataclass
class TrainSample:
    name: str
    image: np.ndarray  # (3, H, W) float32, normalised, at model scale
    labels: np.ndarray  # (H, W) int32 at model scale
    sem: np.ndarray  # (H, W) uint8
    geo: np.ndarray  # (3, H, W) float32
    valid: np.ndarray  # (H, W) bool: pixels whose annotation counts
    scale: float  # model-scale / original-scale


def object_diameter(labels: np.ndarray) -> float:
    """Median equivalent-circle diameter of the objects (0 when there are none)."""
    sizes = np.bincount(labels.ravel())[1:]
    sizes = sizes[sizes > 0]
    if sizes.size == 0:
        return 0.0
    return float(np.median(2.0 * np.sqrt(sizes / np.pi)))


def resize_image(image: np.ndarray, scale: float) -> np.ndarray:
    """Bilinear (anti-aliased when shrinking) resize of a (C, H, W) float array."""
    if abs(scale - 1.0) < 1e-3:
        return image
    import torch
    import torch.nn.functional as F

    h, w = image.shape[1:]
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    t = torch.from_numpy(np.ascontiguousarray(image))[None]
    out = F.interpolate(t, size=size, mode="bilinear", align_corners=False, antialias=scale < 1.0)
    return out[0].numpy()


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a label image to ``size`` (H, W)."""
    h, w = labels.shape
    if (h, w) == tuple(size):
        return labels
    ys = np.minimum((np.arange(size[0]) + 0.5) * h / size[0], h - 1).astype(np.intp)
    xs = np.minimum((np.arange(size[1]) + 0.5) * w / size[1], w - 1).astype(np.intp)
    return labels[ys[:, None], xs[None, :]]


def prepare_sample(img: ImageData, mask: np.ndarray, target_diameter: float, channels: tuple[int, ...] | None = None,
                   scale: float | None = None, valid: np.ndarray | None = None, name: str = "") -> TrainSample:
    """Normalise the image, rescale image and mask so cells have ``target_diameter`` pixels, make targets."""
    x = model_input(img, channels)
    if scale is None:
        d = object_diameter(mask)
        scale = target_diameter / d if d > 0 else 1.0
    scale = float(np.clip(scale, 0.1, 8.0))
    xs = resize_image(x, scale)
    lab = resize_labels(mask, xs.shape[1:])
    v = np.ones(lab.shape, bool) if valid is None else resize_labels(valid.astype(np.uint8), xs.shape[1:]).astype(bool)
    sem, geo = make_targets(lab)
    return TrainSample(name=name or (img.path.stem if img.path else ""), image=xs.astype(np.float32), labels=lab,
                       sem=sem, geo=geo, valid=v, scale=scale)


def dihedral(k: int, image: np.ndarray, sem: np.ndarray, geo: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, ...]:
    """Apply dihedral transform ``k`` (0..7: bit 0 flip x, bit 1 flip y, bit 2 transpose) consistently."""
    transpose, flip_y, flip_x = bool(k & 4), bool(k & 2), bool(k & 1)
    if transpose:
        image = image.transpose(0, 2, 1)
        sem = sem.T
        valid = valid.T
        geo = geo.transpose(0, 2, 1)[[0, 2, 1]]
    if flip_y:
        image, sem, valid = image[:, ::-1], sem[::-1], valid[::-1]
        geo = geo[:, ::-1] * np.array([1, -1, 1], np.float32)[:, None, None]
    if flip_x:
        image, sem, valid = image[:, :, ::-1], sem[:, ::-1], valid[:, ::-1]
        geo = geo[:, :, ::-1] * np.array([1, 1, -1], np.float32)[:, None, None]
    return tuple(np.ascontiguousarray(a) for a in (image, sem, geo, valid))


def dihedral_tensor(k: int, t):  # noqa: ANN001, ANN201 - torch tensor (..., H, W) -> same
    """The same transform for a torch tensor of features (no offset semantics)."""
    if k & 4:
        t = t.transpose(-1, -2)
    if k & 2:
        t = t.flip(-2)
    if k & 1:
        t = t.flip(-1)
    return t


def crop_box(shape: tuple[int, int], size: int, rng: np.random.Generator, fg: np.ndarray | None = None) -> tuple[int, int, int, int]:
    """A random ``size`` x ``size`` window (y0, x0, y1, x1); biased to contain foreground when given."""
    h, w = shape
    ch, cw = min(size, h), min(size, w)
    if fg is not None and fg.any() and rng.random() < 0.8:
        ys, xs = np.nonzero(fg[:: 4, :: 4])
        i = rng.integers(len(ys))
        cy, cx = ys[i] * 4, xs[i] * 4
        y0 = int(np.clip(cy - rng.integers(ch), 0, h - ch))
        x0 = int(np.clip(cx - rng.integers(cw), 0, w - cw))
    else:
        y0 = int(rng.integers(h - ch + 1))
        x0 = int(rng.integers(w - cw + 1))
    return y0, x0, y0 + ch, x0 + cw


def pad_to(arrs: tuple[np.ndarray, ...], size: int) -> tuple[np.ndarray, ...]:
    """Zero-pad (C,H,W)/(H,W) arrays at the bottom/right to ``size`` (valid mask pads with False)."""
    out = []
    for a in arrs:
        h, w = a.shape[-2:]
        if h >= size and w >= size:
            out.append(a)
            continue
        pad = [(0, 0)] * (a.ndim - 2) + [(0, max(0, size - h)), (0, max(0, size - w))]
        out.append(np.pad(a, pad))
    return tuple(out)


def photometric(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Cheap intensity augmentation (contrast, brightness, gamma, noise) for the raw-pixel branch."""
    a = rng.uniform(0.75, 1.3)
    b = rng.uniform(-0.1, 0.1)
    out = image * a + b
    if rng.random() < 0.3:
        g = rng.uniform(0.7, 1.4)
        out = np.sign(out) * np.abs(out) ** g
    if rng.random() < 0.3:
        out = out + rng.normal(0, rng.uniform(0.005, 0.04), size=out.shape).astype(np.float32)
    if image.shape[0] == 3 and rng.random() < 0.5 and not np.allclose(image[0], image[1]):
        out = out * rng.uniform(0.9, 1.1, size=(3, 1, 1))  # colour (stain) jitter for RGB
    return out.astype(np.float32)
