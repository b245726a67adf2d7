"""The EffiCell adapters: parameter budget with every encoder, shapes, adapter files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from efficell_app.core.encoders import build_encoder, list_specs
from efficell_app.core.encoders.registry import build_backbone
from efficell_app.core.errors import AdapterError
from efficell_app.core.model import EffiCellModel, build_adapters
from efficell_app.core.model.adapter_io import AdapterMeta, load_adapter, read_adapter_meta, save_adapter

BUDGET = 5_500_000


@pytest.mark.parametrize("name", [s.name for s in list_specs()])
def test_trainable_budget_with_every_encoder(name: str) -> None:
    backbone = build_backbone(name, small=False, device="meta")
    with torch.device("meta"):
        ad = build_adapters(tuple(backbone.out_channels), backbone.stride)
    n = sum(p.numel() for p in ad.parameters() if p.requires_grad)
    assert 500_000 < n <= BUDGET, f"{name}: {n} trainable adapter parameters"


def test_output_shapes_any_size() -> None:
    torch.manual_seed(0)
    enc = build_encoder("efficell_compact", weights=None, small=True)
    model = EffiCellModel(enc, build_adapters(enc.out_channels, enc.stride)).eval()
    for h, w in ((64, 96), (80, 48)):
        with torch.no_grad():
            out = model(torch.rand(2, 3, h, w))
        assert out["sem"].shape == (2, 3, h, w)
        assert out["geo"].shape == (2, 3, h, w)
        g = out["geo"]
        assert float(g[:, 0].min()) >= 0 and float(g[:, 0].max()) <= 1
        assert float(g[:, 1:].abs().max()) <= 1


def test_mismatched_encoder_rejected_at_composition() -> None:
    enc = build_encoder("efficell_compact", weights=None, small=True)
    with pytest.raises(ValueError, match="expect features"):
        EffiCellModel(enc, build_adapters((64, 64, 64, 64), 16))


def _adapter(tmp_path, name="a.safetensors"):
    torch.manual_seed(1)
    enc = build_encoder("efficell_compact", weights=None, small=True)
    ad = build_adapters(enc.out_channels, enc.stride)
    meta = AdapterMeta(encoder="efficell_compact", encoder_sha256="random", in_channels=enc.out_channels, stride=enc.stride,
                       config=ad.config.to_dict(), name="t", metrics={"ap50": 0.5})
    path = tmp_path / name
    sha = save_adapter(path, ad, meta)
    return enc, ad, path, sha


def test_adapter_round_trip_same_predictions(tmp_path) -> None:
    enc, ad, path, sha = _adapter(tmp_path)
    ad2, meta, sha2 = load_adapter(path, "efficell_compact", "random")
    assert sha2 == sha and meta.metrics == {"ap50": 0.5} and meta.app_version
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        a = EffiCellModel(enc, ad.eval())(x)
        b = EffiCellModel(enc, ad2.eval())(x)
    assert torch.equal(a["sem"], b["sem"]) and torch.equal(a["geo"], b["geo"])


def test_adapter_for_other_encoder_refused(tmp_path) -> None:
    _, _, path, _ = _adapter(tmp_path)
    with pytest.raises(AdapterError, match="trained for encoder 'efficell_compact', not 'sam_vit_b'") as e:
        load_adapter(path, "sam_vit_b", None)
    assert str(path) in str(e.value)
    with pytest.raises(AdapterError, match="other weights"):
        load_adapter(path, "efficell_compact", "0" * 64)


@pytest.mark.parametrize("damage", ["truncate", "header", "empty", "text"])
def test_damaged_adapter_refused(tmp_path, damage: str) -> None:
    _, _, path, _ = _adapter(tmp_path)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "header":
        path.write_bytes(data[:8] + b"{garbage" + data[16:])
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        path.write_text("not an adapter")
    with pytest.raises(AdapterError) as e:
        load_adapter(path, "efficell_compact", "random")
    assert str(path) in str(e.value)


def test_plain_safetensors_is_not_an_adapter(tmp_path) -> None:
    from safetensors.torch import save_file

    p = tmp_path / "x.safetensors"
    save_file({"w": torch.zeros(2)}, str(p))
    with pytest.raises(AdapterError, match="not an EffiCell adapter"):
        read_adapter_meta(p)


def test_adapter_file_holds_no_pickle(tmp_path) -> None:
    _, _, path, _ = _adapter(tmp_path)
    head = path.read_bytes()[:64]
    assert not head.startswith(b"PK") and b"\x80\x04" not in head[:2]  # not a zip/pickle torch file
    assert np.frombuffer(path.read_bytes()[:8], "<u8")[0] > 0
