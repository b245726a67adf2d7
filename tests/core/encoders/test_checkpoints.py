"""Published checkpoint layouts (SAM ``image_encoder.*``, DINOv2 ``*_pretrain.pth``) load, exactly.

The checkpoints are written here by ``torch.save`` from small random models, renamed into the
layout the authors publish; the real files cannot be downloaded on test machines.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from efficell_app.core.encoders.dinov2 import DinoV2Backbone
from efficell_app.core.encoders.registry import build_backbone, build_encoder, get_spec
from efficell_app.core.encoders.sam import SamBackbone
from efficell_app.core.encoders.weights import file_sha256
from efficell_app.core.errors import WeightsError


def _sam_published(backbone: SamBackbone) -> dict[str, torch.Tensor]:
    """The layout of sam_vit_*.pth: the whole SAM model, encoder under ``image_encoder.``."""
    state = {"image_encoder." + k.replace("mlp.fc", "mlp.lin"): v.clone() for k, v in backbone.vit.state_dict().items()}
    dim = backbone.out_channels[0]
    state["image_encoder.neck.0.weight"] = torch.randn(8, dim, 1, 1)
    state["image_encoder.neck.1.weight"] = torch.ones(8)
    state["image_encoder.neck.1.bias"] = torch.zeros(8)
    state["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"] = torch.randn(2, 4)
    state["mask_decoder.iou_token.weight"] = torch.randn(1, 8)
    state["mask_decoder.transformer.layers.0.self_attn.q_proj.weight"] = torch.randn(8, 8)
    return state


def _dinov2_published(backbone: DinoV2Backbone) -> dict[str, torch.Tensor]:
    """The layout of dinov2_vit*14[_reg4]_pretrain.pth."""
    vit = backbone.vit
    state = {k: v.clone() for k, v in vit.state_dict().items()}
    dim = vit.embed_dim
    state["mask_token"] = torch.zeros(1, dim)
    if "reg_token" in state:  # published: register_tokens, cls without its position, pos_embed with the cls slot
        p0 = torch.randn(1, 1, dim)
        state["register_tokens"] = state.pop("reg_token")
        state["pos_embed"] = torch.cat([p0, state["pos_embed"]], dim=1)
        state["cls_token"] = state["cls_token"] - p0
    return state


def _randomise(module: torch.nn.Module) -> None:
    """Give every tensor (including zero-initialised ones) distinct random values."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * 0.1)


@pytest.mark.parametrize("name", ["sam_vit_b", "sam_vit_h"])
def test_sam_published_layout_loads_exactly(tmp_path: Path, name: str) -> None:
    torch.manual_seed(0)
    src = build_backbone(name, small=True)
    _randomise(src)
    ckpt = tmp_path / "sam_small.pth"
    torch.save(_sam_published(src), ckpt)

    enc = build_encoder(name, weights=ckpt, small=True)
    assert enc.weights_sha256 == file_sha256(ckpt)
    x = torch.rand(1, 3, 64, 80)
    src.eval()
    with torch.no_grad():
        want = src(((x - enc.mean) / enc.std))
    got = enc(x)
    assert all(torch.equal(a, b) for a, b in zip(want, got))


def test_sam_timm_layout_and_fp16_load(tmp_path: Path) -> None:
    src = build_backbone("sam_vit_b", small=True)
    _randomise(src)
    ckpt = tmp_path / "timm_layout.pth"
    torch.save({k: v.half() for k, v in src.vit.state_dict().items()}, ckpt)
    dst = build_backbone("sam_vit_b", small=True)
    get_spec("sam_vit_b").load_checkpoint(dst, ckpt)
    assert torch.equal(dst.vit.blocks[0].attn.qkv.weight, src.vit.blocks[0].attn.qkv.weight.half().float())


@pytest.mark.parametrize("name", ["dinov2_vit_s14", "dinov2_vit_b14_reg"])
def test_dinov2_published_layout_loads(tmp_path: Path, name: str) -> None:
    torch.manual_seed(1)
    src = build_backbone(name, small=True)
    _randomise(src)
    ckpt = tmp_path / "dinov2_small_pretrain.pth"
    torch.save(_dinov2_published(src), ckpt)

    dst = build_backbone(name, small=True)
    get_spec(name).load_checkpoint(dst, ckpt)
    src.eval(), dst.eval()
    x = torch.randn(2, 3, 56, 70)
    with torch.no_grad():
        for a, b in zip(src(x), dst(x)):
            # registers: cls = (cls - p0) + p0 is a float round trip, so allclose, not equal
            assert torch.allclose(a, b, atol=1e-5) if name.endswith("_reg") else torch.equal(a, b)


def _sam_ckpt(tmp_path: Path, **overrides: object) -> Path:
    cfg = dict(img_size=64, embed_dim=32, depth=4, num_heads=2, global_attn_indexes=(1, 3), window_size=3, feature_blocks=(0, 1, 2, 3))
    cfg.update(overrides)
    path = tmp_path / "other_sam.pth"
    torch.save(_sam_published(SamBackbone(**cfg)), path)  # type: ignore[arg-type]
    return path


def test_wrong_files_are_refused_with_their_name(tmp_path: Path) -> None:
    sam = get_spec("sam_vit_b")
    dino = get_spec("dinov2_vit_s14")

    wider = _sam_ckpt(tmp_path, embed_dim=48)
    with pytest.raises(WeightsError, match=r"other_sam\.pth: this checkpoint is for a 48-wide"):
        sam.load_checkpoint(build_backbone("sam_vit_b", small=True), wider)

    # a real-size mismatch is named: a (meta-built) ViT-L offered a ViT-B-shaped file
    with pytest.raises(WeightsError, match=r"other_sam\.pth: .*not sam_vit_l"):
        get_spec("sam_vit_l").load_checkpoint(build_backbone("sam_vit_l", device="meta"), _sam_ckpt(tmp_path))

    src = build_backbone("sam_vit_b", small=True)
    state = _sam_published(src)
    del state["image_encoder.blocks.2.attn.rel_pos_h"]
    holed = tmp_path / "holed.pth"
    torch.save(state, holed)
    with pytest.raises(WeightsError, match=r"holed\.pth: not a SAM .*1 tensors missing \(e\.g\. blocks\.2\.attn\.rel_pos_h\)"):
        sam.load_checkpoint(build_backbone("sam_vit_b", small=True), holed)

    dino_file = tmp_path / "dinov2.pth"
    torch.save(_dinov2_published(build_backbone("dinov2_vit_s14", small=True)), dino_file)
    with pytest.raises(WeightsError, match=r"dinov2\.pth: not a SAM checkpoint.*DINOv2"):
        sam.load_checkpoint(build_backbone("sam_vit_b", small=True), dino_file)
    with pytest.raises(WeightsError, match=r"holed\.pth: this is a SAM checkpoint"):
        dino.load_checkpoint(build_backbone("dinov2_vit_s14", small=True), holed)

    reg_file = tmp_path / "reg.pth"
    torch.save(_dinov2_published(build_backbone("dinov2_vit_s14_reg", small=True)), reg_file)
    with pytest.raises(WeightsError, match=r"reg\.pth: .*DINOv2 with registers"):
        dino.load_checkpoint(build_backbone("dinov2_vit_s14", small=True), reg_file)

    text = tmp_path / "notes.pth"
    text.write_text("this is not a checkpoint\n")
    with pytest.raises(WeightsError, match=r"notes\.pth: not a readable PyTorch checkpoint"):
        sam.load_checkpoint(build_backbone("sam_vit_b", small=True), text)
    with pytest.raises(WeightsError, match=r"nothere\.pth: weights file not found"):
        dino.load_checkpoint(build_backbone("dinov2_vit_s14", small=True), tmp_path / "nothere.pth")

    class Evil:
        def __reduce__(self) -> tuple:
            return (print, ("pwned",))

    evil = tmp_path / "evil.pth"
    torch.save({"x": Evil()}, evil)
    with pytest.raises(WeightsError, match=r"evil\.pth: not a readable PyTorch checkpoint"):  # weights_only refuses code
        sam.load_checkpoint(build_backbone("sam_vit_b", small=True), evil)
