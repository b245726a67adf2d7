"""``efficell info`` works when timm cannot be imported (a CPU-only torch beside a CUDA torchvision)."""

from __future__ import annotations

import sys

import pytest

from efficell_app.cli import main


def test_info_reports_timm_unavailable(monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # noqa: ANN001
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm -> ImportError, as a broken torchvision makes it
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "timm unavailable (" in out
