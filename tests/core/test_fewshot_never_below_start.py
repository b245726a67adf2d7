"""Few-shot training never ends below its start: the start is scored first, training must beat it on
held-out images (cross-validation over images), else the start's weights are kept and the run says so.
The masks' cell diameter goes into the adapter where it beats estimating it."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from efficell_app.core.images import ImageData, read_image
from efficell_app.core.training import TrainConfig, image_folds, train_adapter
from efficell_app.core.training_data import object_diameter
from efficell_app.core.training_inputs import Input
from efficell_app.core.training_validation import busiest_window, choose_diameter

pytestmark = pytest.mark.usefixtures("one_thread")


def _builtin_or_skip() -> None:
    from efficell_app.core.resources import models_dir

    for f in ("efficell_compact_encoder.safetensors", "efficell_generalist.safetensors"):
        if not (models_dir() / f).exists():
            pytest.skip(f"built-in model not installed (resources/models/{f})")


def test_training_that_cannot_improve_keeps_the_start_and_says_so(tmp_path: Path, dsb_pairs) -> None:  # noqa: ANN001
    """Labels = the starting model's own output: nothing can beat the start on them (it scores AP 1.0),
    so the adapter written holds exactly the starting weights, and the CLI line, the last progress
    event and the adapter metadata all say that training did not improve on the start."""
    _builtin_or_skip()
    from safetensors.torch import load_file

    from efficell_app.cli import build_parser
    from efficell_app.cli.train import config_from_args, run_training
    from efficell_app.core.model.adapter_io import read_adapter_meta
    from efficell_app.core.pipeline import Segmenter, default_adapter_path

    img = read_image(dsb_pairs[1][0])
    img = img.with_data(img.data[:, :128, :128].copy())
    start = Segmenter.load(None, device="cpu")
    own = start.segment(img, diameter=start.target_diameter).labels  # at scale 1: what the model itself sees
    assert own.max() >= 3
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for stem in ("a", "b"):  # two images so that the default path (cross-validation over images) runs
        tifffile.imwrite(images / f"{stem}.tif", img.data[0])
        tifffile.imwrite(masks / f"{stem}.tif", own.astype(np.uint16))
    out = tmp_path / "lab.safetensors"
    # --diameter = the labels' own cell size: the training sees the images at scale 1, as the labels were made
    args = build_parser().parse_args(["train", "--images", str(images), "--masks", str(masks), "--out", str(out),
                                      "--steps", "4", "--batch-size", "2", "--device", "cpu",
                                      "--diameter", repr(object_diameter(own))])
    cfg, problems = config_from_args(args)
    cfg = replace(cfg, crop=64)
    err, stdout = io.StringIO(), io.StringIO()
    assert run_training(cfg, err, stdout, problems=problems) == 0, err.getvalue()
    result = json.loads(stdout.getvalue().strip().splitlines()[-1])
    assert result["start_validation"]["ap50"] == 1.0
    assert result["improved_on_start"] is False and result["kept"] == "start"
    assert "did not improve on the starting adapter" in result["message"] and "weights are kept" in result["message"]
    assert "did not improve on the starting adapter" in err.getvalue()
    kept, generalist = load_file(str(out)), load_file(str(default_adapter_path()))
    assert kept.keys() == generalist.keys() and all(torch.equal(kept[k], generalist[k]) for k in kept)
    meta = read_adapter_meta(out)
    assert meta.metrics["improved_on_start"] is False and meta.training["outcome"]["kept"] == "start"
    assert meta.metrics["validation"]["ap50"] == 1.0
    assert meta.training["outcome"]["validation"] == "cross-validation" and len(meta.training["outcome"]["folds"]) == 2


def test_cross_validation_over_images_scores_the_start_first(dsb_pairs, tmp_path: Path, random_adapter_file: Path) -> None:  # noqa: ANN001
    from skimage.segmentation import relabel_sequential

    from efficell_app.core.encoders import build_encoder
    from efficell_app.core.images import read_mask
    from efficell_app.core.model.adapter_io import read_adapter_meta

    pairs = []
    for ip, mp in dsb_pairs[:3]:
        im = read_image(ip)
        pairs.append((im.with_data(im.data[:, :96, :96].copy()),
                      relabel_sequential(read_mask(mp, im.shape)[:96, :96])[0].astype(np.int32)))
    torch.manual_seed(0)
    enc = build_encoder("efficell_compact", weights=None, small=True)
    cfg = TrainConfig(train=pairs, out=tmp_path / "cv.safetensors", encoder=enc, init_adapter=random_adapter_file,
                      steps=4, batch_size=2, crop=64, target_diameter=12.0, device="cpu")
    events = list(train_adapter(cfg))
    vals = [e for e in events if e.phase == "validating" and e.val is not None]
    assert vals[0].step == 0 and vals[0].val == vals[0].start  # the curve's first point: the start
    done = events[-1]
    oc = done.outcome
    assert oc["validation"] == "cross-validation" and len(oc["folds"]) == 3
    assert sorted(n for f in oc["folds"] for n in f["held_out"]) == sorted(p[0].path.stem for p in pairs)
    assert set(oc["spread"]) >= {"gain_mean", "gain_sd", "gain_min", "gain_max"} and oc["start"] is not None
    assert oc["kept"] in ("start", "trained") and done.message.endswith(oc["message"])
    meta = read_adapter_meta(done.adapter_path)
    assert meta.metrics["start_validation"] == oc["start"]
    assert meta.training["outcome"]["improved"] == (oc["kept"] == "trained")
    assert meta.training["diameter"]["median_px"] > 0 and "rule" in meta.training["diameter"]


def test_image_folds_hold_out_every_image_once() -> None:
    for n in (2, 3, 5, 10):
        folds = image_folds(n, 3, seed=1)
        assert len(folds) == min(n, 3)
        held = [i for f in folds for i in f]
        assert sorted(held) == list(range(n))
        assert all(f for f in folds)


def test_busiest_window_finds_the_cells() -> None:
    mask = np.zeros((100, 300), np.int32)
    mask[40:60, 220:240] = 1
    ys, xs = busiest_window(mask, 64)
    assert (ys.stop - ys.start, xs.stop - xs.start) == (64, 64)
    assert mask[ys, xs].sum() == mask.sum()


class _SizeSensitive:
    """Stands in for a model: finds the true objects only at the diameter ``good`` says, else nothing."""

    def __init__(self, masks: dict[int, np.ndarray], good) -> None:  # noqa: ANN001
        self.masks, self.good = masks, good

    def segment(self, img: ImageData, diameter: float | None = None, cancel=None):  # noqa: ANN001, ANN201, ARG002
        from types import SimpleNamespace

        m = self.masks[int(img.data[0, 0, 0])]
        return SimpleNamespace(labels=m if self.good(diameter) else np.zeros_like(m))


def _inputs(diameters: list[int]) -> tuple[list[Input], dict[int, np.ndarray]]:
    items, masks = [], {}
    for i, d in enumerate(diameters):
        m = np.zeros((128, 128), np.int32)
        for j, (y, x) in enumerate(((10, 10), (60, 60), (10, 70))):
            m[y:y + d, x:x + d] = j + 1
        img = ImageData(np.full((1, 128, 128), float(i), np.float32))
        items.append(Input(f"im{i}", img, m, f"im{i}"))
        masks[i] = m
    return items, masks


def test_diameter_stored_only_where_it_beats_the_estimate() -> None:
    items, masks = _inputs([20, 20, 22])
    # a lab at one magnification, a model that needs the size given: the masks' diameter is stored
    got = choose_diameter(_SizeSensitive(masks, lambda d: d is not None), items)
    assert got["used"] and got["ap50_at_mask_diameter"] == 1.0 and got["ap50_estimated"] == 0.0
    assert got["median_px"] == pytest.approx(float(np.median([object_diameter(i.mask) for i in items])), abs=0.01)
    # the estimate does as well: nothing is stored (a mixed collection keeps its per-image estimate)
    got = choose_diameter(_SizeSensitive(masks, lambda d: True), items)
    assert not got["used"]
    # the other images' median is wrong for each image (mixed magnifications): estimated
    items, masks = _inputs([8, 20, 40])
    got = choose_diameter(_SizeSensitive(masks, lambda d: d is None), items)
    assert not got["used"] and got["ap50_estimated"] == 1.0


def test_diameter_plan_without_a_comparison() -> None:
    from efficell_app.core.training import TrainConfig, _diameter_plan

    assert TrainConfig(train=[], out=Path("x")).store_diameter == "no"  # estimated per image unless asked
    one, _ = _inputs([20])
    three, _ = _inputs([20, 20, 22])
    assert not _diameter_plan("no", three)["used"] and _diameter_plan("yes", one)["used"]
    # one image leaves nothing held out to compare on: "auto" estimates
    plan = _diameter_plan("auto", one)
    assert not plan["used"] and "one image" in plan["rule"]
    with pytest.raises(ValueError, match="store_diameter"):
        _diameter_plan("sometimes", three)


def test_segmenting_uses_the_adapter_diameter_unless_given(random_segmenter, dsb_pairs) -> None:  # noqa: ANN001
    img = read_image(dsb_pairs[0][0])
    img = img.with_data(img.data[:, :96, :96].copy())
    assert random_segmenter.segment(img).settings["diameter_estimated"]  # no diameter in the adapter: estimated
    random_segmenter.meta = replace(random_segmenter.meta, cell_diameter=12.0)
    res = random_segmenter.segment(img)
    assert res.diameter == 12.0 and not res.settings["diameter_estimated"]
    assert res.settings["adapter_cell_diameter"] == 12.0
    assert random_segmenter.segment(img, diameter=30.0).diameter == 30.0  # a given diameter wins
    random_segmenter.use_adapter_diameter = False
    assert random_segmenter.segment(img).settings["diameter_estimated"]


def test_recipe_freezes_parts_and_averages_weights(dsb_pairs, tmp_path: Path) -> None:  # noqa: ANN001
    """A recipe's frozen parts keep their starting values; the rest trains (here from fresh adapters)."""
    from safetensors.torch import load_file
    from skimage.segmentation import relabel_sequential

    from efficell_app.core.encoders import build_encoder
    from efficell_app.core.images import read_mask
    from efficell_app.core.model import build_adapters
    from efficell_app.core.training_fit import Recipe

    im = read_image(dsb_pairs[0][0])
    pair = (im.with_data(im.data[:, :96, :96].copy()),
            relabel_sequential(read_mask(dsb_pairs[0][1], im.shape)[:96, :96])[0].astype(np.int32))
    torch.manual_seed(0)
    enc = build_encoder("efficell_compact", weights=None, small=True)
    recipe = Recipe(steps=3, lr=1e-2, decoder_lr=1e-2, ema=0.5, freeze=("prompt_encoder.",), crop=64, batch=2, warmup=1)
    cfg = TrainConfig(train=[pair], out=tmp_path / "f.safetensors", encoder=enc, init_adapter=None, recipe=recipe,
                      val_fraction=0.0, target_diameter=12.0, device="cpu", seed=3)
    done = list(train_adapter(cfg))[-1]
    torch.manual_seed(3)  # the fresh adapters train_adapter built
    fresh = build_adapters(enc.out_channels, enc.stride).state_dict()
    saved = load_file(str(done.adapter_path))
    frozen = [k for k in saved if k.startswith("prompt_encoder.")]
    assert frozen and all(torch.equal(saved[k], fresh[k]) for k in frozen)
    assert any(not torch.equal(saved[k], fresh[k]) for k in saved if k.startswith("mask_decoder."))
    assert done.trainable_params == sum(v.numel() for k, v in fresh.items() if k.startswith("mask_decoder."))
    assert done.outcome["validation"] == "none" and done.outcome["kept"] == "trained"


def test_thresholds_change_only_where_the_change_also_wins_out_of_fold(monkeypatch) -> None:  # noqa: ANN001
    """A threshold each image likes for itself is no gain on images it was not chosen on."""
    from types import SimpleNamespace

    from efficell_app.core import training_validation as tv
    from efficell_app.core.instances import InstanceParams

    def run(liked: list[float]) -> float:
        # image i scores 0.7 at its liked foreground threshold, else 0.5 (the marker threshold does nothing)
        monkeypatch.setattr(tv, "image_counts", lambda vals, dense, p: [0.7 if abs(p.fg_threshold - liked[i]) < 1e-6 else 0.5
                                                                        for i in vals])
        monkeypatch.setattr(tv, "pool", lambda counts: {0.5: SimpleNamespace(ap=sum(counts) / len(counts))})
        start = InstanceParams(fg_threshold=0.4, marker_threshold=0.4)
        images = list(range(len(liked)))
        in_sample = tv.tune(images, [None] * len(images), start)[0].fg_threshold
        assert in_sample != 0.4  # searched and scored on the same images, some setting always wins
        return tv.tune(images, [None] * len(images), start, [[i] for i in images])[0].fg_threshold

    assert run([0.3, 0.5, 0.6, 0.6]) == 0.4  # each image its own: the start's threshold stays
    assert run([0.6, 0.6, 0.6, 0.6]) == 0.6  # every image likes it, also when chosen on the others: it changes


def test_the_adapter_keeps_thresholds_for_each_kind_of_input() -> None:
    """A run on colour images (H&E) tunes the start's colour thresholds; the grayscale ones stay the
    start's, and the other way round (the built-in adapter has both)."""
    from efficell_app.core.instances import InstanceParams
    from efficell_app.core.training import _written_params

    start = {"fg_threshold": 0.3, "marker_threshold": 0.4, "min_size": 12, "colour": {"fg_threshold": 0.6, "marker_threshold": 0.5}}
    tuned = InstanceParams(fg_threshold=0.5, marker_threshold=0.5, min_size=12)
    colour = _written_params(start, tuned, colour_run=True)
    assert (colour["fg_threshold"], colour["marker_threshold"]) == (0.3, 0.4)
    assert (colour["colour"]["fg_threshold"], colour["colour"]["marker_threshold"]) == (0.5, 0.5)
    grey = _written_params(start, tuned, colour_run=False)
    assert (grey["fg_threshold"], grey["marker_threshold"]) == (0.5, 0.5) and grey["colour"] == start["colour"]
    assert "colour" not in _written_params({"fg_threshold": 0.4}, tuned, colour_run=False)


def _counts(tp: int, fp: int, fn: int) -> list:
    from efficell_app.core.metrics import MatchStats

    return [{t: MatchStats(t, tp, fp, fn) for t in (0.5, 0.75, 0.9)}]


def test_a_few_cells_more_is_not_evidence_but_many_are() -> None:
    """The keep rule's test: 3 errors -> 0 on a handful of cells could be luck (p = 1/8); 60 -> 30 cannot."""
    from efficell_app.core.training_validation import EVIDENCE_ALPHA, evidence

    small = evidence(_counts(4, 0, 3), _counts(7, 0, 0))
    assert (small["start_errors"], small["trained_errors"]) == (3, 0)
    assert small["p_value"] == pytest.approx(0.125) and not small["significant"]
    large = evidence(_counts(140, 20, 40), _counts(160, 10, 20))
    assert large["p_value"] < EVIDENCE_ALPHA and large["significant"]
    worse = evidence(_counts(160, 10, 20), _counts(140, 20, 40))
    assert worse["p_value"] > 0.5 and not worse["significant"]
    assert evidence(_counts(5, 0, 0), _counts(5, 0, 0))["p_value"] == 1.0  # no errors on either side: nothing to go on


def test_a_higher_ap_without_evidence_keeps_the_start_and_says_why() -> None:
    from efficell_app.core.instances import InstanceParams
    from efficell_app.core.training import _outcome
    from efficell_app.core.training_validation import evidence, scores

    start, trained = _counts(16, 5, 8), _counts(18, 4, 6)  # AP 0.55 -> 0.64 on 24 cells: 13 -> 10 errors
    proof = evidence(start, trained)
    assert scores(trained)["ap50"] > scores(start)["ap50"] + 1 / 24 and not proof["significant"]
    p = InstanceParams()
    oc = _outcome("held-out band", True, scores(start), scores(trained), 8, [], p, p, "", 1, proof)
    assert oc["kept"] == "start" and oc["evidence"] == proof
    assert "did not clearly improve" in oc["message"] and "13" in oc["message"] and "weights are kept" in oc["message"]


def test_keep_trained_keeps_the_trained_weights_whatever_the_evidence(dsb_pairs, tmp_path: Path,  # noqa: ANN001
                                                                     random_adapter_file: Path) -> None:
    """``keep="trained"`` (``efficell train --keep trained``, the dialog's check box): the trained weights are
    written even where the held-out images give no evidence for them, and the outcome says which happened."""
    from safetensors.torch import load_file
    from skimage.segmentation import relabel_sequential

    from efficell_app.core.encoders import build_encoder
    from efficell_app.core.images import read_mask
    from efficell_app.core.instances import InstanceParams
    from efficell_app.core.training import _outcome
    from efficell_app.core.training_validation import evidence, scores

    im = read_image(dsb_pairs[0][0])
    pair = (im.with_data(im.data[:, :96, :96].copy()),
            relabel_sequential(read_mask(dsb_pairs[0][1], im.shape)[:96, :96])[0].astype(np.int32))
    torch.manual_seed(0)
    enc = build_encoder("efficell_compact", weights=None, small=True)
    cfg = TrainConfig(train=[pair], out=tmp_path / "k.safetensors", encoder=enc, init_adapter=random_adapter_file,
                      steps=3, batch_size=2, crop=64, target_diameter=12.0, device="cpu", keep="trained")
    done = list(train_adapter(cfg))[-1]
    oc = done.outcome
    assert oc["kept"] == "trained" and "evidence" in oc
    assert oc["overridden"] == (not oc["evidence"]["significant"] or oc["trained"]["ap50"] <= oc["start"]["ap50"])
    written, start = load_file(str(done.adapter_path)), load_file(str(random_adapter_file))
    assert any(not torch.equal(written[k], start[k]) for k in start)  # not the start's weights
    # the words when the evidence did not support it
    s, t = _counts(16, 5, 8), _counts(18, 4, 6)
    p = InstanceParams()
    oc2 = _outcome("held-out band", False, scores(s), scores(t), 3, [], p, p, "", 1, evidence(s, t), True)
    assert oc2["kept"] == "trained" and oc2["overridden"] and not oc2["improved"]
    assert "kept as asked" in oc2["message"] and "did not clearly improve" in oc2["message"]


def test_mix_state_is_the_way_from_start_to_trained() -> None:
    from efficell_app.core.training_fit import mix_state

    start = {"w": torch.tensor([0.0, 2.0]), "n": torch.tensor(1)}
    trained = {"w": torch.tensor([4.0, -2.0]), "n": torch.tensor(7)}
    half = mix_state(start, trained, 0.5)
    assert torch.equal(half["w"], torch.tensor([2.0, 0.0])) and int(half["n"]) == 7  # counters: the trained ones
    assert torch.equal(mix_state(start, trained, 1.0)["w"], trained["w"])
    assert torch.equal(mix_state(start, trained, 0.0)["w"], start["w"])


def test_each_checkpoint_is_scored_at_every_mix_and_the_chosen_mix_is_written(dsb_pairs, tmp_path: Path,  # noqa: ANN001
                                                                            random_adapter_file: Path) -> None:
    """The recipe's mixes of start and trained weights are candidates beside the steps: the curve has one point
    per (step, mix), and the adapter written is the chosen mix of the start and the weights that run trained."""
    from safetensors.torch import load_file
    from skimage.segmentation import relabel_sequential

    from efficell_app.core.encoders import build_encoder
    from efficell_app.core.images import read_mask
    from efficell_app.core.training_fit import Recipe

    im = read_image(dsb_pairs[0][0])
    pair = (im.with_data(im.data[:, :96, :96].copy()),
            relabel_sequential(read_mask(dsb_pairs[0][1], im.shape)[:96, :96])[0].astype(np.int32))
    torch.manual_seed(0)
    enc = build_encoder("efficell_compact", weights=None, small=True)

    def run(mixes: tuple[float, ...], name: str, checkpoints: int):  # noqa: ANN202
        recipe = Recipe(steps=3, lr=1e-2, decoder_lr=1e-2, crop=64, batch=2, warmup=1, checkpoints=checkpoints,
                        mixes=mixes)
        cfg = TrainConfig(train=[pair], out=tmp_path / name, encoder=enc, init_adapter=random_adapter_file, recipe=recipe,
                          target_diameter=12.0, device="cpu", keep="trained", tune_thresholds=False, seed=5)
        return list(train_adapter(cfg))[-1]

    both = run((0.5, 1.0), "both.safetensors", 2)
    assert sorted((c["step"], c["mix"]) for c in both.outcome["curve"]) == [(2, 0.5), (2, 1.0), (3, 0.5), (3, 1.0)]
    assert (both.outcome["chosen_step"], both.outcome["chosen_mix"]) in [(c["step"], c["mix"]) for c in both.outcome["curve"]]
    # one checkpoint (the last step) and one mix each: the same run (same seed), written whole and half-way
    trained, half = run((1.0,), "t.safetensors", 1), run((0.5,), "h.safetensors", 1)
    assert trained.outcome["chosen_mix"] == 1.0 and half.outcome["chosen_mix"] == 0.5
    start = load_file(str(random_adapter_file))
    t, h = load_file(str(trained.adapter_path)), load_file(str(half.adapter_path))
    moved = [k for k in start if start[k].is_floating_point() and not torch.equal(t[k], start[k])]
    assert moved
    for k in moved:
        torch.testing.assert_close(h[k], start[k] + 0.5 * (t[k] - start[k]), atol=1e-5, rtol=1e-4)


def test_paired_evidence_counts_only_the_errors_one_side_makes() -> None:
    """Shared errors (a cell both miss, a false object both see) say nothing about which is better; the
    discordant ones do, and many of them one way is evidence even where the totals are close."""
    from efficell_app.core.training_validation import error_objects, paired_evidence

    gt = np.zeros((40, 40), np.int32)
    for i, (y, x) in enumerate([(1, 1), (1, 10), (1, 20), (10, 1), (10, 10)], start=1):
        gt[y:y + 5, x:x + 5] = i
    start = gt.copy()
    start[start == 1] = 0  # misses cell 1
    start[30:35, 30:35] = 9  # a false object
    trained = gt.copy()
    trained[trained == 2] = 0  # misses cell 2 instead
    trained[31:35, 30:35] = 6  # the same false object (IoU 0.8)
    assert [list(x) for x in error_objects(gt, start)] == [[1], [9]]
    ev = paired_evidence([gt], [start], [trained])
    assert (ev["fixed"], ev["made"], ev["shared"]) == (1, 1, 1) and ev["p_value"] == 0.75
    # ten images where the trained state fixes both of the start's errors and makes none: 20 fixed, 0 made
    ev = paired_evidence([gt] * 10, [start] * 10, [gt] * 10)
    assert (ev["fixed"], ev["made"]) == (20, 0) and ev["p_value"] < 1e-5


def test_keep_rule_replays_each_kind_of_evidence() -> None:
    """One rule, three kinds of evidence: the benchmark replays the paired test and the bare margin with it."""
    from efficell_app.core.training_validation import keeps_trained

    start, trained = {"ap50": 0.50, "n_true": 200}, {"ap50": 0.56, "n_true": 200}
    proof = {"p_value": 0.2, "paired": {"p_value": 0.01}}
    assert not keeps_trained(start, trained, proof)  # the unpaired test decides: no evidence
    assert keeps_trained(start, trained, proof, "paired") and keeps_trained(start, trained, proof, "none")
    assert not keeps_trained(start, {"ap50": 0.504, "n_true": 200}, proof, "none")  # within one object's worth
    assert not keeps_trained(start, trained, {"p_value": 0.2}, "paired")  # no paired evidence measured: keep the start


def test_fine_tuning_sees_each_image_at_several_cell_sizes(dsb_pairs, tmp_path: Path,  # noqa: ANN001
                                                          random_adapter_file: Path) -> None:
    """Fine-tuning jitters the cell size as the generalist's training did (so the adapter stays right at the sizes
    its own diameter estimate probes): one sample per scale, cells of target x scale pixels, and the scales a run
    used are in the adapter's metadata (``TrainConfig.scales`` overrides the recipe's)."""
    from skimage.segmentation import relabel_sequential

    from efficell_app.core.device_augment import AugmentConfig
    from efficell_app.core.encoders import build_encoder
    from efficell_app.core.images import read_mask
    from efficell_app.core.model.adapter_io import read_adapter_meta
    from efficell_app.core.training import default_recipe
    from efficell_app.core.training_fit import Recipe
    from efficell_app.core.training_inputs import prepare_image

    scales = default_recipe(5, fine_tune=True).scales
    lo, hi = AugmentConfig().scale_range
    assert 1.0 in scales and min(scales) <= lo and max(scales) >= hi
    assert default_recipe(5, fine_tune=False).scales == (1.0,)

    im = read_image(dsb_pairs[0][0])
    mask = read_mask(dsb_pairs[0][1], im.shape)
    per, _, _ = prepare_image(Input("a", im, mask, "a"), 0, 20.0, None, (0.7, 1.0, 1.4), 0.0, False)
    assert len(per) == 3
    for s, smp in zip((0.7, 1.0, 1.4), per):
        assert object_diameter(smp.labels) == pytest.approx(20.0 * s, rel=0.1)

    pair = (im.with_data(im.data[:, :96, :96].copy()), relabel_sequential(mask[:96, :96])[0].astype(np.int32))
    torch.manual_seed(0)
    enc = build_encoder("efficell_compact", weights=None, small=True)
    recipe = Recipe(steps=2, lr=1e-2, decoder_lr=1e-2, crop=64, batch=2, warmup=1, checkpoints=1, scales=(1.0,))
    cfg = TrainConfig(train=[pair], out=tmp_path / "s.safetensors", encoder=enc, init_adapter=random_adapter_file,
                      recipe=recipe, scales=(0.8, 1.25), target_diameter=12.0, device="cpu", keep="trained",
                      tune_thresholds=False, seed=1)
    done = list(train_adapter(cfg))[-1]
    meta = read_adapter_meta(done.adapter_path)
    assert meta.training["scales"] == [0.8, 1.25] and meta.training["recipe"]["scales"] == [0.8, 1.25]
