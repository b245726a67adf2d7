"""The built-in model's recipe: split v2, the training pack, on-device augmentation, train/validate/resume."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from efficell_app.core.data_split import DATASETS, load_split, make_split_v2
from efficell_app.core.device_augment import AugmentConfig, DeviceData, dihedral_matrix
from efficell_app.core.images import read_image, read_mask
from efficell_app.core.training_data import dihedral, prepare_sample

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def _source(ds: str, stem: str) -> str:
    """The source of a stem as the split rule defines it (without the manifest)."""
    if ds == "usiigaci_phase":
        return stem.split("_")[0]  # set<N>
    return re.sub(r"_r\d+c\d+$", "", stem)  # DSB id / MoNuSeg slide


def test_split_v2_keeps_v1_test_and_sources_on_one_side() -> None:
    v1, v2 = load_split(1), load_split(2)
    for ds in DATASETS:
        parts = {p: set(v2[ds][p]) for p in ("train", "validation", "test")}
        assert not (parts["train"] & parts["validation"] or parts["train"] & parts["test"] or parts["validation"] & parts["test"])
        assert set(v1[ds]["test"]) <= parts["test"]
        assert sorted(v2[ds]["test_v1"]) == sorted(v1[ds]["test"])
        assert parts["validation"], f"{ds}: no validation images"
        side = {}
        for p, stems in parts.items():
            for s in stems:
                assert side.setdefault(_source(ds, s), p) == p, f"{ds}: source of {s} split across {side[_source(ds, s)]} and {p}"
    assert sum(len(v2[ds][p]) for ds in DATASETS for p in ("train", "validation", "test")) == 684
    for ds in ("monuseg", "usiigaci_phase"):  # validation had to come from v1 train (no new sources of their own)
        assert set(v2[ds]["validation"]) >= set(v1[ds]["train"]) & set(v2[ds]["validation"])


@pytest.mark.skipif(not (SHARED / "manifest.csv").exists(), reason="../shared/data (v2) is not beside this checkout")
def test_split_v2_file_is_what_the_rule_makes() -> None:
    stored = json.loads((Path(__file__).resolve().parents[2] / "resources" / "models" / "data_split_v2.json").read_text())
    assert make_split_v2(SHARED / "manifest.csv", load_split(1)) == stored


def _sample(test_data: Path, stem: str = "0402a81e75262469", scale: float = 1.0):  # noqa: ANN202
    img = read_image(test_data / "dsb2018_fluo" / "images" / f"{stem}.tif")
    mask = read_mask(test_data / "dsb2018_fluo" / "masks" / f"{stem}.tif", img.shape)
    return prepare_sample(img, mask, 24.0, scale=scale, name=stem)


@pytest.mark.parametrize("k", range(8))
def test_device_crop_equals_the_numpy_dihedral_of_the_window(test_data: Path, k: int) -> None:
    s = _sample(test_data)
    dd = DeviceData([(0, s)], "cpu", AugmentConfig(crop=64).without_photometric())
    cy, cx = 100, 150  # integer centre, scale 1: every output pixel reads one source pixel centre
    got = dd.crops([(0, 1.0, k, cy, cx)])[0].numpy()
    win = (slice(cy - 32, cy + 32), slice(cx - 32, cx + 32))
    im, se, ge, va = dihedral(k, s.image[:, win[0], win[1]], s.sem[win], s.geo[:, win[0], win[1]], s.valid[win])
    np.testing.assert_allclose(got[0:3], im, atol=2e-3)  # float16 storage
    np.testing.assert_allclose(got[3:6], ge, atol=2e-3)  # offsets turned with the image (signs, swap)
    assert np.array_equal(got[6], se) and np.array_equal(got[7] > 0.5, va)


def test_dihedral_matrices_are_the_eight_symmetries() -> None:
    mats = {tuple(dihedral_matrix(k).ravel()) for k in range(8)}
    assert len(mats) == 8 and all(abs(abs(np.linalg.det(np.reshape(m, (2, 2)))) - 1) < 1e-9 for m in mats)


def test_scaled_crop_keeps_cell_count_and_normalised_targets(test_data: Path) -> None:
    s = _sample(test_data)
    dd = DeviceData([(0, s)], "cpu", AugmentConfig(crop=128).without_photometric())
    h, w = s.sem.shape
    small = dd.crops([(0, 0.5, 0, h // 2, w // 2)])[0]  # a 256-px window shrunk to 128
    assert small[3].max() <= 1.0 and small[4:6].abs().max() <= 1.0
    labels_in_window = np.unique(s.labels[h // 2 - 128:h // 2 + 128, w // 2 - 128:w // 2 + 128])
    got = np.unique(small[8].round().numpy().astype(int))
    assert set(got) <= set(labels_in_window) and len(got) > 0.8 * len(labels_in_window)


def test_batch_augmentations_keep_grayscale_and_black_padding(test_data: Path) -> None:
    s = _sample(test_data, "16c3d5935ba94b72")  # 256 x 256 at scale 1: 384-px crops reach past it
    dd = DeviceData([(0, s)], "cpu", AugmentConfig(crop=384, illumination_p=1.0, halo_p=1.0, focus_p=1.0, noise_p=1.0, density_p=1.0))
    rng, gen = np.random.default_rng(0), torch.Generator().manual_seed(0)
    img, sem, geo, valid = dd.batch(rng, 4, gen)
    assert img.shape == (4, 3, 384, 384) and sem.dtype == torch.long and valid.dtype == torch.bool
    assert torch.equal(img[:, 0], img[:, 1]) and torch.equal(img[:, 1], img[:, 2])
    assert (~valid).any() and img[~valid[:, None].expand_as(img)].abs().max() == 0
    assert not torch.isnan(img).any() and img.min() >= -0.5 and img.max() <= 1.5
    assert (sem[~valid] == 0).all() and (geo[:, 0][sem == 0] == 0).all()


def test_density_augmentation_removes_cells_from_image_and_targets(test_data: Path) -> None:
    s = _sample(test_data)
    cfg = AugmentConfig(crop=128).without_photometric()
    cfg = AugmentConfig(**{**cfg.to_dict(), "density_p": 1.0, "density_drop": (0.5, 0.5)})
    dd = DeviceData([(0, s)], "cpu", cfg)
    assert dd.samples[0].dark_background
    rng = np.random.default_rng(3)
    draws = dd._draw(rng, 1)
    before = dd.crops(draws)[0]
    img, sem, _, _ = dd.batch(np.random.default_rng(3), 1, torch.Generator().manual_seed(0))
    cells_before = (before[6] > 0).sum().item()
    removed = (before[6] > 0) & (sem[0] == 0)
    assert 0 < removed.sum().item() < cells_before
    bg = before[0][before[6] == 0]
    assert img[0, 0][removed].mean() < bg.mean() + 3 * bg.std() + 0.05  # painted with background


def test_pack_round_trip_is_lossless_below_the_shrink(tmp_path: Path, test_data: Path) -> None:
    from efficell_app.core.training_pack import make_pack, pack_bytes, read_pack

    split = {"dsb2018_fluo": {"train": ["0402a81e75262469"], "validation": ["16c3d5935ba94b72"], "test": ["431b9b0c520a2837"]},
             "usiigaci_phase": {"train": ["set01_r0c0"], "validation": [], "test": []}}
    make_pack(test_data, tmp_path, split, 24.0)
    got = {p.stem: p for p in read_pack(tmp_path)}
    assert set(got) == {"0402a81e75262469", "16c3d5935ba94b72", "set01_r0c0"}  # the test part is never packed
    dsb = got["0402a81e75262469"]
    assert dsb.shrink == 1.0 and dsb.part == "train"
    orig = read_image(test_data / "dsb2018_fluo" / "images" / "0402a81e75262469.tif")
    assert np.array_equal(dsb.image.data, orig.data)
    assert np.array_equal(dsb.labels, read_mask(test_data / "dsb2018_fluo" / "masks" / "0402a81e75262469.tif", orig.shape))
    phase = got["set01_r0c0"]  # large cells: stored shrunk, 8-bit
    assert phase.shrink < 1.0 and phase.image.data.dtype == np.uint8 and phase.labels.shape == phase.image.shape
    assert pack_bytes(tmp_path) < 400_000
    assert [p.stem for p in read_pack(tmp_path, parts=("validation",))] == ["16c3d5935ba94b72"]


def test_train_validates_keeps_best_and_resumes_exactly(tmp_path: Path, test_data: Path) -> None:
    from safetensors.torch import load_file

    from efficell_app.core.builtin_training import RecipeConfig, train
    from efficell_app.core.training_pack import make_pack

    split = {"dsb2018_fluo": {"train": ["0402a81e75262469", "2dd9d8c797fc6956"], "validation": ["16c3d5935ba94b72"]},
             "usiigaci_phase": {"train": ["set01_r0c0"], "validation": ["set02_r0c1"]}}
    make_pack(test_data, tmp_path / "pack", split, 24.0)
    cfg = RecipeConfig(steps=6, batch=2, val_every=3, warmup=2, init=None, val_bn_batches=2, augment={"crop": 64})
    meta = train(cfg, tmp_path / "pack", tmp_path / "a")
    assert meta["total_steps"] == 6
    hist = json.loads((tmp_path / "a" / "history.json").read_text())
    vals = [h for h in hist if "val" in h]
    assert [h["step"] for h in vals] == [0, 3, 6]
    assert set(vals[0]["val"]) >= {"dsb2018_fluo", "usiigaci_phase", "mean_ap5"}
    best = max(vals, key=lambda h: h["val"]["mean_ap5"])
    assert meta["best"]["mean_ap5"] == best["val"]["mean_ap5"] and (tmp_path / "a" / "best.safetensors").exists()
    assert meta["phases"][0]["hardware"] and meta["phases"][0]["steps"] == 6
    # stopped after 4 steps and resumed: the same weights as the uninterrupted run
    train(cfg, tmp_path / "pack", tmp_path / "b", stop_after=4)
    train(cfg, tmp_path / "pack", tmp_path / "b", resume=True)
    a, b = load_file(str(tmp_path / "a" / "last.safetensors")), load_file(str(tmp_path / "b" / "last.safetensors"))
    for k in a:
        if k.startswith(("encoder.", "adapters.")):
            assert torch.equal(a[k], b[k]), k
    phases = json.loads((tmp_path / "b" / "train_meta.json").read_text())["phases"]
    assert [(p["start_step"], p["end_step"]) for p in phases] == [(0, 4), (4, 6)]


def _constant_crops(b: int, gray: bool, value: float = 0.5) -> tuple[torch.Tensor, list]:
    from efficell_app.core.device_augment import _Sample

    x = torch.zeros(b, 9, 96, 96)
    x[:, 0:3] = value
    if not gray:
        x[:, 1] = value * 0.8  # colour: channels differ
    x[:, 7] = 1.0  # valid
    meta = [_Sample(torch.zeros(1), 0, gray, False, np.zeros((0, 2), int))] * b
    return x, meta


def test_illumination_is_a_smooth_bounded_field_on_grayscale_only() -> None:
    from efficell_app.core.device_augment import photometric

    only = AugmentConfig(crop=96).without_photometric()
    cfg = AugmentConfig(**{**only.to_dict(), "illumination_p": 1.0, "illumination_low": 0.2})
    x, meta = _constant_crops(4, gray=True)
    out = photometric(x, meta, np.random.default_rng(0), cfg)
    assert torch.equal(out[:, 0], out[:, 2])
    assert out.min() >= 0.5 * 0.2 - 0.1 - 1e-5 and out.max() <= 0.5 + 0.1 + 1e-5  # field in 0.2..1, ramp within ±0.1
    assert (out.amax((1, 2, 3)) - out.amin((1, 2, 3)) > 0.05).all()  # each crop got a field
    assert (out[:, 0].diff(dim=-1).abs().max() < 0.1)  # smooth: no jumps between neighbours
    xc, meta_c = _constant_crops(4, gray=False)
    assert torch.equal(photometric(xc.clone(), meta_c, np.random.default_rng(0), cfg), xc[:, 0:3])  # H&E untouched


def test_augmentation_is_reproducible_with_seeds(test_data: Path) -> None:
    s = _sample(test_data)
    dd = DeviceData([(0, s)], "cpu", AugmentConfig(crop=64))
    a = dd.batch(np.random.default_rng(5), 3, torch.Generator().manual_seed(1))
    dd._turn = 0
    b = dd.batch(np.random.default_rng(5), 3, torch.Generator().manual_seed(1))
    c = dd.batch(np.random.default_rng(6), 3, torch.Generator().manual_seed(1))
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(a[0], c[0])


def test_ship_writes_model_tuned_on_validation_with_test_metrics(tmp_path: Path, test_data: Path) -> None:
    from efficell_app.core import builtin_export
    from efficell_app.core.builtin_training import RecipeConfig, train
    from efficell_app.core.model.adapter_io import read_adapter_meta
    from efficell_app.core.training_pack import make_pack

    split = {"dsb2018_fluo": {"train": ["0402a81e75262469"], "validation": ["16c3d5935ba94b72"], "test": ["431b9b0c520a2837"],
                              "test_v1": ["431b9b0c520a2837"]}}
    make_pack(test_data, tmp_path / "pack", split, 24.0)
    meta = train(RecipeConfig(steps=2, batch=2, val_every=2, warmup=1, init="builtin", val_bn_batches=2, augment={"crop": 64}),
                 tmp_path / "pack", tmp_path / "run")
    seen = []
    real_tune = builtin_export.tune

    def spy(seg, data, sp, part="validation"):  # noqa: ANN001, ANN202 - records which part thresholds come from
        seen.append(part)
        return real_tune(seg, data, sp, part)

    builtin_export.tune = spy
    try:
        out = builtin_export.ship(tmp_path / "run" / "best.safetensors", test_data, tmp_path / "model", meta, split=split)
    finally:
        builtin_export.tune = real_tune
    assert seen == ["validation"]
    m = read_adapter_meta(Path(out["adapter_file"]))
    t = out["metrics"]["threshold_tuning"]
    assert m.instance_params["fg_threshold"] == t["fg_threshold"] and m.instance_params["marker_threshold"] == t["marker_threshold"]
    assert set(m.metrics) == {"validation", "threshold_tuning", "test_v2", "test_v1"}
    assert m.metrics["test_v2"]["dsb2018_fluo"]["given_diameter"]["n_images"] == 1
    assert m.training["phases"][0]["hardware"] and m.training["split"].endswith("data_split_v2.json")
    assert m.training["initialised_from"]["adapter_sha256"] and "CC BY-NC-SA" in m.licence
    seg = builtin_export.load_segmenter(tmp_path / "model")
    assert seg.identity["adapter_sha256"] == out["adapter_sha256"]
    # shipping a prepared candidate gives the same file without tuning again
    again = builtin_export.ship(tmp_path / "run" / "best.safetensors", test_data, tmp_path / "model2", meta, split=split,
                                from_candidate=tmp_path / "model")
    assert seen == ["validation"] and again["instance_params"] == out["instance_params"]
    m2 = read_adapter_meta(Path(again["adapter_file"]))
    assert m2.metrics["validation"] == m.metrics["validation"]  # carried over from the candidate, not measured again
    assert again["encoder_sha256"] == out["encoder_sha256"]


def test_resume_refuses_a_schedule_that_is_already_over(tmp_path: Path) -> None:
    from efficell_app.core.builtin_training import RecipeConfig, train

    (tmp_path / "state.json").write_text(json.dumps({"step": 200, "config": {"steps": 3000}}))
    with pytest.raises(ValueError, match="at step 200"):
        train(RecipeConfig(), tmp_path / "no_pack", tmp_path, resume=True, resume_steps=150)
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train(RecipeConfig(), tmp_path / "no_pack", tmp_path / "empty", resume=True)


def test_a_non_finite_loss_skips_the_update(tmp_path: Path, test_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from safetensors.torch import load_file

    from efficell_app.core import losses
    from efficell_app.core.builtin_training import RecipeConfig, train
    from efficell_app.core.training_pack import make_pack

    make_pack(test_data, tmp_path / "pack", {"dsb2018_fluo": {"train": ["0402a81e75262469"], "validation": ["16c3d5935ba94b72"]}}, 24.0)
    real, calls = losses.total_loss, []

    def first_nan(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        loss, terms = real(*args, **kwargs)
        calls.append(1)
        return (loss * float("nan"), terms) if len(calls) == 1 else (loss, terms)

    monkeypatch.setattr(losses, "total_loss", first_nan)
    meta = train(RecipeConfig(steps=3, batch=2, val_every=3, warmup=1, init=None, val_bn_batches=2, augment={"crop": 64}), tmp_path / "pack", tmp_path / "run")
    assert meta["total_steps"] == 3 and len(calls) == 3
    state = load_file(str(tmp_path / "run" / "last.safetensors"))
    assert all(torch.isfinite(v).all() for k, v in state.items() if v.is_floating_point())


def test_validating_with_clean_batchnorm_statistics_leaves_training_unchanged(tmp_path: Path, test_data: Path) -> None:
    from safetensors.torch import load_file

    from efficell_app.core.builtin_training import RecipeConfig, train
    from efficell_app.core.training_pack import make_pack

    make_pack(test_data, tmp_path / "pack", {"dsb2018_fluo": {"train": ["0402a81e75262469"], "validation": ["16c3d5935ba94b72"]}}, 24.0)
    runs = {}
    for name, every in (("often", 1), ("never", 100)):
        cfg = RecipeConfig(steps=3, batch=2, val_every=every, warmup=1, init=None, val_bn_batches=3, augment={"crop": 64})
        train(cfg, tmp_path / "pack", tmp_path / name)
        runs[name] = load_file(str(tmp_path / name / "last.safetensors"))
    for k, v in runs["never"].items():
        if k.startswith(("encoder.", "adapters.")):
            assert torch.equal(v, runs["often"][k]), k
    best = load_file(str(tmp_path / "often" / "best.safetensors"))
    bn_mean = [k for k in best if k.endswith("running_mean")][0]
    assert not torch.equal(best[bn_mean], runs["often"][bn_mean])  # the kept weights carry the clean statistics
