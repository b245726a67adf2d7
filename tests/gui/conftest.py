"""GUI test fixtures: offscreen Qt, a small real model, a main window on a temporary project."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

os.environ["QT_QPA_PLATFORM"] = "offscreen"
sys.path.insert(0, str(Path(__file__).parent))  # gui_helpers

pytest.importorskip("pytestqt")


@pytest.fixture(autouse=True)
def _no_welcome(monkeypatch: pytest.MonkeyPatch) -> None:
    """No first-run welcome dialog over the windows of GUI tests (test_first_run.py turns it back on)."""
    monkeypatch.setenv("EFFICELL_NO_WELCOME", "1")


@pytest.fixture(scope="session")
def small_adapter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real EffiCell adapter file (small, randomly initialised) for the compact encoder.

    Used with random encoder weights so the tests run the real pipeline end to end without
    the trained weights; its masks are arbitrary but real label images.
    """
    import torch

    from efficell_app.core.encoders import build_encoder
    from efficell_app.core.model.adapter_io import (
        RANDOM_WEIGHTS,
        AdapterMeta,
        save_adapter,
    )
    from efficell_app.core.model.adapters import AdapterConfig, build_adapters

    torch.manual_seed(0)
    enc = build_encoder("efficell_compact", weights=None)
    cfg = AdapterConfig(dim=32, n_prompts=4, heads=2, depth=1, morph_widths=(8, 8, 8), decoder_widths=(16, 16, 8))
    adapters = build_adapters(enc.out_channels, enc.stride, cfg)
    meta = AdapterMeta(encoder="efficell_compact", encoder_sha256=RANDOM_WEIGHTS, in_channels=enc.out_channels,
                       stride=enc.stride, config=cfg.to_dict(), name="gui-test")
    path = tmp_path_factory.mktemp("adapter") / "gui_test.safetensors"
    save_adapter(path, adapters, meta)
    return path


@pytest.fixture()
def image_folder(tmp_path: Path, dsb_pairs: list[tuple[Path, Path]]) -> Path:
    """A folder named like a lab's experiment holding two real fluorescence images."""
    folder = tmp_path / "Experiment 12"
    folder.mkdir()
    for img, _mask in dsb_pairs[:2]:
        shutil.copy(img, folder / img.name)
    return folder


@pytest.fixture()
def window(qtbot, small_adapter: Path):
    """The real main window, CPU, one torch thread, segmenting with ``small_adapter`` at diameter 20."""
    from efficell_app.gui.main_window import MainWindow
    from efficell_app.gui.settings import Preferences

    prefs = Preferences(device="cpu", threads=1, auto_segment=True)
    win = MainWindow(prefs, restore_state=False)
    qtbot.addWidget(win)
    win.session.encoder_weights = None
    win.seg_panel.add_model_file(str(small_adapter), "test adapter")
    win.seg_panel.auto_diameter.setChecked(False)
    win.seg_panel.diameter.setValue(20.0)
    win.resize(1200, 800)
    win.show()
    yield win
    win.session.close_project(emit=False)
    win.stop_background_work()
