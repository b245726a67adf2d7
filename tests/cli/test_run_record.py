"""``efficell segment`` records the cell diameter each image was segmented at (typed in or estimated)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest


def test_cli_run_record_holds_the_estimated_diameter(tmp_path: Path, dsb_pairs, monkeypatch: pytest.MonkeyPatch,
                                                     random_segmenter) -> None:
    from efficell_app.cli import main
    from efficell_app.core.pipeline import Segmenter

    monkeypatch.setattr(Segmenter, "load", classmethod(lambda cls, *a, **k: random_segmenter))
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(dsb_pairs[0][0], src / "a.tif")
    assert main(["segment", str(src), "--out", str(tmp_path / "out")]) == 0
    run = json.loads((tmp_path / "out" / "efficell_run.json").read_text())
    assert isinstance(run["files"][0]["diameter_px"], float) and run["files"][0]["diameter_px"] > 0
    assert run["settings"]["diameter_px"] == "estimated per image (see files)"
    images = pd.read_excel(tmp_path / "out" / "measurements.xlsx", sheet_name="Images")
    assert images["diameter_px"].iloc[0] == pytest.approx(run["files"][0]["diameter_px"])
