"""The trainable part of EffiCell: prompt encoder + mask decoder over any encoder's tokens."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from .cspe import CellStructurePromptEncoder
from .smd import SynergisticMaskDecoder


@dataclass(frozen=True)
class AdapterConfig:
    dim: int = 128
    n_prompts: int = 16
    heads: int = 4
    depth: int = 2
    morph_widths: tuple[int, int, int] = (16, 32, 48)
    decoder_widths: tuple[int, int, int] = (64, 48, 24)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> AdapterConfig:
        fields = cls.__dataclass_fields__
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in fields})


class EffiCellAdapters(nn.Module):
    """CSPE + SMD. ``forward(features, image)`` -> dense outputs at the image's size.

    Outputs: ``sem`` (B,3,H,W) logits bg/interior/boundary; ``geo`` (B,3,H,W) = distance (0..1),
    dy, dx (-1..1); ``saliency`` (B,1,h,w) logits; ``sem_aux``/``geo_aux`` at stride 4.
    """

    def __init__(self, in_channels: tuple[int, ...], stride: int, config: AdapterConfig | None = None) -> None:
        super().__init__()
        self.config = config or AdapterConfig()
        self.in_channels = tuple(int(c) for c in in_channels)
        self.stride = int(stride)
        c = self.config
        self.prompt_encoder = CellStructurePromptEncoder(self.in_channels, c.dim, c.n_prompts, c.heads, c.morph_widths)
        self.mask_decoder = SynergisticMaskDecoder(c.dim, c.heads, c.depth, c.morph_widths, c.decoder_widths)

    def forward(self, features: list[torch.Tensor], image: torch.Tensor) -> dict[str, torch.Tensor]:
        prompts = self.prompt_encoder(features, image)
        out = self.mask_decoder(prompts, tuple(image.shape[-2:]))
        out["saliency"] = prompts["saliency"]
        return out

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


def build_adapters(in_channels: tuple[int, ...], stride: int, config: AdapterConfig | None = None) -> EffiCellAdapters:
    return EffiCellAdapters(in_channels, stride, config)
