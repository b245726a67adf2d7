"""The window's status bar names the device from core.device (the GPU by name and memory)."""

from __future__ import annotations

import pytest


@pytest.mark.gui
def test_status_bar_shows_the_core_device_description(qtbot, window, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    from efficell_app.core import device

    asked: list[str] = []

    def text(pref: str = "auto", threads: int | None = None) -> str:
        asked.append(pref)
        return "GPU: NVIDIA H200 (141 GiB)"

    monkeypatch.setattr(device, "device_text", text)
    window._detect_device()
    qtbot.waitUntil(lambda: window.device_label.text() == "GPU: NVIDIA H200 (141 GiB)", timeout=20_000)
    assert asked and asked[-1] == window.prefs.device
