"""Segment Anything (SAM) ViT-B/L/H image encoders, built with timm's ``VisionTransformerSAM``.

The adapters read the outputs of the four global-attention blocks (evenly spaced through
the depth), each a ``(B, embed_dim, H/16, W/16)`` map. SAM's neck (the 256-channel
projection the SAM mask decoder reads) is not used and not built.

Published checkpoints (``sam_vit_*.pth``) hold the whole SAM model; only the
``image_encoder.*`` tensors are loaded (renamed to timm's names by timm's own filter).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import WeightsError
from .registry import EncoderSpec, WeightSource, register
from .weights import check_and_load, check_vit_size, read_checkpoint

log = logging.getLogger(__name__)

# SAM normalises 0-255 pixels with these; divided by 255 they are the ImageNet statistics.
SAM_MEAN = (123.675 / 255, 116.28 / 255, 103.53 / 255)
SAM_STD = (58.395 / 255, 57.12 / 255, 57.375 / 255)

# name -> (embed_dim, depth, num_heads, global_attn_indexes)
_CONFIGS: dict[str, tuple[int, int, int, tuple[int, ...]]] = {
    "sam_vit_b": (768, 12, 12, (2, 5, 8, 11)),
    "sam_vit_l": (1024, 24, 16, (5, 11, 17, 23)),
    "sam_vit_h": (1280, 32, 16, (7, 15, 23, 31)),
}
_SIZE_BY_DIM = {768: "sam_vit_b", 1024: "sam_vit_l", 1280: "sam_vit_h"}
# Tiny configuration for tests: 4x4 token grid, windows of 3 (exercises window padding).
_SMALL = dict(img_size=64, embed_dim=32, depth=4, num_heads=2, global_attn_indexes=(1, 3), window_size=3, feature_blocks=(0, 1, 2, 3))


class SamBackbone(nn.Module):
    """SAM image encoder returning the token maps of ``feature_blocks`` (stride 16).

    Any input size works: the input is zero-padded (after normalisation) to a multiple of
    16, the absolute position embedding and the relative position tables are interpolated
    by timm when the token grid differs from the native 64 x 64.
    """

    stride = 16

    def __init__(
        self,
        img_size: int = 1024,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11),
        window_size: int = 14,
        feature_blocks: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__()
        from timm.models.vision_transformer_sam import VisionTransformerSAM

        self.vit = VisionTransformerSAM(
            img_size=img_size,
            patch_size=16,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            global_attn_indexes=tuple(global_attn_indexes),
            window_size=window_size,
            use_rel_pos=True,
            use_abs_pos=True,
            num_classes=0,
            neck_chans=None,
        )
        # Features come from the blocks; the neck (a norm here) and head are never run.
        self.vit.neck = nn.Identity()
        self.vit.head = nn.Identity()
        self.feature_blocks = tuple(feature_blocks if feature_blocks is not None else global_attn_indexes)
        self.out_channels: tuple[int, ...] = (embed_dim,) * len(self.feature_blocks)
        self.img_size = img_size

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.stride, (-w) % self.stride
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        return list(
            self.vit.forward_intermediates(x, indices=list(self.feature_blocks), stop_early=True, intermediates_only=True)
        )


def _builder(name: str):  # noqa: ANN202 - returns a builder closure
    embed, depth, heads, glob = _CONFIGS[name]

    def build(small: bool = False) -> SamBackbone:
        if small:
            return SamBackbone(**_SMALL)  # type: ignore[arg-type]
        return SamBackbone(img_size=1024, embed_dim=embed, depth=depth, num_heads=heads, global_attn_indexes=glob, window_size=14)

    return build


def _loader(name: str):  # noqa: ANN202 - returns a loader closure
    def load(backbone: nn.Module, path: Path) -> None:
        load_sam_checkpoint(backbone, Path(path), name)

    return load


def load_sam_checkpoint(backbone: nn.Module, path: Path, name: str = "sam") -> None:
    """Load a published SAM checkpoint (``image_encoder.*`` keys; others ignored) into ``backbone``.

    Also accepts timm's converted layout (``patch_embed.proj.weight``, ``blocks.N.*``).
    """
    from timm.models.vision_transformer_sam import checkpoint_filter_fn

    vit = backbone.vit if isinstance(backbone, SamBackbone) else backbone
    raw = read_checkpoint(path)
    is_sam = "image_encoder.patch_embed.proj.weight" in raw
    is_timm = "patch_embed.proj.weight" in raw and any(k.endswith("attn.rel_pos_h") for k in raw)
    if not (is_sam or is_timm):
        hint = " (it looks like a DINOv2 checkpoint)" if "cls_token" in raw or "mask_token" in raw else ""
        raise WeightsError(f"{path}: not a SAM checkpoint: no image_encoder.* tensors{hint}")
    state = checkpoint_filter_fn(raw, vit)
    state = {k: v for k, v in state.items() if not k.startswith(("neck.", "head."))}
    check_vit_size(vit, state, path, name, _SIZE_BY_DIM)
    check_and_load(vit, state, path, f"SAM ({name})")
    log.info("loaded SAM image encoder weights from %s", path)


_WEIGHTS = {
    "sam_vit_b": ("sam_vit_b_01ec64.pth", "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912", 375_042_383, 88.9),
    "sam_vit_l": ("sam_vit_l_0b3195.pth", "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622", 1_249_524_607, 307.4),
    "sam_vit_h": ("sam_vit_h_4b8939.pth", "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e", 2_564_550_879, 636.1),
}
_LABEL = {"sam_vit_b": "ViT-B", "sam_vit_l": "ViT-L", "sam_vit_h": "ViT-H"}

SPECS: dict[str, EncoderSpec] = {}
for _name, (_file, _sha, _size, _params) in _WEIGHTS.items():
    _embed, _depth, _heads, _glob = _CONFIGS[_name]
    SPECS[_name] = register(
        EncoderSpec(
            name=_name,
            family="sam",
            description=f"Segment Anything {_LABEL[_name]} image encoder (Meta AI, SA-1B)",
            input_size=1024,
            patch_size=16,
            embed_dim=_embed,
            feature_blocks=_glob,
            mean=SAM_MEAN,
            std=SAM_STD,
            builder=_builder(_name),
            approx_params_m=_params,
            weights=WeightSource(
                filename=_file,
                url=f"https://dl.fbaipublicfiles.com/segment_anything/{_file}",
                sha256=_sha,
                size_bytes=_size,
                licence="Apache-2.0",
                note="whole SAM model; EffiCell loads only image_encoder.*",
            ),
            licence="Apache-2.0",
            load_checkpoint=_loader(_name),
        )
    )
