"""Losses for both decoder branches, the saliency prior, and the cross-branch consistency terms."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Class weights for background / interior / boundary: boundaries are thin but decide splits.
SEM_WEIGHTS = (1.0, 1.0, 2.0)


def _sobel(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    k = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=x.device, dtype=x.dtype) / 8.0
    c = x.shape[1]
    kx = k.view(1, 1, 3, 3).repeat(c, 1, 1, 1)
    ky = k.t().contiguous().view(1, 1, 3, 3).repeat(c, 1, 1, 1)
    return F.conv2d(x, ky, padding=1, groups=c), F.conv2d(x, kx, padding=1, groups=c)


def branch_losses(sem_logits: torch.Tensor, geo: torch.Tensor, sem_t: torch.Tensor, geo_t: torch.Tensor,
                  valid: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Semantic CE + Dice, geometric MSE (+ HoVer-style gradient MSE on the offsets).

    ``sem_t`` (B,H,W) long; ``geo_t`` (B,3,H,W); ``valid`` (B,H,W) bool marks pixels with labels
    (False in padding / the held-out part of a single image).
    """
    if valid is None:
        valid = torch.ones_like(sem_t, dtype=torch.bool)
    vf = valid.float()
    n = vf.sum().clamp_min(1.0)
    w = torch.tensor(SEM_WEIGHTS, device=sem_logits.device, dtype=sem_logits.dtype)
    ce = (F.cross_entropy(sem_logits, sem_t.clamp_min(0), weight=w, reduction="none") * vf).sum() / n
    prob = torch.softmax(sem_logits, 1)
    fg_p = (1.0 - prob[:, 0]) * vf
    fg_t = (sem_t > 0).float() * vf
    dice = 1.0 - (2 * (fg_p * fg_t).sum() + 1.0) / (fg_p.sum() + fg_t.sum() + 1.0)
    fg = fg_t[:, None]
    dist = (((geo[:, :1] - geo_t[:, :1]) ** 2) * vf[:, None]).sum() / n
    off = (((geo[:, 1:] - geo_t[:, 1:]) ** 2) * vf[:, None]).sum() / n
    gy_p, gx_p = _sobel(geo[:, 1:])
    gy_t, gx_t = _sobel(geo_t[:, 1:])
    n_fg = fg.sum().clamp_min(1.0)
    grad = ((((gy_p - gy_t) ** 2 + (gx_p - gx_t) ** 2) * fg).sum()) / n_fg
    return {"ce": ce, "dice": dice, "dist": dist, "offset": off, "offset_grad": grad}


def consistency_losses(sem_logits: torch.Tensor, geo: torch.Tensor, valid: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The two branches must agree:
    - foreground from the semantic head matches the support of the distance map;
    - boundary probability matches where the offset maps change sharply (their gradient)."""
    prob = torch.softmax(sem_logits, 1)
    vf = torch.ones_like(prob[:, 0]) if valid is None else valid.float()
    n = vf.sum().clamp_min(1.0)
    fg_sem = 1.0 - prob[:, 0]
    fg_geo = (geo[:, 0] * 6.0).clamp(0.0, 1.0)
    c_fg = (((fg_sem - fg_geo) ** 2) * vf).sum() / n
    gy, gx = _sobel(geo[:, 1:])
    edge = torch.tanh((gy**2 + gx**2).sum(1).sqrt() * 4.0)
    c_bd = (((prob[:, 2] - edge) ** 2) * vf * fg_sem.detach()).sum() / n
    return {"cons_fg": c_fg, "cons_boundary": c_bd}


WEIGHTS = {"ce": 1.0, "dice": 1.0, "dist": 2.0, "offset": 1.0, "offset_grad": 1.0, "saliency": 0.5,
           "aux": 0.4, "cons_fg": 0.2, "cons_boundary": 0.1}


def total_loss(out: dict[str, torch.Tensor], sem_t: torch.Tensor, geo_t: torch.Tensor, valid: torch.Tensor | None = None,
               stride: int = 16) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of every term; returns the loss and the terms as floats (for progress reports)."""
    terms = branch_losses(out["sem"], out["geo"], sem_t, geo_t, valid)
    # Auxiliary (stride-4) predictions, against down-sampled targets.
    size = out["sem_aux"].shape[-2:]
    sem_small = F.interpolate(sem_t[:, None].float(), size=size, mode="nearest")[:, 0].long()
    geo_small = F.interpolate(geo_t, size=size, mode="nearest")
    valid_small = None if valid is None else F.interpolate(valid[:, None].float(), size=size, mode="nearest")[:, 0] > 0.5
    aux = branch_losses(out["sem_aux"], out["geo_aux"], sem_small, geo_small, valid_small)
    terms["aux"] = aux["ce"] + aux["dice"] + 2 * aux["dist"] + aux["offset"]
    fg = (sem_t > 0).float()[:, None]
    sal_t = F.adaptive_avg_pool2d(fg, out["saliency"].shape[-2:])
    if valid is None:
        terms["saliency"] = F.binary_cross_entropy_with_logits(out["saliency"], sal_t)
    else:  # only token cells that are mostly annotated pixels count (padding / held-out bands do not)
        sal_w = (F.adaptive_avg_pool2d(valid[:, None].float(), out["saliency"].shape[-2:]) > 0.5).float()
        bce = F.binary_cross_entropy_with_logits(out["saliency"], sal_t, reduction="none")
        terms["saliency"] = (bce * sal_w).sum() / sal_w.sum().clamp_min(1.0)
    terms.update(consistency_losses(out["sem"], out["geo"], valid))
    loss = sum(WEIGHTS[k] * v for k, v in terms.items())
    return loss, {k: float(v.detach()) for k, v in terms.items()}
