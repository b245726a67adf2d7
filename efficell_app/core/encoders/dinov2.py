"""DINOv2 ViT-S/B/L (patch 14), with and without registers, built with timm.

The adapters read four evenly spaced blocks, each passed through the final LayerNorm (as
DINOv2's own dense heads do), as ``(B, embed_dim, H/14, W/14)`` maps. Any input size
works: ``dynamic_img_size`` interpolates the position embedding and ``dynamic_img_pad``
pads to a multiple of 14.

Published checkpoints (``dinov2_vit*14[_reg4]_pretrain.pth``) are flat state dicts in
DINOv2's own layout (``cls_token``, ``pos_embed``, ``mask_token``, ``register_tokens``,
``blocks.N.*``); timm's ``checkpoint_filter_fn`` converts them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from ..errors import WeightsError
from .registry import EncoderSpec, WeightSource, register
from .weights import check_and_load, check_vit_size, read_checkpoint

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# size -> (timm model, embed_dim, depth, feature blocks, params M, approx file MB)
_CONFIGS: dict[str, tuple[str, int, int, tuple[int, ...], float, int]] = {
    "s": ("vit_small_patch14", 384, 12, (2, 5, 8, 11), 22.1, 88),
    "b": ("vit_base_patch14", 768, 12, (2, 5, 8, 11), 86.6, 346),
    "l": ("vit_large_patch14", 1024, 24, (5, 11, 17, 23), 304.4, 1220),
}
_SIZE_BY_DIM = {384: "ViT-S/14", 768: "ViT-B/14", 1024: "ViT-L/14"}
_SMALL = dict(img_size=56, embed_dim=32, depth=4, num_heads=2)


class DinoV2Backbone(nn.Module):
    """A timm DINOv2 ViT returning normalised token maps of ``feature_blocks`` (stride 14)."""

    stride = 14

    def __init__(self, timm_name: str, feature_blocks: tuple[int, ...], **kwargs: object) -> None:
        super().__init__()
        import timm

        self.vit = timm.create_model(timm_name, pretrained=False, num_classes=0, dynamic_img_size=True, dynamic_img_pad=True, **kwargs)
        self.feature_blocks = tuple(feature_blocks)
        self.out_channels: tuple[int, ...] = (int(self.vit.embed_dim),) * len(self.feature_blocks)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(
            self.vit.forward_intermediates(
                x, indices=list(self.feature_blocks), norm=True, stop_early=True, intermediates_only=True
            )
        )


def _builder(size: str, registers: bool):  # noqa: ANN202 - returns a builder closure
    base, _embed, _depth, blocks, _p, _mb = _CONFIGS[size]
    timm_name = f"{base}_reg4_dinov2" if registers else f"{base}_dinov2"

    def build(small: bool = False) -> DinoV2Backbone:
        if small:
            return DinoV2Backbone(timm_name, (0, 1, 2, 3), **_SMALL)
        return DinoV2Backbone(timm_name, blocks, img_size=518)

    return build


def load_dinov2_checkpoint(backbone: nn.Module, path: Path, name: str = "dinov2") -> None:
    """Load a published DINOv2 ``*_pretrain.pth`` (or timm-layout) checkpoint into ``backbone``."""
    from timm.models.vision_transformer import checkpoint_filter_fn

    vit = backbone.vit if isinstance(backbone, DinoV2Backbone) else backbone
    raw = read_checkpoint(path)
    if any(k.startswith("image_encoder.") for k in raw):
        raise WeightsError(f"{path}: this is a SAM checkpoint, not DINOv2 ({name})")
    if "pos_embed" not in raw or "patch_embed.proj.weight" not in raw or "blocks.0.attn.qkv.weight" not in raw:
        raise WeightsError(f"{path}: not a DINOv2 checkpoint (no pos_embed / patch_embed / blocks.0 tensors)")
    check_vit_size(vit, raw, path, name, _SIZE_BY_DIM, family="DINOv2 ")
    has_regs = "register_tokens" in raw or "reg_token" in raw
    wants_regs = getattr(vit, "reg_token", None) is not None
    if has_regs != wants_regs:
        which = "with registers" if has_regs else "without registers"
        raise WeightsError(f"{path}: this checkpoint is DINOv2 {which}; it does not fit {name}")
    state = checkpoint_filter_fn(dict(raw), vit)
    state = {k: v for k, v in state.items() if not k.startswith("head.")}
    check_and_load(vit, state, path, f"DINOv2 ({name})")
    log.info("loaded DINOv2 weights from %s", path)


def _loader(name: str):  # noqa: ANN202 - returns a loader closure
    def load(backbone: nn.Module, path: Path) -> None:
        load_dinov2_checkpoint(backbone, Path(path), name)

    return load


SPECS: dict[str, EncoderSpec] = {}
for _size, (_base, _embed, _depth, _blocks, _params, _mb) in _CONFIGS.items():
    for _reg in (False, True):
        _name = f"dinov2_vit_{_size}14" + ("_reg" if _reg else "")
        _file = f"dinov2_vit{_size}14" + ("_reg4" if _reg else "") + "_pretrain.pth"
        SPECS[_name] = register(
            EncoderSpec(
                name=_name,
                family="dinov2",
                description=f"DINOv2 {_SIZE_BY_DIM[_embed]}" + (" with 4 registers" if _reg else "") + " (Meta AI, LVD-142M)",
                input_size=518,
                patch_size=14,
                embed_dim=_embed,
                feature_blocks=_blocks,
                mean=IMAGENET_MEAN,
                std=IMAGENET_STD,
                builder=_builder(_size, _reg),
                approx_params_m=_params,
                weights=WeightSource(
                    filename=_file,
                    url=f"https://dl.fbaipublicfiles.com/dinov2/dinov2_vit{_size}14/{_file}",
                    sha256=None,  # not published: pinned on the first verified download
                    size_bytes=None,
                    licence="Apache-2.0",
                    note=f"about {_mb} MB; checksum not published (pinned on first download)",
                ),
                licence="Apache-2.0",
                load_checkpoint=_loader(_name),
            )
        )
