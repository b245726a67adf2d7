"""Every run record names the device it ran on: efficell_run.json, project runs, training metadata."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from efficell_app.core.batch import RUN_FILE, segment_files


def test_efficell_run_json_names_the_device(random_segmenter, dsb_pairs, tmp_path: Path) -> None:  # noqa: ANN001
    list(segment_files([dsb_pairs[0][0]], tmp_path / "out", random_segmenter))
    settings = json.loads((tmp_path / "out" / RUN_FILE).read_text())["settings"]
    assert settings["device_info"]["type"] == "cpu" and settings["device_info"]["name"]


def test_project_run_settings_name_the_device(random_segmenter, dsb_pairs, tmp_path: Path) -> None:  # noqa: ANN001
    from efficell_app.project import Project
    from efficell_app.tasks.segment import segment_project

    p = Project.create(tmp_path / "p", "p")
    try:
        p.add_files([dsb_pairs[0][0]], "set")
        events = list(segment_project(p, random_segmenter, "set", diameter=16.0))
        assert all(e.ok for e in events), [e.error for e in events]
        assert p.list_runs()[0].settings["device_info"]["type"] == "cpu"
        res = p.latest_result(p.list_images()[0].id)
        assert res.settings["device_info"]["type"] == "cpu" and res.settings["precision"] == "fp32"
    finally:
        p.close()


def test_training_metadata_names_the_device(dsb_pairs, tmp_path: Path) -> None:  # noqa: ANN001
    from efficell_app.core.encoders import build_encoder
    from efficell_app.core.images import read_image, read_mask
    from efficell_app.core.model.adapter_io import read_adapter_meta
    from efficell_app.core.training import TrainConfig, train_adapter

    torch.manual_seed(0)
    img = read_image(dsb_pairs[0][0])
    mask = read_mask(dsb_pairs[0][1], img.shape)
    img = img.with_data(img.data[:, :96, :96].copy())
    from skimage.segmentation import relabel_sequential

    mask = relabel_sequential(mask[:96, :96])[0].astype(np.int32)
    out = tmp_path / "a.safetensors"
    cfg = TrainConfig(train=[(img, mask)], out=out, encoder=build_encoder("efficell_compact", weights=None, small=True),
                      init_adapter=None, epochs=1, batch_size=2, crop=64, target_diameter=12.0, device="cpu",
                      tune_thresholds=False)
    list(train_adapter(cfg))
    info = read_adapter_meta(out).training["device_info"]
    assert info["type"] == "cpu" and info["name"] and info["cpu_threads"] >= 1
