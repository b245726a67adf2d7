"""``efficell info`` works when timm cannot be imported: a CPU-only torch beside PyPI's CUDA
torchvision fails at ``import timm`` with RuntimeError("operator torchvision::nms does not exist")."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from efficell_app.cli import main


def test_info_reports_timm_unavailable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    fake = tmp_path / "timm"
    fake.mkdir()
    (fake / "__init__.py").write_text('raise RuntimeError("operator torchvision::nms does not exist")\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m == "timm" or m.startswith("timm.")]:
        monkeypatch.delitem(sys.modules, name)
    from efficell_app.cli import info

    info.backbone_summary.cache_clear()
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "timm unavailable (operator torchvision::nms does not exist)" in out
    assert "cannot be built" in out  # SAM/DINOv2 rows say why; the built-in encoder row is complete
    assert any(line.startswith("efficell_compact") and "M" in line for line in out.splitlines())
    info.backbone_summary.cache_clear()
