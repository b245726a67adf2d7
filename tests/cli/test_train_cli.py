"""``efficell train``: pairing by stem, the progress/JSON contract, refusals; one slow end-to-end run."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from efficell_app.cli import build_parser, main
from efficell_app.cli.train import config_from_args, pair_files, run_training
from efficell_app.core.resources import models_dir


@pytest.fixture()
def folders(tmp_path: Path, dsb_pairs) -> tuple[Path, Path]:  # noqa: ANN001
    """Four 96 x 96 crops of DSB images; masks named <stem>.tif, <stem>_masks.tif and .png; one image without mask."""
    from PIL import Image
    from skimage.segmentation import relabel_sequential

    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for i, (ip, mp) in enumerate(dsb_pairs):
        img = tifffile.imread(ip)[:96, :96]
        mask = relabel_sequential(tifffile.imread(mp)[:96, :96])[0].astype(np.uint16)
        tifffile.imwrite(images / f"img{i}.tif", img)
        if i == 0:
            tifffile.imwrite(masks / f"img{i}.tif", mask)
        elif i == 1:
            tifffile.imwrite(masks / f"img{i}_masks.tif", mask)
        elif i == 2:
            Image.fromarray(mask.astype(np.uint8)).save(masks / f"img{i}_masks.png")
    return images, masks


def _args(*argv: str):  # noqa: ANN202
    return build_parser().parse_args(["train", *argv])


def test_pair_files_by_stem(folders) -> None:  # noqa: ANN001
    images, masks = folders
    pairs, problems = pair_files(images, masks)
    got = {i.name: (m.name if m else None) for i, m in pairs}
    assert got == {"img0.tif": "img0.tif", "img1.tif": "img1_masks.tif", "img2.tif": "img2_masks.png", "img3.tif": None}
    assert problems == []
    # Images and masks in one folder: <stem>_masks files are masks, not images.
    for f in masks.iterdir():
        f.rename(images / f.name.replace("img0.tif", "img0_masks.tif"))
    pairs, _ = pair_files(images, images)
    got = {i.name: (m.name if m else None) for i, m in pairs}
    assert got == {"img0.tif": "img0_masks.tif", "img1.tif": "img1_masks.tif", "img2.tif": "img2_masks.png", "img3.tif": None}


def test_run_training_prints_progress_and_one_json_line(folders, tmp_path: Path) -> None:  # noqa: ANN001
    torch.set_num_threads(1)
    from efficell_app.core.encoders import build_encoder

    images, masks = folders
    out = tmp_path / "lab.safetensors"
    cfg, problems = config_from_args(_args("--images", str(images), "--masks", str(masks), "--out", str(out),
                                           "--epochs", "1", "--diameter", "12", "--init", "none", "--batch-size", "2"))
    assert cfg.epochs == 1 and cfg.target_diameter == 12 and cfg.init_adapter is None and cfg.minutes is None
    torch.manual_seed(0)
    cfg = replace(cfg, encoder=build_encoder("efficell_compact", weights=None, small=True), crop=64, device="cpu")
    err, stdout = io.StringIO(), io.StringIO()
    code = run_training(cfg, err, stdout, problems=problems)
    assert code == 1  # img3.tif has no mask: named, skipped, and the exit code says so
    lines = stdout.getvalue().strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["adapter"] == str(out) and out.exists() and len(result["sha256"]) == 64
    assert result["trainable_parameters"] > 0 and result["seconds"] > 0 and result["images"] == 3
    assert set(result["validation"]) >= {"ap50", "ap75", "ap90"}
    assert any("img3.tif" in s and "no mask" in s for s in result["skipped"])
    text = err.getvalue()
    assert "caching features" in text and "training" in text and "warning:" in text and "img3.tif" in text


def test_refusals(folders, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    images, masks = folders
    out = tmp_path / "exists.safetensors"
    out.write_bytes(b"keep me")
    assert main(["train", "--images", str(images), "--masks", str(masks), "--out", str(out), "--epochs", "1"]) == 1
    assert "file exists" in capsys.readouterr().err and out.read_bytes() == b"keep me"
    new = tmp_path / "new.safetensors"
    assert main(["train", "--images", str(images), "--masks", str(masks), "--out", str(new), "--val-images", str(images)]) == 2
    assert "--val-masks" in capsys.readouterr().err
    assert main(["train", "--images", str(tmp_path / "nope"), "--masks", str(masks), "--out", str(new)]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert main(["train", "--images", str(images), "--masks", str(masks), "--out", str(new), "--minutes", "-1"]) == 2
    with pytest.raises(SystemExit):
        main(["train", "--images", str(images), "--masks", str(masks), "--out", str(new), "--steps", "1", "--epochs", "2"])
    assert main(["train", "--images", str(images), "--masks", str(masks), "--out", str(new), "--encoder", "nope",
                 "--epochs", "1"]) == 2
    assert "unknown encoder 'nope'" in capsys.readouterr().err
    assert not new.exists()


@pytest.mark.slow
def test_cli_subprocess_full_compact_encoder(folders, tmp_path: Path) -> None:  # noqa: ANN001
    if not (models_dir() / "efficell_compact_encoder.safetensors").exists():
        pytest.skip("built-in encoder weights not installed yet (resources/models/efficell_compact_encoder.safetensors)")
    images, masks = folders
    out = tmp_path / "cli.safetensors"
    proc = subprocess.run([sys.executable, "-m", "efficell_app", "train", "--images", str(images), "--masks", str(masks),
                           "--out", str(out), "--steps", "1", "--batch-size", "2", "--device", "cpu", "--store-diameter", "no"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr  # img3.tif has no mask
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["adapter"] == str(out) and out.exists()
    assert result["improved_on_start"] in (True, False) and result["kept"] in ("start", "trained") and result["message"]
    seg = subprocess.run([sys.executable, "-m", "efficell_app", "segment", str(images / "img0.tif"), "--out",
                          str(tmp_path / "seg"), "--model", str(out), "--no-measure", "--device", "cpu"],
                         capture_output=True, text=True, timeout=300)
    assert seg.returncode == 0, seg.stderr
    assert (tmp_path / "seg" / "img0_masks.tif").exists()
