"""One contract over every registered encoder: shapes, strides, channels, and freezing."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from efficell_app.core.encoders.registry import FrozenEncoder, build_backbone, build_encoder, get_spec, list_specs

ENCODERS = [s.name for s in list_specs()]


def test_registry_holds_the_issue_encoders() -> None:
    for name in ("sam_vit_b", "sam_vit_l", "sam_vit_h", "dinov2_vit_s14", "dinov2_vit_b14", "dinov2_vit_l14", "efficell_compact"):
        assert name in ENCODERS


@pytest.mark.parametrize("name", ENCODERS)
def test_native_configuration_on_meta(name: str) -> None:
    """The full-size architecture matches its spec, and a native-size tile gives input/stride maps."""
    spec = get_spec(name)
    backbone = build_backbone(name, device="meta")
    assert backbone.stride == spec.patch_size
    assert len(backbone.out_channels) == len(spec.feature_blocks) == 4
    assert backbone.out_channels[-1] == spec.embed_dim
    assert len(spec.mean) == len(spec.std) == 3 and all(0 < s < 1 for s in spec.std)
    n = sum(p.numel() for p in backbone.parameters())
    assert abs(n / 1e6 - spec.approx_params_m) / spec.approx_params_m < 0.15, (n, spec.approx_params_m)
    x = torch.empty(1, 3, spec.input_size, spec.input_size, device="meta")
    side = -(-spec.input_size // spec.patch_size)
    feats = backbone(x)
    assert [tuple(f.shape) for f in feats] == [(1, c, side, side) for c in backbone.out_channels]


@pytest.mark.parametrize("name", ENCODERS)
def test_small_encoder_contract_and_freezing(name: str) -> None:
    torch.manual_seed(0)
    spec = get_spec(name)
    enc = build_encoder(name, weights=None, small=True)
    assert isinstance(enc, FrozenEncoder)
    s = enc.stride
    assert s == spec.patch_size

    # shapes: (B, C_i, H/stride, W/stride), one map per out_channels entry
    x = torch.rand(2, 3, 4 * s, 5 * s)
    feats = enc(x)
    assert len(feats) == len(enc.out_channels) == 4
    for f, c in zip(feats, enc.out_channels):
        assert tuple(f.shape) == (2, c, 4, 5)
        assert torch.isfinite(f).all()
    # a size that is not a multiple of the stride does not crash: ceil(H/stride) maps
    odd = enc(torch.rand(1, 3, 3 * s + 5, 2 * s + 1))
    assert [tuple(f.shape) for f in odd] == [(1, c, 4, 3) for c in enc.out_channels]

    # freezing: no parameter trainable, eval whatever train() says
    assert all(not p.requires_grad for p in enc.parameters())
    enc.train()
    assert not enc.training and all(not m.training for m in enc.modules())

    before = {k: v.clone() for k, v in enc.state_dict().items()}
    head = nn.ModuleList(nn.Conv2d(c, 1, 1) for c in enc.out_channels)
    head_before = [p.detach().clone() for p in head.parameters()]
    opt = torch.optim.AdamW(list(head.parameters()) + list(enc.parameters()), lr=1e-2)  # encoder params offered on purpose
    xg = x.clone().requires_grad_(True)
    feats = enc(xg)
    assert all(not f.requires_grad for f in feats)
    loss = sum(h(f).square().mean() for h, f in zip(head, feats))
    loss.backward()
    opt.step()
    assert all(p.grad is None for p in enc.parameters())
    assert xg.grad is None  # nothing flows back through the encoder
    after = enc.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert any(not torch.equal(a, b) for a, b in zip(head_before, head.parameters()))  # the head did learn
    assert torch.equal(torch.stack([f.sum() for f in enc(x)]), torch.stack([f.sum() for f in enc(x)]))  # deterministic (eval)
