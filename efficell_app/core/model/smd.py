"""Synergistic Mask Decoder (METHOD.md §3).

A two-way transformer between the sparse prompt tokens and the dense prompt, an upsampling
path with skips from the morphology prior, and two heads that exchange their intermediate
predictions (cross-guidance):
- semantic: background / interior / boundary logits,
- geometric: normalised distance-to-boundary (sigmoid) and y/x offsets to the instance centre (tanh).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import MLP, Attention, ConvNormAct, LightConv


class TwoWayBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_dim: int) -> None:
        super().__init__()
        self.self_attn = Attention(dim, heads)
        self.n1 = nn.LayerNorm(dim)
        self.t2i = Attention(dim, heads)
        self.n2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, mlp_dim)
        self.n3 = nn.LayerNorm(dim)
        self.i2t = Attention(dim, heads)
        self.n4 = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor, dense: torch.Tensor, pe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.n1(tokens + self.self_attn(tokens, tokens, tokens))
        tokens = self.n2(tokens + self.t2i(tokens, dense + pe, dense))
        tokens = self.n3(tokens + self.mlp(tokens))
        dense = self.n4(dense + self.i2t(dense + pe, tokens, tokens))
        return tokens, dense


class SynergisticMaskDecoder(nn.Module):
    def __init__(self, dim: int = 128, heads: int = 4, depth: int = 2, morph_widths: tuple[int, int, int] = (16, 32, 48),
                 widths: tuple[int, int, int] = (64, 48, 24)) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([TwoWayBlock(dim, heads, dim * 2) for _ in range(depth)])
        w8, w4, w2 = widths
        m2, m4, m8 = morph_widths
        self.up8 = ConvNormAct(dim + m8, w8)
        self.up4 = ConvNormAct(w8 + m4, w4)
        self.sem_aux = nn.Conv2d(w4, 3, 1)
        self.geo_aux = nn.Conv2d(w4, 3, 1)
        # Cross-guidance: each branch sees the other's intermediate prediction.
        self.sem_in = ConvNormAct(w4 + 3, w2 + 8)
        self.geo_in = ConvNormAct(w4 + 3, w2 + 8)
        self.sem_up = LightConv(w2 + 8 + m2, w2)
        self.geo_up = LightConv(w2 + 8 + m2, w2)
        self.sem_head = nn.Conv2d(w2, 3, 1)
        self.geo_head = nn.Conv2d(w2, 3, 1)

    @staticmethod
    def _geo_act(g: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.sigmoid(g[:, :1]), torch.tanh(g[:, 1:])], dim=1)

    def forward(self, prompts: dict[str, torch.Tensor], out_size: tuple[int, int]) -> dict[str, torch.Tensor]:
        dense, tokens, pe = prompts["dense"], prompts["sparse"], prompts["pe"]
        b, d, h, w = dense.shape
        flat = dense.flatten(2).transpose(1, 2)
        pe_flat = pe.flatten(2).transpose(1, 2)
        for blk in self.blocks:
            tokens, flat = blk(tokens, flat, pe_flat)
        x = flat.transpose(1, 2).reshape(b, d, h, w)
        m2, m4, m8 = prompts["m2"], prompts["m4"], prompts["m8"]
        x = self.up8(torch.cat([F.interpolate(x, size=m8.shape[-2:], mode="bilinear", align_corners=False), m8], 1))
        x = self.up4(torch.cat([F.interpolate(x, size=m4.shape[-2:], mode="bilinear", align_corners=False), m4], 1))
        sem_aux = self.sem_aux(x)
        geo_aux = self._geo_act(self.geo_aux(x))
        s = self.sem_in(torch.cat([x, geo_aux], 1))
        g = self.geo_in(torch.cat([x, torch.softmax(sem_aux, 1)], 1))
        up = m2.shape[-2:]
        s = self.sem_up(torch.cat([F.interpolate(s, size=up, mode="bilinear", align_corners=False), m2], 1))
        g = self.geo_up(torch.cat([F.interpolate(g, size=up, mode="bilinear", align_corners=False), m2], 1))
        sem = F.interpolate(self.sem_head(s), size=out_size, mode="bilinear", align_corners=False)
        geo = self._geo_act(F.interpolate(self.geo_head(g), size=out_size, mode="bilinear", align_corners=False))
        return {"sem": sem, "geo": geo, "sem_aux": sem_aux, "geo_aux": geo_aux}
