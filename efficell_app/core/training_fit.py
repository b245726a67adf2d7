"""One fine-tuning run of the adapters on cached encoder features: the recipe and the step loop.

A :class:`Recipe` says how the adapters change: learning rates per part (the prompt encoder
and the mask decoder separately), a pull toward the starting weights (L2-SP, Li et al. 2018),
an exponential moving average of the weights (the state that is scored and kept), parts kept
frozen, the strength of the intensity augmentation, and the mixes of start and trained weights
scored at each checkpoint (weight-space interpolation, WiSE-FT: Wortsman et al. 2022). Budgets
are in steps, not seconds, so a busy machine changes how long a run takes but never what it
learns.

:class:`Fit` runs one such fine-tuning from a starting state on a subset of the training
images (a cross-validation fold, or all of them); the caller scores :meth:`Fit.weights` at
the checkpoints it asks for.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .training_data import TrainSample

DECODER = "mask_decoder."


@dataclass(frozen=True)
class Recipe:
    """How the adapters are fine-tuned from a starting adapter (or trained fresh)."""

    steps: int = 60  # optimiser steps of one run
    lr: float = 5e-4  # prompt encoder (and everything not in the decoder)
    decoder_lr: float = 5e-4  # mask decoder
    weight_decay: float = 0.0  # decoupled decay toward zero (AdamW); 0 when pulling toward the start instead
    l2sp: float = 0.0  # weight of sum((w - w_start)^2) in the loss
    ema: float = 0.0  # decay of the moving average of the weights that is scored and kept (0: the raw weights)
    freeze: tuple[str, ...] = ()  # parameter-name prefixes that keep their starting values
    batch: int = 4
    crop: int = 256
    photometric: float = 1.0  # strength of the intensity augmentation (0: none, 1: training_data.photometric)
    checkpoints: int = 4  # validations per run, evenly spaced (the last at the final step)
    warmup: int = 5  # steps of linear learning-rate warm-up
    # fractions of the way from the start to the trained weights scored at every checkpoint (1: the trained
    # weights alone); the held-out images choose one with the step (:func:`mix_state`)
    mixes: tuple[float, ...] = (1.0,)
    # rescalings of each image around its cells' size (each cached separately): a jitter of the cell size, as the
    # generalist was trained with, so that the adapter stays right at the sizes its own diameter estimate probes
    scales: tuple[float, ...] = (1.0,)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("freeze", "mixes", "scales"):
            d[key] = list(d[key])
        return d

    def checkpoint_steps(self, steps: int | None = None) -> list[int]:
        n = self.steps if steps is None else steps
        k = max(1, min(self.checkpoints, n))
        return sorted({max(1, round(n * (i + 1) / k)) for i in range(k)})


@dataclass
class Tile:
    image: int  # index of the training image
    sample: TrainSample  # padded
    sha: str
    box: tuple[int, int, int, int]
    weight: float


def lr_factor(step: int, steps: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 2 % of the peak."""
    if step < warmup:
        return (step + 1) / warmup
    frac = (step - warmup) / max(steps - warmup, 1)
    return 0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * min(max(frac, 0.0), 1.0)))


def make_batch(tiles: list[Tile], by_image: dict[int, list[int]], image_ids: list[int], cache, ks: list[int],  # noqa: ANN001
               rng: np.random.Generator, batch: int, crop: int, stride: int, photometric: float = 1.0):  # noqa: ANN201
    """A batch of stride-aligned crops: images balanced, tiles by labelled area, crops biased to cells."""
    import torch

    from .feature_cache import dihedral_box
    from .training_data import crop_box, dihedral
    from .training_data import photometric as jitter

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
        if photometric > 0:  # strength s: s x (the standard jitter's change)
            im = im + np.float32(photometric) * (jitter(im, rng) - im)
        ims.append(im.astype(np.float32))
        sems.append(se)
        geos.append(ge)
        valids.append(va)
    f_b = [torch.from_numpy(np.stack([f[i] for f in feats])) for i in range(len(feats[0]))]
    return (torch.from_numpy(np.stack(ims)), f_b, torch.from_numpy(np.stack(sems)).long(),
            torch.from_numpy(np.stack(geos)), torch.from_numpy(np.stack(valids)))


def mix_state(start: dict[str, Any], trained: dict[str, Any], mix: float) -> dict[str, Any]:
    """The weights ``mix`` of the way from ``start`` to ``trained`` (counters and other integer buffers: the
    trained ones). Interpolating a fine-tuned model back toward its start keeps what it learned and much of
    what it knew (WiSE-FT)."""
    if mix == 1.0:
        return {k: v.detach().clone() for k, v in trained.items()}
    return {k: (start[k].to(v.device, v.dtype) + mix * (v.detach() - start[k].to(v.device, v.dtype)))
            if v.is_floating_point() else v.detach().clone() for k, v in trained.items()}


class Fit:
    """One fine-tuning run: ``for step, losses in fit.steps(): ...``; ``weights()`` is the state to score/keep."""

    def __init__(self, adapters, start: dict[str, Any], recipe: Recipe, tiles: list[Tile],  # noqa: ANN001
                 by_image: dict[int, list[int]], image_ids: list[int], cache, ks: list[int], stride: int,  # noqa: ANN001
                 device: str, seed: int, steps: int | None = None) -> None:
        import torch

        self.model = adapters
        self.start = start
        self._mixed = None  # a copy of the adapters that holds mixed weights to score (made on first use)
        self.model.load_state_dict(start)
        self.model.train()
        self.recipe = recipe
        self.n_steps = recipe.steps if steps is None else steps
        self.tiles, self.by_image, self.cache, self.ks, self.stride, self.device = tiles, by_image, cache, ks, stride, device
        self.image_ids = [i for i in image_ids if i in by_image]
        if not self.image_ids:
            raise ValueError("no training tiles in the chosen images")
        self.rng = np.random.default_rng(seed)
        torch.manual_seed(seed)
        self.step = 0
        groups: dict[str, list] = {"prompt": [], "decoder": []}
        self.anchor: list[tuple[Any, Any]] = []  # (parameter, its start value) for L2-SP
        for name, p in self.model.named_parameters():
            frozen = any(name.startswith(f) for f in recipe.freeze)
            p.requires_grad_(not frozen)
            if frozen:
                continue
            groups["decoder" if name.startswith(DECODER) else "prompt"].append(p)
            if recipe.l2sp > 0:
                self.anchor.append((p, start[name].detach().clone().to(p.device)))
        self.base_lr = {"prompt": recipe.lr, "decoder": recipe.decoder_lr}
        self.opt = torch.optim.AdamW([{"params": ps, "name": n} for n, ps in groups.items() if ps],
                                     lr=recipe.lr, weight_decay=recipe.weight_decay)
        self.ema = copy.deepcopy(self.model).eval() if recipe.ema > 0 else None
        if self.ema is not None:
            for p in self.ema.parameters():
                p.requires_grad_(False)
        self.seconds = 0.0

    def trainable(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def steps(self) -> Iterator[tuple[int, dict[str, float]]]:
        """Run the remaining steps, yielding ``(step, loss terms)`` after each."""
        import time

        import torch

        from .losses import total_loss

        r = self.recipe
        params = [p for g in self.opt.param_groups for p in g["params"]]
        while self.step < self.n_steps:
            t0 = time.perf_counter()
            f = lr_factor(self.step, self.n_steps, r.warmup)
            for g in self.opt.param_groups:
                g["lr"] = self.base_lr[g["name"]] * f
            x, feats, sem_t, geo_t, valid = make_batch(self.tiles, self.by_image, self.image_ids, self.cache, self.ks,
                                                       self.rng, r.batch, r.crop, self.stride, r.photometric)
            x, sem_t, geo_t, valid = x.to(self.device), sem_t.to(self.device), geo_t.to(self.device), valid.to(self.device)
            feats = [t.to(self.device, torch.float32) for t in feats]
            out = self.model(feats, x)
            loss, terms = total_loss(out, sem_t, geo_t, valid, self.stride)
            if self.anchor:
                pull = sum(((p - p0) ** 2).sum() for p, p0 in self.anchor)
                loss = loss + r.l2sp * pull
                terms["l2sp"] = float(pull.detach())
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            self.opt.step()
            if self.ema is not None:
                with torch.no_grad():
                    for pe, pm in zip(self.ema.parameters(), self.model.parameters()):
                        pe.lerp_(pm.detach(), 1.0 - r.ema)
            self.step += 1
            self.seconds += time.perf_counter() - t0
            terms["total"] = float(loss.detach())
            if not math.isfinite(terms["total"]):  # diverged: the weights are no longer finite numbers
                from .errors import EffiCellError

                raise EffiCellError(f"training diverged at step {self.step} (the loss is not finite); try a lower learning rate")
            yield self.step, terms

    def weights(self):  # noqa: ANN201 - the adapters to score and keep (EMA weights when the recipe averages)
        return self.ema if self.ema is not None else self.model

    def state(self, mix: float = 1.0) -> dict[str, Any]:
        """The weights to keep: :meth:`weights`, ``mix`` of the way from the start (:func:`mix_state`)."""
        return mix_state(self.start, self.weights().state_dict(), mix)

    def mixed(self, mix: float):  # noqa: ANN201 - the adapters to score at ``mix`` (the trained ones at 1)
        if mix == 1.0:
            return self.weights()
        if self._mixed is None:
            self._mixed = copy.deepcopy(self.weights()).eval()
        self._mixed.load_state_dict(self.state(mix))
        return self._mixed
