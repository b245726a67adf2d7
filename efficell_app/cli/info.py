"""``efficell info [--json]``: versions, the compute device, and every encoder with its adapters.

Encoders and adapters are built on PyTorch's ``meta`` device: parameters are counted
without allocating memory or downloading weights, so even SAM ViT-H costs nothing.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import sys
from typing import Any


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("info", help="versions, device, encoders and adapter sizes",
                              description="Show the EffiCell and PyTorch versions, the compute device, and for every "
                                          "registered encoder its parameter count, whether its weights are here, and "
                                          "the trainable parameter count of the adapters on it.")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def device_info() -> dict[str, Any]:
    """The device EffiCell would pick with ``--device auto`` (CUDA, else Apple MPS, else CPU): name,
    memory, and the precision inference runs in there."""
    from ..core.device import describe_device, precision_name

    dev = describe_device("auto")
    dev["precision"] = precision_name(dev["device"])
    return dev


@functools.lru_cache(maxsize=None)
def backbone_summary(name: str) -> tuple[int, tuple[int, ...], int]:
    """(parameter count, feature channels, stride) of the full-size encoder, built on ``meta``."""
    from ..core.encoders.registry import build_backbone

    backbone = build_backbone(name, device="meta")
    params = int(sum(p.numel() for p in backbone.parameters()))
    return params, tuple(int(c) for c in backbone.out_channels), int(backbone.stride)


@functools.lru_cache(maxsize=None)
def adapter_trainable_params(channels: tuple[int, ...], stride: int) -> int:
    """Trainable parameters of the EffiCell adapters over features of these channels (built on ``meta``)."""
    import torch

    from ..core.model import build_adapters

    with torch.device("meta"):
        adapters = build_adapters(channels, stride)
    return int(sum(p.numel() for p in adapters.parameters() if p.requires_grad))


def encoder_info() -> list[dict[str, Any]]:
    """Per registered encoder: parameters, feature channels, weights presence, adapter trainable parameters."""
    from ..core.encoders.registry import list_specs
    from ..core.encoders.weights import is_present, weights_path

    rows = []
    for spec in list_specs():
        try:
            params, channels, stride = backbone_summary(spec.name)
        except (ImportError, RuntimeError) as exc:  # SAM/DINOv2 need timm, which a mismatched torchvision breaks
            rows.append({"name": spec.name, "family": spec.family, "input_size": spec.input_size,
                         "unavailable": f"cannot be built: {exc}"})
            continue
        rows.append({
            "name": spec.name,
            "family": spec.family,
            "input_size": spec.input_size,
            "stride": stride,
            "feature_blocks": list(spec.feature_blocks),
            "feature_channels": list(channels),
            "encoder_params": params,
            "adapter_trainable_params": adapter_trainable_params(channels, stride),
            "weights_present": is_present(spec),
            "weights_file": str(weights_path(spec)) if spec.weights else None,
            "licence": spec.weights.licence if spec.weights else spec.licence,
        })
    return rows


def _timm_version() -> str:
    """timm's version, or why it cannot be imported: a CPU-only torch beside a torchvision built for
    CUDA fails at import ("operator torchvision::nms does not exist"); the built-in model needs
    neither, the SAM and DINOv2 encoders do (docs/install.md)."""
    try:
        import timm
    except Exception as exc:  # noqa: BLE001 - any import failure is reported, not raised
        return f"unavailable ({str(exc).strip().splitlines()[-1][:120] if str(exc).strip() else type(exc).__name__})"
    return str(timm.__version__)


def collect() -> dict[str, Any]:
    """Everything ``efficell info`` reports, as a JSON-ready dict."""
    import torch

    from .. import __version__
    from ..core.encoders.weights import cache_dir

    return {
        "app_version": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "timm": _timm_version(),
        "device": device_info(),
        "threads": torch.get_num_threads(),
        "weights_dir": str(cache_dir()),
        "encoders": encoder_info(),
    }


def _print_text(info: dict[str, Any]) -> None:
    dev = info["device"]
    mem = f", {dev['memory_gib']} GiB, compute capability {dev['capability']}" if "memory_gib" in dev else ""
    print(f"EffiCell {info['app_version']}  (Python {info['python']}, torch {info['torch']}, timm {info['timm']})")
    print(f"device: {dev['device']} ({dev['name']}{mem}); inference precision {dev['precision']}; "
          f"CPU threads: {info['threads']}")
    print(f"weights folder: {info['weights_dir']}")
    print(f"{'encoder':<20} {'family':<8} {'tile':>5} {'stride':>6} {'encoder':>10} {'adapters':>10}  weights")
    for e in info["encoders"]:
        if "unavailable" in e:
            print(f"{e['name']:<20} {e['family']:<8} {e['input_size']:>5}  {e['unavailable']}")
            continue
        print(f"{e['name']:<20} {e['family']:<8} {e['input_size']:>5} {e['stride']:>6} "
              f"{e['encoder_params'] / 1e6:>9.1f}M {e['adapter_trainable_params'] / 1e6:>9.2f}M  "
              f"{'present' if e['weights_present'] else 'not downloaded'}")


def run(args: argparse.Namespace) -> int:
    info = collect()
    if args.json:
        json.dump(info, sys.stdout, indent=2)
        print()
    else:
        _print_text(info)
    return 0
