"""One name -> one frozen encoder spec; the one place where encoders are frozen.

A backbone is any ``nn.Module`` with attributes ``out_channels: tuple[int, ...]`` and
``stride: int`` whose ``forward(x)`` takes a ``(B, 3, H, W)`` tensor normalised with the
spec's mean/std and returns one ``(B, C_i, H/stride, W/stride)`` map per entry of
``out_channels`` (the multi-layer tokens the adapters read).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WeightSource:
    """Where an encoder's published weights come from."""

    filename: str
    url: str
    sha256: str | None  # None: not published; pinned on first verified download
    size_bytes: int | None
    licence: str
    note: str = ""


@dataclass(frozen=True)
class EncoderSpec:
    """Everything needed to build, feed and identify one frozen encoder."""

    name: str
    family: str  # "sam" | "dinov2" | "builtin"
    description: str
    input_size: int  # native tile side in pixels
    patch_size: int  # stride of the output tokens
    embed_dim: int
    feature_blocks: tuple[int, ...]  # which blocks feed the adapters (0-based)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    builder: Callable[..., nn.Module] = field(compare=False, repr=False)
    approx_params_m: float = 0.0
    weights: WeightSource | None = None
    builtin: bool = False  # weights ship inside the package
    licence: str = "Apache-2.0"
    # Loads a published checkpoint file into a backbone built by ``builder``.
    load_checkpoint: Callable[[nn.Module, Path], None] | None = field(default=None, compare=False, repr=False)


_REGISTRY: dict[str, EncoderSpec] = {}
# Modules whose import registers encoders; kept as names so importing the registry stays cheap.
_ENTRY_MODULES = ("efficell_app.core.encoders.compact", "efficell_app.core.encoders.sam", "efficell_app.core.encoders.dinov2")
_loaded = False


def register(spec: EncoderSpec) -> EncoderSpec:
    if spec.name in _REGISTRY and _REGISTRY[spec.name] is not spec:
        raise ValueError(f"encoder '{spec.name}' registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def _ensure_loaded() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for mod in _ENTRY_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise
            log.debug("encoder module %s not present", mod)


def list_specs() -> list[EncoderSpec]:
    """Every registered encoder: built-in first, then by family and name (independent of import order)."""
    _ensure_loaded()
    return sorted(_REGISTRY.values(), key=lambda s: (not s.builtin, s.family, s.name))


def get_spec(name: str) -> EncoderSpec:
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise KeyError(f"unknown encoder '{name}' (known: {known})") from None


class FrozenEncoder(nn.Module):
    """Wraps a backbone; the only place an encoder is frozen.

    Its parameters never require gradients, it stays in ``eval()`` whatever ``train()`` is
    called with, and ``forward`` runs under ``torch.no_grad()``.
    """

    def __init__(self, backbone: nn.Module, spec: EncoderSpec, weights_sha256: str | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.backbone = backbone
        self.weights_sha256 = weights_sha256  # identity of the weights in use (None: random)
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self.backbone.eval()
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1), persistent=False)

    @property
    def out_channels(self) -> tuple[int, ...]:
        return tuple(self.backbone.out_channels)

    @property
    def stride(self) -> int:
        return int(self.backbone.stride)

    def train(self, mode: bool = True) -> FrozenEncoder:  # noqa: ARG002 - frozen: always eval
        super().train(False)
        return self

    @torch.no_grad()
    def forward(self, x01: torch.Tensor) -> list[torch.Tensor]:
        """``x01``: (B, 3, H, W) image normalised to ~[0, 1] (see ``images.model_input``)."""
        x = (x01 - self.mean.to(x01.dtype)) / self.std.to(x01.dtype)
        return [f for f in self.backbone(x)]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.backbone.parameters())


def build_backbone(name: str, small: bool = False, device: str | torch.device = "cpu") -> nn.Module:
    """Build the architecture with random weights (``small``: a tiny configuration for tests).

    ``device="meta"`` builds without allocating memory (used to count parameters).
    """
    spec = get_spec(name)
    with torch.device(device):
        return spec.builder(small=small)


def build_encoder(
    name: str,
    weights: str | Path | None = "auto",
    small: bool = False,
    device: str | torch.device = "cpu",
) -> FrozenEncoder:
    """Build a frozen encoder.

    ``weights``: ``"auto"`` loads the cached or bundled weights (raising
    :class:`~efficell_app.core.errors.WeightsError` with download instructions when they are
    missing), a path loads that checkpoint, ``None`` keeps random weights (tests).
    """
    spec = get_spec(name)
    path = None
    if weights is not None:  # find the weights before building a network that may take seconds
        from .weights import ensure_weights_file

        path = ensure_weights_file(spec) if weights == "auto" else Path(weights)
        if spec.load_checkpoint is None:
            raise ValueError(f"encoder '{name}' has no checkpoint loader")
    with torch.device(device):  # built where it runs: no slow CPU initialisation of weights that a GPU will hold
        backbone = spec.builder(small=small)
    sha = None
    if path is not None:
        from .weights import file_sha256, known_sha256

        spec.load_checkpoint(backbone, path)
        # A verified cached file has its hash recorded: do not re-hash gigabytes on every load.
        sha = (known_sha256(spec) if weights == "auto" else None) or file_sha256(path)
    return FrozenEncoder(backbone, spec, weights_sha256=sha).to(device)
