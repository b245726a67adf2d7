"""Training data that lives on the training device, and the built-in recipe's augmentation done there.

Every training sample (image + targets at the model's scale) is one ``(9, H, W)`` float16 tensor on
the device: image (3), geometric targets (3: distance, dy, dx), semantic class, valid, instance label.
A batch is cut from them with one ``grid_sample`` per sample and crop, which does in one step

- the crop (biased to cells), a continuous **scale** jitter (log-uniform, ``scale_range``) and one of
  the 8 **dihedral** transforms (the offset targets are turned with it: ``v_out = A^T v_src``);
- image channels bilinear, targets nearest (distance and offsets are normalised per cell, so they
  do not change with scale).

Then, batched on the device, what changes between acquisitions of the same kind of sample:
**density** (cells removed from dark-background crops and painted with the background),
**illumination** (a smooth multiplicative field and an additive ramp), **focus** (Gaussian blur),
**halo** (the strength of the phase-contrast halo / unsharp mask changed: ``x + a (x - blur(x))``),
**contrast** / brightness / gamma, **stain** (per-channel gain on colour images) and **noise**.

On a GPU this keeps the device busy (no host copies per step); on a CPU it costs little next to
the network's forward and backward pass.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

CH_IMAGE, CH_GEO, CH_SEM, CH_VALID, CH_LABEL = slice(0, 3), slice(3, 6), 6, 7, 8
MAX_LABEL = 2048  # float16 holds integers exactly up to here


@dataclass(frozen=True)
class AugmentConfig:
    crop: int = 256
    scale_range: tuple[float, float] = (0.75, 1.35)
    fg_bias: float = 0.8  # share of crops centred on a cell pixel
    contrast: tuple[float, float] = (0.75, 1.3)
    brightness: float = 0.1
    gamma_p: float = 0.3
    gamma: tuple[float, float] = (0.7, 1.4)
    noise_p: float = 0.3
    noise: tuple[float, float] = (0.005, 0.04)
    stain_p: float = 0.5
    stain: float = 0.1
    illumination_p: float = 0.5  # grayscale crops only: on H&E the background is bright
    illumination_low: float = 0.15
    focus_p: float = 0.25
    focus_sigma: tuple[float, float] = (0.6, 2.0)
    halo_p: float = 0.3  # grayscale crops only
    halo_gain: tuple[float, float] = (-0.5, 0.8)
    halo_sigma: tuple[float, float] = (2.0, 6.0)
    density_p: float = 0.2  # dark-background crops only
    density_drop: tuple[float, float] = (0.2, 0.6)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> AugmentConfig:
        fields = cls.__dataclass_fields__
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in fields})

    def without_photometric(self) -> AugmentConfig:
        """Geometry only (crop, scale, dihedral): for tests and for looking at crops."""
        return AugmentConfig(crop=self.crop, scale_range=self.scale_range, fg_bias=self.fg_bias, contrast=(1.0, 1.0),
                             brightness=0.0, gamma_p=0.0, noise_p=0.0, stain_p=0.0, illumination_p=0.0, focus_p=0.0,
                             halo_p=0.0, density_p=0.0)


def dihedral_matrix(k: int) -> np.ndarray:
    """2x2 (y, x) matrix A of dihedral transform ``k`` as numbered by ``training_data.dihedral``:
    output offset ``o`` reads the source at ``A @ o`` (bit 2 transpose, then bit 1 flip y, bit 0 flip x)."""
    flip = np.diag([-1.0 if k & 2 else 1.0, -1.0 if k & 1 else 1.0])
    swap = np.array([[0.0, 1.0], [1.0, 0.0]]) if k & 4 else np.eye(2)
    return swap @ flip


@dataclass
class _Sample:
    tensor: torch.Tensor  # (9, H, W) float16 on the device
    dataset: int
    gray: bool
    dark_background: bool
    fg: np.ndarray  # (N, 2) int: cell pixel coordinates (every 4th row/column), for biased crops


class DeviceData:
    """Training samples resident on ``device``; :meth:`batch` cuts augmented batches from them."""

    def __init__(self, samples: Iterable[tuple[int, Any]], device: str | torch.device, config: AugmentConfig | None = None) -> None:
        """``samples``: (dataset id, ``training_data.TrainSample``) pairs, consumed one at a time (so only one
        float32 sample is in host memory at once). Crops are drawn from the datasets in turn, so each gets
        the same share whatever its number of images."""
        self.device = torch.device(device)
        self.config = config or AugmentConfig()
        self.samples: list[_Sample] = []
        for ds, s in samples:
            if int(s.labels.max()) >= MAX_LABEL:
                raise ValueError(f"{s.name}: {int(s.labels.max())} objects; at most {MAX_LABEL - 1} fit a training sample")
            t = np.concatenate([s.image, s.geo, s.sem[None].astype(np.float32), s.valid[None].astype(np.float32),
                                s.labels[None].astype(np.float32)]).astype(np.float16)
            gray = bool(np.allclose(s.image[0], s.image[1]) and np.allclose(s.image[1], s.image[2]))
            bg = s.image[0][s.sem == 0]
            dark = gray and bg.size > 0 and float(np.median(bg)) < 0.25
            ys, xs = np.nonzero(s.sem[::4, ::4] > 0)
            self.samples.append(_Sample(torch.from_numpy(t).to(self.device), int(ds), gray, dark,
                                        np.stack([ys * 4, xs * 4], 1)))
        self.by_dataset: dict[int, list[int]] = {}
        for i, s in enumerate(self.samples):
            self.by_dataset.setdefault(s.dataset, []).append(i)
        self._turn = 0
        c = self.config.crop
        off = torch.arange(c, dtype=torch.float32, device=self.device) + 0.5 - c / 2.0
        self._offsets = torch.stack(torch.meshgrid(off, off, indexing="ij"), -1)  # (c, c, 2) (y, x)

    def nbytes(self) -> int:
        return sum(s.tensor.numel() * s.tensor.element_size() for s in self.samples)

    # ------------------------------------------------------------------ geometry
    def _draw(self, rng: np.random.Generator, batch: int) -> list[tuple[int, float, int, float, float]]:
        """(sample, scale, dihedral k, centre y, centre x) per crop, from the host RNG (cheap, reproducible)."""
        cfg = self.config
        keys = sorted(self.by_dataset)
        out = []
        for _ in range(batch):
            ds = keys[self._turn % len(keys)]
            self._turn += 1
            i = self.by_dataset[ds][int(rng.integers(len(self.by_dataset[ds])))]
            s = self.samples[i]
            scale = float(np.exp(rng.uniform(np.log(cfg.scale_range[0]), np.log(cfg.scale_range[1]))))
            h, w = s.tensor.shape[-2:]
            half = cfg.crop / scale / 2.0
            if len(s.fg) and rng.random() < cfg.fg_bias:
                cy, cx = s.fg[int(rng.integers(len(s.fg)))]
                cy, cx = cy + rng.uniform(-half, half), cx + rng.uniform(-half, half)
            else:
                cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            # keep the window inside the image where it fits (as crop_box does), else centre it
            cy = float(np.clip(cy, half, h - half)) if h > 2 * half else h / 2.0
            cx = float(np.clip(cx, half, w - half)) if w > 2 * half else w / 2.0
            out.append((i, scale, int(rng.integers(8)), round(cy), round(cx)))
        return out

    def crops(self, draws: Sequence[tuple[int, float, int, float, float]]) -> torch.Tensor:
        """(B, 9, crop, crop) float32 crops for explicit draws (sample, scale, k, centre y, centre x)."""
        out = []
        for i, scale, k, cy, cx in draws:
            src = self.samples[i].tensor
            h, w = src.shape[-2:]
            # only the window the crop reads is converted to float32 (a sample can be 50x a crop)
            r = int(math.ceil(self.config.crop / scale / 2)) + 2
            y0, x0 = max(0, int(cy) - r), max(0, int(cx) - r)
            y1, x1 = min(h, int(cy) + r), min(w, int(cx) + r)
            a = torch.as_tensor(dihedral_matrix(k), dtype=torch.float32, device=self.device)
            pos = self._offsets @ a.T / scale + torch.tensor([cy - y0, cx - x0], dtype=torch.float32, device=self.device)
            grid = torch.stack([2 * pos[..., 1] / (x1 - x0) - 1, 2 * pos[..., 0] / (y1 - y0) - 1], -1)[None]  # (1,c,c,2) (x, y)
            x = src[None, :, y0:y1, x0:x1].float()
            img = F.grid_sample(x[:, CH_IMAGE], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            rest = F.grid_sample(x[:, 3:], grid, mode="nearest", padding_mode="zeros", align_corners=False)
            geo = rest[:, 0:3]
            off = torch.einsum("ji,bjhw->bihw", a, geo[:, 1:3])  # v_out = A^T v_src
            out.append(torch.cat([img, geo[:, :1], off, rest[:, 3:]], 1))
        return torch.cat(out)

    def batch(self, rng: np.random.Generator, batch: int, generator: torch.Generator | None = None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """An augmented batch: image (B,3,c,c) float32, semantic (B,c,c) long, geo (B,3,c,c), valid (B,c,c) bool."""
        draws = self._draw(rng, batch)
        x = self.crops(draws)
        meta = [self.samples[d[0]] for d in draws]
        img = photometric(x, meta, rng, self.config, generator)
        sem = x[:, CH_SEM].round().long()
        return img, sem, x[:, CH_GEO], x[:, CH_VALID] > 0.5


def _gauss_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, H, W), reflect-padded."""
    r = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    r_y, r_x = min(r, x.shape[-2] - 1), min(r, x.shape[-1] - 1)
    y = F.pad(x, (0, 0, r_y, r_y), mode="reflect")
    y = F.conv2d(y, k[r - r_y:r + r_y + 1].view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
    y = F.pad(y, (r_x, r_x, 0, 0), mode="reflect")
    return F.conv2d(y, k[r - r_x:r + r_x + 1].view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)


def _pick(rng: np.random.Generator, p: float, allowed: Sequence[bool]) -> np.ndarray:
    return np.array([bool(ok) and rng.random() < p for ok in allowed])


def _col(values: np.ndarray | list, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values, np.float32), device=like.device).view(-1, 1, 1, 1)


def photometric(x: torch.Tensor, meta: Sequence[_Sample], rng: np.random.Generator, cfg: AugmentConfig,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """The acquisition augmentations of the module docstring on crops ``x`` (B, 9, c, c); -> image (B, 3, c, c).

    Edits the targets of ``x`` in place where the density augmentation removes cells.
    """
    img = x[:, CH_IMAGE].clone()
    b = img.shape[0]
    gray = [m.gray for m in meta]
    # density: remove a share of the cells of dark-background crops, painting them with the background
    sel = _pick(rng, cfg.density_p, [m.dark_background for m in meta])
    for i in np.flatnonzero(sel):
        lab = x[i, CH_LABEL].round()
        salt, frac = rng.random(), rng.uniform(*cfg.density_drop)
        drop = (torch.frac(lab * 0.6180339887 + salt) < frac) & (lab > 0)
        if not drop.any():
            continue
        kept = (lab > 0) & ~drop
        paint = (F.max_pool2d(drop[None, None].float(), 5, 1, 2)[0, 0] > 0) & ~kept
        bg = img[i, 0][(x[i, CH_SEM] < 0.5) & (x[i, CH_VALID] > 0.5) & (lab == 0)]
        level = bg.median() if bg.numel() else img.new_tensor(0.0)
        spread = bg.std() if bg.numel() > 1 else img.new_tensor(0.0)
        fill = level + spread * torch.randn(img.shape[-2:], device=img.device, generator=generator)
        img[i] = torch.where(paint, fill, img[i])
        x[i, CH_SEM][drop] = 0
        x[i, CH_GEO][:, drop] = 0
        x[i, CH_LABEL][drop] = 0
    # illumination: smooth multiplicative field (grid of 2..10 cells per side) and an additive ramp
    sel = _pick(rng, cfg.illumination_p, gray)
    for i in np.flatnonzero(sel):
        n = int(rng.integers(2, 11))
        grid = torch.as_tensor(rng.uniform(cfg.illumination_low, 1.0, (1, 1, n, n)).astype(np.float32), device=img.device)
        field = F.interpolate(grid, size=img.shape[-2:], mode="bilinear", align_corners=False)[0]
        ramp = torch.linspace(-1, 1, img.shape[-1], device=img.device) * rng.uniform(-0.1, 0.1)
        img[i] = img[i] * field + ramp
    # focus: Gaussian blur; halo: unsharp mask of random (also negative) gain
    sel = _pick(rng, cfg.focus_p, [True] * b)
    if sel.any():
        idx = torch.as_tensor(np.flatnonzero(sel), device=img.device)
        img[idx] = _gauss_blur(img[idx], rng.uniform(*cfg.focus_sigma))
    sel = _pick(rng, cfg.halo_p, gray)
    if sel.any():
        idx = torch.as_tensor(np.flatnonzero(sel), device=img.device)
        gain = _col(rng.uniform(*cfg.halo_gain, len(idx)), img)
        img[idx] = img[idx] + gain * (img[idx] - _gauss_blur(img[idx], rng.uniform(*cfg.halo_sigma)))
    # contrast, brightness, gamma
    img = img * _col(rng.uniform(*cfg.contrast, b), img) + _col(rng.uniform(-cfg.brightness, cfg.brightness, b), img)
    g = np.where(rng.random(b) < cfg.gamma_p, rng.uniform(*cfg.gamma, b), 1.0)
    if (g != 1.0).any():
        img = torch.sign(img) * img.abs().pow(_col(g, img))
    # stain (colour images only), noise
    sel = _pick(rng, cfg.stain_p, [not v for v in gray])
    if sel.any():
        gains = np.ones((b, 3), np.float32)
        gains[sel] = rng.uniform(1 - cfg.stain, 1 + cfg.stain, (int(sel.sum()), 3))
        img = img * torch.as_tensor(gains, device=img.device).view(b, 3, 1, 1)
    sigma = np.where(rng.random(b) < cfg.noise_p, rng.uniform(*cfg.noise, b), 0.0)
    if (sigma > 0).any():
        noise = torch.randn(img.shape, device=img.device, generator=generator)
        g_idx = torch.as_tensor(np.flatnonzero(gray), device=img.device, dtype=torch.long)
        noise[g_idx] = noise[g_idx, :1].expand(-1, 3, -1, -1)  # a grayscale image stays grayscale
        img = img + noise * _col(sigma, img)
    img = torch.where(x[:, CH_VALID:CH_VALID + 1] > 0.5, img, torch.zeros_like(img))  # padding stays black
    return img.clamp_(-0.5, 1.5)
