"""Few-shot adapter training: frozen encoder, cancel, adapter files, bad inputs, sampling."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from efficell_app.core.cancel import CancelToken
from efficell_app.core.errors import AdapterError, Cancelled, InputError
from efficell_app.core.images import ImageData, read_image, read_mask
from efficell_app.core.model.adapter_io import load_adapter, read_adapter_meta, save_adapter
from efficell_app.core.training import TrainConfig, TrainProgress, default_recipe, train_adapter
from efficell_app.core.training_fit import Tile, make_batch
from efficell_app.core.training_inputs import _band
from efficell_app.core.training_data import prepare_sample

pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny(path: Path, mask_path: Path, size: int = 96) -> tuple[ImageData, np.ndarray]:
    from skimage.segmentation import relabel_sequential

    img = read_image(path)
    mask = read_mask(mask_path, img.shape)
    return img.with_data(img.data[:, :size, :size].copy()), relabel_sequential(mask[:size, :size])[0].astype(np.int32)


@pytest.fixture()
def tiny_pairs(dsb_pairs) -> list[tuple[ImageData, np.ndarray]]:  # noqa: ANN001
    return [_tiny(i, m) for i, m in dsb_pairs]


def _cfg(pairs, out: Path, encoder, **kw) -> TrainConfig:  # noqa: ANN001
    base = dict(train=pairs, out=out, encoder=encoder, init_adapter=None, epochs=1, batch_size=2, crop=64,
                target_diameter=12.0, device="cpu")
    base.update(kw)
    return TrainConfig(**base)


def _run(cfg: TrainConfig, cancel: CancelToken | None = None) -> list[TrainProgress]:
    return list(train_adapter(cfg, cancel))


def test_encoder_bit_identical_and_adapter_written(tiny_pairs, small_encoder, tmp_path) -> None:  # noqa: ANN001
    before = {k: v.clone() for k, v in small_encoder.state_dict().items()}
    events = _run(_cfg(tiny_pairs[:2], tmp_path / "a.safetensors", small_encoder, epochs=2))
    after = small_encoder.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(p.requires_grad for p in small_encoder.parameters())
    done = events[-1]
    assert done.phase == "done" and done.adapter_path == tmp_path / "a.safetensors" and done.adapter_path.exists()
    phases = [e.phase for e in events]
    assert phases.index("caching features") < phases.index("training") < phases.index("saving")
    assert done.trainable_params > 0 and done.step >= 1 and len(done.adapter_sha256) == 64
    assert set(done.metrics["validation"]) >= {"ap50", "ap75", "ap90", "f1_50"}
    meta = read_adapter_meta(done.adapter_path)
    assert meta.encoder == "efficell_compact" and meta.encoder_sha256 == "random"
    assert meta.target_diameter == 12.0 and len(meta.training["images"]) == 2
    assert {"name", "size", "sha256", "n_cells"} <= set(meta.training["images"][0])
    assert meta.instance_params["marker_threshold"] in (0.3, 0.4, 0.45, 0.5, 0.6)
    assert meta.app_version and meta.created
    assert not list(tmp_path.glob("*.part"))


def test_cancel_mid_epoch_writes_nothing(tiny_pairs, small_encoder, tmp_path) -> None:  # noqa: ANN001
    cancel = CancelToken()
    out = tmp_path / "c.safetensors"
    gen = train_adapter(_cfg(tiny_pairs, out, small_encoder, epochs=50), cancel)
    with pytest.raises(Cancelled):
        for ev in gen:
            if ev.phase == "training" and ev.step == 2:
                cancel.cancel()
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_adapter_round_trip_same_predictions(tiny_pairs, small_encoder, tmp_path, random_segmenter) -> None:  # noqa: ANN001
    from efficell_app.core.model import EffiCellModel
    from efficell_app.core.pipeline import Segmenter

    done = _run(_cfg(tiny_pairs[:1], tmp_path / "r.safetensors", small_encoder))[-1]
    ad, meta, sha = load_adapter(done.adapter_path, "efficell_compact", "random")
    assert sha == done.adapter_sha256
    save_adapter(tmp_path / "r2.safetensors", ad, meta)
    ad2, meta2, _ = load_adapter(tmp_path / "r2.safetensors", "efficell_compact", "random")
    assert meta2.instance_params == meta.instance_params and meta2.metrics == meta.metrics
    x = torch.from_numpy(prepare_sample(*tiny_pairs[1], 12.0).image[None, :, :64, :64].copy())
    feats = small_encoder(x)
    with torch.no_grad():
        o1, o2 = ad.eval()(feats, x), ad2.eval()(feats, x)
    assert all(torch.equal(o1[k], o2[k]) for k in ("sem", "geo"))
    seg1 = Segmenter(EffiCellModel(small_encoder, ad), meta, sha, done.adapter_path, "cpu")
    seg2 = Segmenter(EffiCellModel(small_encoder, ad2), meta2, sha, tmp_path / "r2.safetensors", "cpu")
    img = tiny_pairs[2][0]
    np.testing.assert_array_equal(seg1.segment(img, diameter=10).labels, seg2.segment(img, diameter=10).labels)
    assert seg1.params.marker_threshold == meta.instance_params["marker_threshold"]


def test_mismatched_or_corrupted_adapter_refused(tiny_pairs, small_encoder, tmp_path) -> None:  # noqa: ANN001
    done = _run(_cfg(tiny_pairs[:1], tmp_path / "m.safetensors", small_encoder))[-1]
    path = done.adapter_path
    with pytest.raises(AdapterError, match="trained for encoder 'efficell_compact', not 'sam_vit_b'"):
        load_adapter(path, "sam_vit_b", None)
    with pytest.raises(AdapterError, match="other weights"):
        load_adapter(path, "efficell_compact", "f" * 64)
    data = path.read_bytes()
    trunc = tmp_path / "trunc.safetensors"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(AdapterError, match=r"trunc\.safetensors: .*(truncated|damaged)"):
        load_adapter(trunc, "efficell_compact", "random")
    flipped = bytearray(data)
    for i in range(9, 60):
        flipped[i] ^= 0xFF
    bad = tmp_path / "flip.safetensors"
    bad.write_bytes(bytes(flipped))
    with pytest.raises(AdapterError, match=r"flip\.safetensors: "):
        load_adapter(bad, "efficell_compact", "random")
    # Starting training from an adapter made for another encoder is refused too.
    with pytest.raises(AdapterError, match="other weights"):
        _run(_cfg(tiny_pairs[:1], tmp_path / "x.safetensors", _with_sha(small_encoder, "e" * 64), init_adapter=path))


def _with_sha(enc, sha: str):  # noqa: ANN001, ANN202
    from efficell_app.core.encoders.registry import FrozenEncoder

    return FrozenEncoder(enc.backbone, enc.spec, weights_sha256=sha)


def test_one_image_with_held_out_band(tiny_pairs, small_encoder, tmp_path) -> None:  # noqa: ANN001
    img, mask = tiny_pairs[0]
    events = _run(_cfg([(img, mask)], tmp_path / "one.safetensors", small_encoder, epochs=2))
    done = events[-1]
    assert done.phase == "done"
    assert "held-out band" in done.metrics["validation_source"]
    assert any(e.phase == "validating" and e.val is not None for e in events)
    meta = read_adapter_meta(done.adapter_path)
    assert meta.training["images"][0]["held_out"]


def test_band_choice_keeps_cells_on_both_sides() -> None:
    mask = np.zeros((100, 100), np.int32)
    mask[5:15, 5:15] = 1
    mask[40:50, 40:50] = 2
    side, n = _band(mask, 0.2)
    assert n == 20 and side in ("top", "left")  # bottom / right bands would hold no cell
    assert _band(np.pad(np.ones((4, 4), np.int32), 2), 0.2) is None  # too small to split


def test_bad_inputs_named_and_skipped(tiny_pairs, small_encoder, tmp_path, dsb_pairs) -> None:  # noqa: ANN001
    img0, mask0 = tiny_pairs[0]
    empty = tmp_path / "empty_mask.tif"
    wrong = tmp_path / "wrong_size.tif"
    import tifffile

    tifffile.imwrite(empty, np.zeros(read_image(dsb_pairs[1][0]).shape, np.uint16))
    tifffile.imwrite(wrong, np.ones((10, 12), np.uint16))
    pairs = [(img0, mask0), (dsb_pairs[1][0], empty), (dsb_pairs[2][0], wrong), (dsb_pairs[3][0], None)]
    events = _run(_cfg(pairs, tmp_path / "ok.safetensors", small_encoder, val_fraction=0.0))
    warnings = [w for e in events for w in e.warnings]
    assert any("empty_mask.tif" in w and "no objects" in w for w in warnings)
    assert any("wrong_size.tif" in w and "10x12" in w for w in warnings)
    assert any(dsb_pairs[3][0].name in w and "no mask" in w for w in warnings)
    assert events[-1].phase == "done"
    assert len(read_adapter_meta(events[-1].adapter_path).training["images"]) == 1
    with pytest.raises(InputError, match="no usable training images.*no objects"):
        _run(_cfg(pairs[1:], tmp_path / "none.safetensors", small_encoder))
    assert not (tmp_path / "none.safetensors").exists()
    with pytest.raises(InputError, match="mask is 10x12"):
        _run(_cfg([(img0, np.ones((10, 12), np.int32))], tmp_path / "n2.safetensors", small_encoder))


def test_validation_images_time_budget_and_init(tiny_pairs, small_encoder, tmp_path, random_adapter_file) -> None:  # noqa: ANN001
    cfg = _cfg(tiny_pairs[:2], tmp_path / "v.safetensors", small_encoder, val=tiny_pairs[2:], epochs=None,
               minutes=0.4, steps=10_000, init_adapter=random_adapter_file, store_diameter="no")
    events = _run(cfg)
    done = events[-1]
    assert done.metrics["validation_source"] == "validation images"
    assert done.metrics["n_validation_images"] == 2
    assert done.seconds < 0.4 * 60 + 10.0  # the budget covers the whole run (some slack for a busy machine)
    assert 0 < done.step < 10_000  # the steps were cut to fit
    first_val = next(e for e in events if e.phase == "validating" and e.val is not None)
    assert first_val.step == 0  # the starting adapter is scored first and kept if training does not beat it
    meta = read_adapter_meta(done.adapter_path)
    assert meta.training["init_adapter"]["sha256"] and meta.training["lr"] == default_recipe(2, True).lr


def test_sampling_balances_images() -> None:
    """One image with 9 tiles and one with 1: crops still come from both about equally."""
    picked: list[str] = []

    class Cache:
        def get(self, image, sha, box, k, scale):  # noqa: ANN001, ANN202, ARG002
            picked.append(sha)
            return [np.zeros((4, (box[2] - box[0]) // 16, (box[3] - box[1]) // 16), np.float16)]

    rng = np.random.default_rng(0)
    tiles = []
    for i, n_tiles in enumerate((9, 1)):
        lab = np.zeros((64, 64), np.int32)
        lab[10:30, 10:30] = 1
        s = prepare_sample(ImageData(rng.random((1, 64, 64)).astype(np.float32)), lab, 24.0, scale=1.0)
        tiles += [Tile(i, s, f"image{i}", (0, 0, 64, 64), 4096.0) for _ in range(n_tiles)]
    by_image = {0: list(range(9)), 1: [9]}
    for _ in range(50):
        x, feats, sem, geo, valid = make_batch(tiles, by_image, [0, 1], Cache(), [0, 5], rng, 4, 32, 16)
        assert x.shape == (4, 3, 32, 32) and feats[0].shape == (4, 4, 2, 2) and sem.shape == (4, 32, 32)
        assert geo.shape == (4, 3, 32, 32) and valid.dtype == torch.bool
    share = picked.count("image1") / len(picked)
    assert 0.38 < share < 0.62


def test_many_images_one_epoch(tiny_pairs, small_encoder, tmp_path) -> None:  # noqa: ANN001
    pairs = [(img.with_data(img.data[:, :48, :48].copy()), mask[:48, :48]) for img, mask in tiny_pairs] * 3
    pairs = [(p[0], p[1]) for p in pairs if p[1].max() > 0]
    cfg = replace(_cfg(pairs, tmp_path / "many.safetensors", small_encoder), crop=32, batch_size=4, val_fraction=0.0,
                  tune_thresholds=False)
    done = _run(cfg)[-1]
    assert done.phase == "done" and done.adapter_path.exists()


def test_budget_too_short_for_any_step_is_refused(tiny_pairs, small_encoder, tmp_path) -> None:  # noqa: ANN001
    from efficell_app.core.errors import EffiCellError

    out = tmp_path / "short.safetensors"
    with pytest.raises(EffiCellError, match="the time budget ran out before"):
        _run(_cfg(tiny_pairs[:1], out, small_encoder, epochs=None, minutes=0.0005))
    assert not out.exists()
