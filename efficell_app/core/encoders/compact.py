"""The built-in compact encoder: a small residual CNN, fast on a CPU, trained by EffiCell.

Its four feature levels (end of stages 1-4) are all resampled to stride 16, the same
shape of "multi-layer tokens" the ViT encoders give, so the adapters treat every encoder
alike. Its trained weights ship in ``resources/models/`` (see ``builtin_training``).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .registry import EncoderSpec, WeightSource, register

NAME = "efficell_compact"
BUNDLED_FILE = "efficell_compact_encoder.safetensors"


class _Block(nn.Module):
    """Residual block: 3x3 conv-BN-ReLU-3x3 conv-BN + identity (projected when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.skip(x), inplace=True)


class CompactEncoder(nn.Module):
    """Stem (stride 2) and four stages (strides 4, 8, 16, 16); outputs four stride-16 maps."""

    stride = 16

    def __init__(self, widths: tuple[int, int, int, int] = (32, 64, 128, 192), depths: tuple[int, int, int, int] = (1, 2, 3, 2)) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0] // 2, 3, 2, 1, bias=False), nn.BatchNorm2d(widths[0] // 2), nn.ReLU(inplace=True))
        stages = []
        cin = widths[0] // 2
        strides = (2, 2, 2, 1)
        for w, d, s in zip(widths, depths, strides):
            blocks = [_Block(cin, w, s)] + [_Block(w, w) for _ in range(d - 1)]
            stages.append(nn.Sequential(*blocks))
            cin = w
        self.stages = nn.ModuleList(stages)
        self.out_channels = tuple(widths)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h, w = x.shape[-2:]
        size = (-(-h // 16), -(-w // 16))
        x = self.stem(x)
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x if x.shape[-2:] == size else F.adaptive_avg_pool2d(x, size))
        return outs


def _build(small: bool = False) -> CompactEncoder:
    if small:
        return CompactEncoder(widths=(8, 16, 24, 32), depths=(1, 1, 1, 1))
    return CompactEncoder()


def bundled_weights_path() -> Path:
    from ..resources import models_dir

    return models_dir() / BUNDLED_FILE


def _load(backbone: nn.Module, path: Path) -> None:
    from safetensors.torch import load_file

    state = load_file(str(path))
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    missing, unexpected = backbone.load_state_dict(state, strict=False)
    if missing or unexpected:
        from ..errors import WeightsError

        raise WeightsError(f"{path}: not a {NAME} checkpoint (missing {len(missing)}, unexpected {len(unexpected)} tensors)")


SPEC = register(
    EncoderSpec(
        name=NAME,
        family="builtin",
        description="EffiCell compact CNN encoder (built in, trained on public microscopy data)",
        input_size=512,
        patch_size=16,
        embed_dim=192,
        feature_blocks=(0, 1, 2, 3),
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        builder=_build,
        approx_params_m=2.0,
        weights=WeightSource(filename=BUNDLED_FILE, url="bundled://resources/models/" + BUNDLED_FILE, sha256=None, size_bytes=None,
                             licence="CC BY-NC-SA 4.0 (trained in part on MoNuSeg; non-commercial use)"),
        builtin=True,
        licence="CC BY-NC-SA 4.0 (weights); code Apache-2.0",
        load_checkpoint=_load,
    )
)
