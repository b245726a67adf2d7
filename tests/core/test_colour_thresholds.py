"""Thresholds of their own for colour input (the built-in adapter's H&E setting) in ``Segmenter``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from efficell_app.core.images import ImageData
from efficell_app.core.pipeline import Segmenter


def _adapter(tmp_path: Path, instance_params: dict) -> Path:
    from efficell_app.core.encoders import build_encoder
    from efficell_app.core.model import build_adapters
    from efficell_app.core.model.adapter_io import AdapterMeta, save_adapter

    torch.manual_seed(0)
    enc = build_encoder("efficell_compact", weights=None)  # Segmenter.load builds the full-size one
    ad = build_adapters(enc.out_channels, enc.stride)
    meta = AdapterMeta(encoder="efficell_compact", encoder_sha256="random", in_channels=enc.out_channels, stride=enc.stride,
                       config=ad.config.to_dict(), name="colour-thresholds", instance_params=instance_params)
    path = tmp_path / "a.safetensors"
    save_adapter(path, ad, meta)
    return path


def _images() -> tuple[ImageData, ImageData]:
    rng = np.random.default_rng(0)
    rgb = ImageData((rng.random((3, 64, 64)) * 255).astype(np.uint8), rgb=True)
    gray = ImageData((rng.random((1, 64, 64)) * 255).astype(np.uint8))
    return rgb, gray


def test_colour_images_get_the_colour_thresholds_and_grayscale_the_others(tmp_path: Path) -> None:
    path = _adapter(tmp_path, {"fg_threshold": 0.3, "marker_threshold": 0.3, "min_size": 12, "colour": {"fg_threshold": 0.5, "marker_threshold": 0.6}})
    seg = Segmenter.load(path, device="cpu", encoder_weights=None)
    rgb, gray = _images()
    used_rgb = seg.segment(rgb, diameter=24).settings["instance_params"]
    used_gray = seg.segment(gray, diameter=24).settings["instance_params"]
    assert (used_rgb["fg_threshold"], used_rgb["marker_threshold"], used_rgb["min_size"]) == (0.5, 0.6, 12)
    assert (used_gray["fg_threshold"], used_gray["marker_threshold"]) == (0.3, 0.3)
    # one channel of a colour image is grayscale input: the grayscale thresholds
    assert seg.segment(rgb, diameter=24, channels=(1,)).settings["instance_params"]["fg_threshold"] == 0.3
    assert seg.params.fg_threshold == 0.3  # the Segmenter itself is unchanged


def test_without_colour_thresholds_every_image_gets_the_same(tmp_path: Path) -> None:
    seg = Segmenter.load(_adapter(tmp_path, {"fg_threshold": 0.35, "marker_threshold": 0.4}), device="cpu", encoder_weights=None)
    rgb, gray = _images()
    assert seg.params_colour is None
    assert seg.segment(rgb, diameter=24).settings["instance_params"] == seg.segment(gray, diameter=24).settings["instance_params"]
