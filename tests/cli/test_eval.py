"""``efficell eval``: pairing by stem, text and JSON output, named problems, exit codes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from efficell_app.cli import main
from efficell_app.cli.eval import mask_stem
from efficell_app.core.images import read_mask
from efficell_app.core.metrics import average_precision


@pytest.fixture()
def folders(tmp_path: Path, dsb_pairs) -> tuple[Path, Path, list[np.ndarray], list[np.ndarray]]:
    """gt/<stem>.tif and pred/<stem>_masks.tif (one as PNG): perfect, shifted, one object dropped."""
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir()
    pred_dir.mkdir()
    gts, preds = [], []
    for k, (_, mask_path) in enumerate(dsb_pairs[:3]):
        shutil.copy(mask_path, gt_dir / mask_path.name)
        gt = read_mask(mask_path)
        pred = gt.copy() if k == 0 else np.roll(gt, 2 * k, axis=1)
        if k == 2:
            pred[pred == pred.max()] = 0
        if k == 1:
            Image.fromarray(pred.astype(np.uint16)).save(pred_dir / f"{mask_path.stem}_masks.png")
        else:
            tifffile.imwrite(pred_dir / f"{mask_path.stem}_masks.tif", pred.astype(np.uint16))
        gts.append(gt)
        preds.append(pred)
    return gt_dir, pred_dir, gts, preds


def test_stem_rules() -> None:
    assert mask_stem(Path("a.tif")) == mask_stem(Path("a_masks.tif")) == mask_stem(Path("a_masks.png")) == "a"
    assert mask_stem(Path("x.ome.tiff")) == "x"
    assert mask_stem(Path("_masks.tif")) == "_masks"


def test_json_matches_core_metrics(folders, capsys: pytest.CaptureFixture[str]) -> None:
    gt_dir, pred_dir, gts, preds = folders
    assert main(["eval", "--gt", str(gt_dir), "--pred", str(pred_dir), "--json"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    doc = json.loads(out)
    ref = average_precision(gts, preds)
    assert doc["n_images"] == 3 and doc["thresholds"] == [0.5, 0.75, 0.9]
    for t in (0.5, 0.75, 0.9):
        assert doc["pooled"][str(t)] == ref["pooled"][t].to_dict()
    assert [r["scores"]["0.5"]["ap"] for r in doc["per_image"]] == [r[0.5].ap for r in ref["per_image"]]
    assert doc["per_image"][0]["scores"]["0.9"]["ap"] == 1.0
    assert doc["problems"] == []


def test_text_table(folders, capsys: pytest.CaptureFixture[str]) -> None:
    gt_dir, pred_dir, gts, _ = folders
    assert main(["eval", "--gt", str(gt_dir), "--pred", str(pred_dir), "--thresholds", "0.5,0.8"]) == 0
    out = capsys.readouterr().out
    assert "AP@0.5" in out and "AP@0.8" in out and "pooled" in out
    assert str(sum(int(g.max()) for g in gts)) in out  # pooled true count
    assert "1.000" in out  # the perfect image


def test_missing_and_broken_files_are_named(folders, capsys: pytest.CaptureFixture[str]) -> None:
    gt_dir, pred_dir, _, _ = folders
    lonely_gt = gt_dir / "only_in_gt.tif"
    tifffile.imwrite(lonely_gt, np.zeros((16, 16), np.uint16))
    lonely_pred = pred_dir / "only_in_pred_masks.tif"
    tifffile.imwrite(lonely_pred, np.zeros((16, 16), np.uint16))
    broken_gt = gt_dir / "broken.tif"
    tifffile.imwrite(broken_gt, np.zeros((16, 16), np.uint16))
    broken_pred = pred_dir / "broken_masks.tif"
    broken_pred.write_bytes(b"")
    small_gt = gt_dir / "small.tif"
    tifffile.imwrite(small_gt, np.zeros((16, 16), np.uint16))
    small_pred = pred_dir / "small.tif"
    tifffile.imwrite(small_pred, np.zeros((16, 20), np.uint16))
    code = main(["eval", "--gt", str(gt_dir), "--pred", str(pred_dir), "--json"])
    out, err = capsys.readouterr()
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 4 and all(line.startswith("error: ") for line in lines)
    assert f"error: {lonely_gt}: no prediction" in err
    assert f"error: {lonely_pred}: no ground truth" in err
    assert f"error: {broken_pred}:" in err and "0 bytes" in err
    assert f"error: {small_pred}:" in err and "16x20" in err
    doc = json.loads(out)
    assert doc["n_images"] == 3  # the good pairs were still scored
    assert len(doc["problems"]) == 4


def test_duplicate_stems_reported(folders, capsys: pytest.CaptureFixture[str]) -> None:
    gt_dir, pred_dir, _, _ = folders
    first = sorted(pred_dir.iterdir())[0]
    shutil.copy(first, pred_dir / (mask_stem(first) + ".tif"))
    assert main(["eval", "--gt", str(gt_dir), "--pred", str(pred_dir)]) == 1
    err = capsys.readouterr().err
    assert "several files have the stem" in err


def test_no_pairs_at_all(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "g").mkdir()
    (tmp_path / "p").mkdir()
    tifffile.imwrite(tmp_path / "g" / "a.tif", np.zeros((16, 16), np.uint16))
    assert main(["eval", "--gt", str(tmp_path / "g"), "--pred", str(tmp_path / "p")]) == 1
    err = capsys.readouterr().err
    assert "no prediction" in err and "no ground-truth / prediction pairs" in err


def test_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--gt", str(tmp_path / "nope"), "--pred", str(tmp_path)]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert main(["eval", "--gt", str(tmp_path), "--pred", str(tmp_path), "--thresholds", "0.5,1.5"]) == 2
    assert main(["eval", "--gt", str(tmp_path), "--pred", str(tmp_path), "--thresholds", "half"]) == 2
    with pytest.raises(SystemExit) as info:
        main(["eval", "--gt", str(tmp_path)])
    assert info.value.code == 2


def test_pairing_names(tmp_path: Path) -> None:
    from efficell_app.core.pairing import find_mask, image_stem, is_mask_name, split_name

    assert split_name("a.ome.tiff") == ("a", ".ome.tiff") and split_name("a.b.png") == ("a.b", ".png")
    assert image_stem(Path("x/cell 1.OME.TIF")) == "cell 1"
    assert mask_stem(Path("a_cp_masks.tif")) == mask_stem(Path("a_labels.png")) == "a"
    assert mask_stem(Path("A_MASKS.TIF")) == "A"
    assert is_mask_name(Path("a_masks.tif")) and not is_mask_name(Path("a.tif")) and not is_mask_name(Path("_masks.tif"))
    (tmp_path / "a.tif").write_bytes(b"")
    (tmp_path / "a_cp_masks.png").write_bytes(b"")
    assert find_mask(tmp_path / "a.tif", tmp_path) == tmp_path / "a_cp_masks.png"  # never the image itself
    (tmp_path / "a_masks.tif").write_bytes(b"")
    assert find_mask(tmp_path / "a.tif", tmp_path) == tmp_path / "a_masks.tif"  # _masks preferred
    assert find_mask(tmp_path / "b.tif", tmp_path) is None
