"""``efficell info`` and ``efficell models``: sizes without downloads, listing, import, errors."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from efficell_app.cli import main
from efficell_app.core.encoders import weights as store
from efficell_app.core.encoders.registry import build_backbone, get_spec, list_specs


def test_info_json_counts_every_encoder_without_download(capsys: pytest.CaptureFixture[str]) -> None:
    t0 = time.monotonic()
    assert main(["info", "--json"]) == 0
    seconds = time.monotonic() - t0
    info = json.loads(capsys.readouterr().out)
    assert info["app_version"] and info["torch"] == torch.__version__
    assert info["device"]["type"] in ("cpu", "cuda", "mps") and info["threads"] >= 1
    encoders = {e["name"]: e for e in info["encoders"]}
    assert set(encoders) == {s.name for s in list_specs()}
    h = encoders["sam_vit_h"]
    assert 620e6 < h["encoder_params"] < 650e6  # SAM ViT-H image encoder, ~632 M published
    assert 85e6 < encoders["sam_vit_b"]["encoder_params"] < 92e6
    assert 21e6 < encoders["dinov2_vit_s14"]["encoder_params"] < 23e6
    assert h["feature_channels"] == [1280] * 4 and h["stride"] == 16 and h["weights_present"] is False
    for e in encoders.values():
        assert 0 < e["adapter_trainable_params"] <= 5.5e6, e
    assert seconds < 30, seconds  # meta device: no memory, no weights (typ. < 3 s once imported)


def test_info_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "sam_vit_h" in out and "636.1M" in out and "not downloaded" in out and "device:" in out


def _write_small_dinov2(path: Path) -> None:
    backbone = build_backbone("dinov2_vit_s14", small=True)
    state = dict(backbone.vit.state_dict())
    state["mask_token"] = torch.zeros(1, backbone.out_channels[0])
    torch.save(state, path)


def test_models_list_and_import(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["models", "list", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    rows = {r["name"]: r for r in listing["encoders"]}
    assert rows["sam_vit_b"]["url"].endswith("sam_vit_b_01ec64.pth") and rows["sam_vit_b"]["size_bytes"] == 375_042_383
    assert rows["sam_vit_b"]["licence"] == "Apache-2.0" and rows["sam_vit_b"]["present"] is False
    assert rows["dinov2_vit_s14"]["sha256"] is None and rows["efficell_compact"]["builtin"] is True

    assert main(["models", "list"]) == 0
    text = capsys.readouterr().out
    assert "sam_vit_h" in text and "2.4 GB" in text and "https://dl.fbaipublicfiles.com/dinov2/" in text

    # a wrong file for a published checksum: refused, exit 1, named on stderr
    junk = tmp_path / "sam_vit_b_01ec64.pth"
    junk.write_bytes(b"not the real file")
    assert main(["models", "import", "sam_vit_b", str(junk)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(junk) in err and "checksum" in err

    # a right-layout file for an unpublished checksum: imported, pinned, listed as present.
    # (the registered spec builds the full ViT-S; make its layout check use the small one)
    real = store._check_layout

    def small_check(spec, path, shown):  # noqa: ANN001, ANN202
        backbone = build_backbone(spec.name, small=True, device="meta")
        spec.load_checkpoint(backbone, path)

    monkeypatch.setattr(store, "_check_layout", small_check)
    ckpt = tmp_path / "dinov2_vits14_pretrain.pth"
    _write_small_dinov2(ckpt)
    assert main(["models", "import", "dinov2_vit_s14", str(ckpt)]) == 0
    assert "dinov2_vit_s14: weights ready at" in capsys.readouterr().out
    assert (store.cache_dir() / "dinov2_vits14_pretrain.pth").read_bytes() == ckpt.read_bytes()
    assert store.expected_sha256(get_spec("dinov2_vit_s14")) == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    monkeypatch.setattr(store, "_check_layout", real)
    assert main(["models", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["encoders"]}
    assert rows["dinov2_vit_s14"]["present"] is True and rows["sam_vit_b"]["present"] is False


def test_models_usage_and_offline_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "download", "no_such_encoder"]) == 2
    assert "unknown encoder 'no_such_encoder'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["models"])
    assert exc.value.code == 2
    capsys.readouterr()
    assert main(["models", "download", "sam_vit_b", "--url", "http://127.0.0.1:1/sam_vit_b_01ec64.pth"]) == 1
    err = capsys.readouterr().err
    assert "error: http://127.0.0.1:1/sam_vit_b_01ec64.pth: cannot reach" in err
    assert "efficell models import sam_vit_b FILE" in err


@pytest.mark.slow
def test_info_json_fast_in_a_fresh_process(tmp_path: Path) -> None:
    """The whole command, imports included, in a new interpreter (< 10 s on an idle machine)."""
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "efficell_app", "info", "--json"], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "EFFICELL_HOME": str(tmp_path)})
    seconds = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert any(e["name"] == "sam_vit_h" for e in info["encoders"])
    assert seconds < 60, seconds
