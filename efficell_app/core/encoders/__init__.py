"""Registry of frozen image encoders (SAM ViT, DINOv2, the built-in compact encoder)."""

from .registry import (
    EncoderSpec,
    FrozenEncoder,
    WeightSource,
    build_encoder,
    get_spec,
    list_specs,
    register,
)

__all__ = ["EncoderSpec", "FrozenEncoder", "WeightSource", "build_encoder", "get_spec", "list_specs", "register"]
