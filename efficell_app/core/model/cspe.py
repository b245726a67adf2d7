"""Cell Structure Prompt Encoder (METHOD.md §2).

Turns the frozen encoder's multi-layer tokens and the raw image into
- a global saliency prior S (where cells are, coarse, supervised by the down-sampled foreground),
- a local morphology prior M at strides 2/4/8 from the raw image (where boundaries are),
- a dense prompt (tokens modulated by S, fused with M) and K sparse prompt tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import MLP, Attention, ConvNormAct, norm, sine_position_encoding


class EdgeFilters(nn.Module):
    """Fixed Sobel-x, Sobel-y and Laplacian-of-Gaussian responses of the image's mean intensity."""

    def __init__(self) -> None:
        super().__init__()
        sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 4.0
        yy, xx = torch.meshgrid(torch.arange(5.0) - 2, torch.arange(5.0) - 2, indexing="ij")
        r2 = xx**2 + yy**2
        s2 = 1.0
        log = (r2 - 2 * s2) / (s2**2) * torch.exp(-r2 / (2 * s2))
        log = log - log.mean()
        log5 = log / log.abs().sum()
        k = torch.zeros(3, 1, 5, 5)
        k[0, 0, 1:4, 1:4] = sobel
        k[1, 0, 1:4, 1:4] = sobel.t()
        k[2, 0] = log5
        self.register_buffer("kernel", k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gray = x.mean(dim=1, keepdim=True)
        return F.conv2d(gray, self.kernel.to(x.dtype), padding=2) * 4.0


class MorphologyPrior(nn.Module):
    """Shallow CNN over the raw normalised image (+ fixed edge filters) at strides 2, 4, 8."""

    def __init__(self, widths: tuple[int, int, int] = (16, 32, 48)) -> None:
        super().__init__()
        self.edges = EdgeFilters()
        w2, w4, w8 = widths
        self.s2 = nn.Sequential(ConvNormAct(6, w2, 3, 2), ConvNormAct(w2, w2))
        self.s4 = nn.Sequential(ConvNormAct(w2, w4, 3, 2), ConvNormAct(w4, w4))
        self.s8 = nn.Sequential(ConvNormAct(w4, w8, 3, 2), ConvNormAct(w8, w8))
        self.widths = widths

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = torch.cat([image, self.edges(image)], dim=1)
        m2 = self.s2(x)
        m4 = self.s4(m2)
        m8 = self.s8(m4)
        return m2, m4, m8


class CellStructurePromptEncoder(nn.Module):
    def __init__(self, in_channels: tuple[int, ...], dim: int = 128, n_prompts: int = 16, heads: int = 4,
                 morph_widths: tuple[int, int, int] = (16, 32, 48)) -> None:
        super().__init__()
        self.proj = nn.ModuleList([nn.Conv2d(c, dim, 1) for c in in_channels])
        self.proj_norm = nn.Sequential(norm(dim), nn.GELU())
        self.saliency = nn.Sequential(ConvNormAct(dim, dim // 2), nn.Conv2d(dim // 2, 1, 1))
        self.morphology = MorphologyPrior(morph_widths)
        self.morph_to_tokens = nn.Conv2d(morph_widths[2], dim, 1)
        self.queries = nn.Parameter(torch.randn(n_prompts, dim) * 0.02)
        self.query_attn = Attention(dim, heads)
        self.query_norm = nn.LayerNorm(dim)
        self.query_mlp = MLP(dim, dim * 2)
        self.dim = dim

    def forward(self, features: list[torch.Tensor], image: torch.Tensor) -> dict[str, torch.Tensor]:
        size = features[0].shape[-2:]
        tokens = sum(p(f if f.shape[-2:] == size else F.interpolate(f, size=size, mode="bilinear", align_corners=False))
                     for p, f in zip(self.proj, features))
        tokens = self.proj_norm(tokens)
        sal_logits = self.saliency(tokens)
        s = torch.sigmoid(sal_logits)
        m2, m4, m8 = self.morphology(image)
        m_tok = self.morph_to_tokens(F.adaptive_avg_pool2d(m8, size))
        dense = tokens * (1.0 + s) + m_tok
        b, d, h, w = dense.shape
        pe = sine_position_encoding(h, w, d, dense.device, dense.dtype)
        keys = ((tokens * s) + pe).flatten(2).transpose(1, 2)
        q = self.queries[None].expand(b, -1, -1).to(dense.dtype)
        sparse = self.query_norm(q + self.query_attn(q, keys, (tokens * s).flatten(2).transpose(1, 2)))
        sparse = sparse + self.query_mlp(sparse)
        return {"dense": dense, "sparse": sparse, "saliency": sal_logits, "pe": pe, "m2": m2, "m4": m4, "m8": m8}
