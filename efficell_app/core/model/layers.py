"""Small building blocks shared by the prompt encoder and the mask decoder."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def norm(channels: int) -> nn.GroupNorm:
    """GroupNorm, not BatchNorm: few-shot training runs on batches of one or two tiles."""
    groups = 8 if channels % 8 == 0 else (4 if channels % 4 == 0 else 1)
    return nn.GroupNorm(groups, channels)


class ConvNormAct(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1) -> None:
        super().__init__(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), norm(cout), nn.GELU())


class LightConv(nn.Sequential):
    """1x1 -> depthwise 3x3 -> 1x1: cheap enough for stride-2 maps of 1024-pixel tiles."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 1, bias=False), norm(cout), nn.GELU(),
            nn.Conv2d(cout, cout, 3, 1, 1, groups=cout, bias=False), norm(cout), nn.GELU(),
            nn.Conv2d(cout, cout, 1),
        )


def sine_position_encoding(h: int, w: int, dim: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Fixed 2-D sine/cosine encoding, (1, dim, h, w); works for any grid size (any encoder, any tile)."""
    quarter = dim // 4
    freq = torch.exp(torch.arange(quarter, device=device, dtype=torch.float32) * (-math.log(10000.0) / max(quarter, 1)))
    ys = torch.arange(h, device=device, dtype=torch.float32)[:, None] * freq[None]
    xs = torch.arange(w, device=device, dtype=torch.float32)[:, None] * freq[None]
    pe_y = torch.cat([ys.sin(), ys.cos()], dim=1)  # (h, dim/2)
    pe_x = torch.cat([xs.sin(), xs.cos()], dim=1)  # (w, dim/2)
    pe = torch.cat([pe_y[:, None, :].expand(h, w, -1), pe_x[None, :, :].expand(h, w, -1)], dim=-1)
    if pe.shape[-1] < dim:
        pe = F.pad(pe, (0, dim - pe.shape[-1]))
    return pe.permute(2, 0, 1)[None].to(dtype)


class Attention(nn.Module):
    """Multi-head attention with separate q/k/v projections (SAM style), using SDPA."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, nq, d = q.shape
        h = self.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, t.shape[1], h, d // h).transpose(1, 2)

        o = F.scaled_dot_product_attention(split(self.q(q)), split(self.k(k)), split(self.v(v)))
        return self.out(o.transpose(1, 2).reshape(b, nq, d))


class MLP(nn.Sequential):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
