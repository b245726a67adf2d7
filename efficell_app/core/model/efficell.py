"""Composition by injection: a frozen encoder and the trainable adapters (SAM's ``Sam(...)`` pattern)."""

from __future__ import annotations

import torch
from torch import nn

from ..encoders.registry import FrozenEncoder
from .adapters import EffiCellAdapters


class EffiCellModel(nn.Module):
    def __init__(self, encoder: FrozenEncoder, adapters: EffiCellAdapters) -> None:
        super().__init__()
        if tuple(encoder.out_channels) != adapters.in_channels or encoder.stride != adapters.stride:
            raise ValueError(
                f"adapters expect features {adapters.in_channels} at stride {adapters.stride}, "
                f"encoder '{encoder.spec.name}' gives {tuple(encoder.out_channels)} at stride {encoder.stride}"
            )
        self.encoder = encoder
        self.adapters = adapters

    def forward(self, image01: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.encoder(image01)
        return self.adapters(features, image01)
