"""The self-test: pass, and each way it can fail with a clear message (random small model, no built-in needed)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

from efficell_app import selftest
from efficell_app.core.resources import samples_dir
from efficell_app.selftest import EXPECTATION_FILE, SelftestError, format_report, load_expectation, make_expectation, selftest_report

SAMPLE = "nuclei_fluo_431b9b0c.tif"


@pytest.fixture()
def expectation(tmp_path: Path, random_segmenter) -> Path:  # noqa: ANN001
    """An expectation made with the random small segmenter from a bundled sample."""
    (tmp_path / "images").mkdir()
    img = tmp_path / "images" / SAMPLE
    shutil.copy(samples_dir() / "images" / SAMPLE, img)
    path = make_expectation(random_segmenter, img, tmp_path, diameter=30.0)
    assert path == tmp_path / EXPECTATION_FILE
    return path


def _edit(path: Path, **changes: object) -> None:
    d = json.loads(path.read_text())
    d.update(changes)
    path.write_text(json.dumps(d))


def test_bundled_samples_exist() -> None:
    images = sorted(p.name for p in (samples_dir() / "images").glob("*.tif"))
    assert SAMPLE in images and 2 <= len(images) <= 4
    assert (samples_dir() / "README.md").read_text().count("Licence") >= 1
    assert selftest.DEFAULT_SAMPLE.split("/")[-1] in images


def test_expectation_round_trip(expectation: Path) -> None:
    exp = load_expectation(expectation)
    assert exp.image == f"images/{SAMPLE}" and exp.n_cells >= 1 and exp.min_ap50 == 0.9
    assert exp.n_cells_tolerance >= 2 and exp.diameter == 30.0
    assert exp.model["encoder"] == "efficell_compact" and len(exp.model["adapter_sha256"]) == 64
    labels = tifffile.imread(expectation.parent / exp.labels)
    assert labels.max() == exp.n_cells


def test_selftest_passes(expectation: Path, random_segmenter) -> None:  # noqa: ANN001
    rep = selftest_report(random_segmenter, expectation)
    assert rep["ok"], format_report(rep)
    assert [c["name"] for c in rep["checks"]] == ["device", "sample", "model", "segmentation", "cell count", "agreement"]
    assert rep["result"]["ap50"] == 1.0 and rep["result"]["device"] == "cpu"
    assert rep["device"]["device"] == "cpu" and rep["device"]["cpu_threads"] >= 1
    text = format_report(rep)
    assert text.startswith("EffiCell ") and "PASS" in text and "torch" in text and "device: CPU" in text
    json.dumps(rep)  # the GUI / a bug report can store it as is


def test_different_result_fails(expectation: Path, random_segmenter) -> None:  # noqa: ANN001
    exp = load_expectation(expectation)
    _edit(expectation, n_cells=exp.n_cells + 50)
    rep = selftest_report(random_segmenter, expectation)
    assert not rep["ok"] and rep["summary"].startswith("FAIL (cell count)")
    # a label image that no longer agrees fails the AP check
    lab_path = expectation.parent / exp.labels
    lab = tifffile.imread(lab_path)
    tifffile.imwrite(lab_path, np.roll(lab, 40, axis=1))
    _edit(expectation, n_cells=exp.n_cells)
    rep = selftest_report(random_segmenter, expectation)
    assert not rep["ok"] and "agreement" in rep["summary"] and "AP@0.5" in rep["summary"]


def test_corrupted_expectation_exits_1(expectation: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str], random_segmenter) -> None:  # noqa: ANN001
    expectation.write_text('{"format": "efficell-selftest-expectation", "n_cells": ')
    monkeypatch.setattr(selftest, "default_expectation_path", lambda: expectation)
    assert selftest.run_selftest() == 1
    out, err = capsys.readouterr()
    assert f"{expectation}: the self-test expectation is damaged (not valid JSON" in err
    assert "[FAIL] sample" in out and "device:" in out  # the device is reported even when the test fails


@pytest.mark.parametrize(("change", "words"), [
    ({"format": "something else"}, "not a self-test expectation"),
    ({"n_cells": 0}, "out of range"),
    ({"format_version": 99}, "newer EffiCell"),
    ({"labels": "gone.tif"}, "gone.tif"),
])
def test_bad_expectation_fields(expectation: Path, random_segmenter, change: dict, words: str) -> None:  # noqa: ANN001
    _edit(expectation, **change)
    rep = selftest_report(random_segmenter, expectation)
    assert not rep["ok"] and words in rep["summary"]


def test_missing_expectation_and_other_model(tmp_path: Path, expectation: Path, random_segmenter) -> None:  # noqa: ANN001
    with pytest.raises(SelftestError, match="missing"):
        load_expectation(tmp_path / "nowhere.json")
    _edit(expectation, model={"adapter_sha256": "0" * 64})
    rep = selftest_report(random_segmenter, expectation)
    assert not rep["ok"] and "made with another model" in rep["summary"] and "make_selftest_expectation" in rep["summary"]


def test_missing_builtin_model_fails_clearly(expectation: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EFFICELL_RESOURCES", str(tmp_path / "empty_resources"))
    rep = selftest_report(None, expectation, device="cpu")
    assert not rep["ok"] and rep["summary"].startswith("FAIL (model)") and "built-in adapter is missing" in rep["summary"]


def test_make_expectation_refuses_image_outside(tmp_path: Path, random_segmenter) -> None:  # noqa: ANN001
    with pytest.raises(SelftestError, match="must lie inside"):
        make_expectation(random_segmenter, samples_dir() / "images" / SAMPLE, tmp_path / "other")
