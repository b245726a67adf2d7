"""What a lab's training must never do: write an adapter that says it kept the start but is not the start,
keep unchecked weights over a start it could not test, score validation on its own training images,
replace a file that appeared during the run, hide how a mask was read, or leave gigabytes behind."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tifffile

from efficell_app.core.images import ImageData, read_image, read_mask
from efficell_app.core.model.adapter_io import read_adapter_meta
from efficell_app.core.training import TrainConfig, train_adapter

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def pair(dsb_pairs) -> tuple[ImageData, np.ndarray]:  # noqa: ANN001
    from skimage.segmentation import relabel_sequential

    img = read_image(dsb_pairs[0][0])
    mask = read_mask(dsb_pairs[0][1], img.shape)
    return img.with_data(img.data[:, :96, :96].copy()), relabel_sequential(mask[:96, :96])[0].astype(np.int32)


def _cfg(train, out: Path, encoder, **kw) -> TrainConfig:  # noqa: ANN001
    base = dict(train=train, out=out, encoder=encoder, steps=2, batch_size=2, crop=64, device="cpu",
                tune_thresholds=False)
    base.update(kw)
    return TrainConfig(**base)


def test_one_image_with_no_room_for_a_band_keeps_the_start_whole(pair, small_encoder, tmp_path: Path,  # noqa: ANN001
                                                                 random_adapter_file: Path) -> None:
    """One cell: nothing can be held out, so nothing can show training beats the start: the start is
    written, working size included, although another working size was asked for."""
    img, mask = pair
    one = np.where(mask == mask.max(), 1, 0).astype(np.int32)
    start = read_adapter_meta(random_adapter_file)
    last = list(train_adapter(_cfg([(img, one)], tmp_path / "a.safetensors", small_encoder,
                                   init_adapter=random_adapter_file, target_diameter=start.target_diameter * 2)))[-1]
    meta = read_adapter_meta(tmp_path / "a.safetensors")
    assert last.outcome["kept"] == "start" and "nothing could show" in last.outcome["message"]
    assert meta.target_diameter == start.target_diameter and meta.tensors_sha256 == start.tensors_sha256
    assert last.outcome["chosen_step"] is None  # no trained candidate is described as the adapter written
    kept = list(train_adapter(_cfg([(img, one)], tmp_path / "b.safetensors", small_encoder,
                                   init_adapter=random_adapter_file, keep="trained")))[-1]
    assert kept.outcome["kept"] == "trained"  # asked for: trained and kept, unchecked, and said so


def test_validation_images_that_are_training_images_are_left_out(pair, small_encoder, tmp_path: Path) -> None:  # noqa: ANN001
    img, mask = pair
    events = list(train_adapter(_cfg([(img, mask)], tmp_path / "a.safetensors", small_encoder, init_adapter=None,
                                     val=[(img, mask)])))
    warnings = [w for e in events for w in e.warnings]
    assert any("also training images" in w for w in warnings)
    assert events[-1].outcome["validation"] != "validation images"  # scored on what training did not see


def test_a_file_that_appears_during_the_run_is_kept(pair, small_encoder, tmp_path: Path) -> None:  # noqa: ANN001
    img, mask = pair
    out = tmp_path / "lab.safetensors"
    events = []
    for ev in train_adapter(_cfg([(img, mask)], out, small_encoder, init_adapter=None, overwrite=False)):
        events.append(ev)
        if ev.phase == "training" and not out.exists():
            out.write_bytes(b"a colleague's adapter, saved meanwhile")
    assert out.read_bytes() == b"a colleague's adapter, saved meanwhile"
    assert events[-1].adapter_path == tmp_path / "lab_2.safetensors" and events[-1].adapter_path.is_file()
    assert any("appeared during the run" in w for e in events for w in e.warnings)


def test_a_binary_mask_is_said_in_the_runs_warnings(pair, small_encoder, tmp_path: Path) -> None:  # noqa: ANN001
    img, mask = pair
    tifffile.imwrite(tmp_path / "img.tif", img.data[0])
    tifffile.imwrite(tmp_path / "mask.tif", np.where(mask > 0, 255, 0).astype(np.uint8))
    events = list(train_adapter(_cfg([(tmp_path / "img.tif", tmp_path / "mask.tif")], tmp_path / "a.safetensors",
                                     small_encoder, init_adapter=None, val_fraction=0.0)))
    assert any("read as a binary mask" in w for e in events for w in e.warnings)
    record = read_adapter_meta(tmp_path / "a.safetensors").training["images"][0]
    assert len(record["mask_sha256"]) == 64  # the annotation is part of the record


def test_features_spilled_to_disk_are_removed(pair, small_encoder, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("EFFICELL_HOME", str(tmp_path / "home"))
    img, mask = pair
    list(train_adapter(_cfg([(img, mask)], tmp_path / "a.safetensors", small_encoder, init_adapter=None,
                            val_fraction=0.0, memory_cache_mb=0)))  # too large for memory: spilled
    cache = tmp_path / "home" / "feature_cache"
    assert cache.is_dir() and list(cache.iterdir()) == []  # the run's own folder went with it


def test_batch_size_and_learning_rate_must_be_positive(pair, small_encoder, tmp_path: Path) -> None:  # noqa: ANN001
    img, mask = pair
    for bad in (dict(batch_size=0), dict(lr=0.0), dict(lr=float("nan"))):
        with pytest.raises(ValueError, match="must be positive"):
            list(train_adapter(replace(_cfg([(img, mask)], tmp_path / "x.safetensors", small_encoder), **bad)))
    assert not os.path.exists(tmp_path / "x.safetensors")


@pytest.mark.parametrize("option", [["--batch-size", "0"], ["--lr", "0"], ["--diameter", "0.5"]])
def test_bad_training_options_are_usage_errors(option: list[str], tmp_path: Path, capsys) -> None:  # noqa: ANN001
    from efficell_app.cli import main

    (tmp_path / "i").mkdir()
    (tmp_path / "m").mkdir()
    rc = main(["train", "--images", str(tmp_path / "i"), "--masks", str(tmp_path / "m"),
               "--out", str(tmp_path / "a.safetensors"), *option])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and option[0] in err


def test_out_that_is_a_folder_is_a_usage_error(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    from efficell_app.cli import main

    for d in ("i", "m", "adapter.safetensors"):
        (tmp_path / d).mkdir()
    rc = main(["train", "--images", str(tmp_path / "i"), "--masks", str(tmp_path / "m"),
               "--out", str(tmp_path / "adapter.safetensors")])
    assert rc == 2 and "is a folder" in capsys.readouterr().err


def test_rgb_asked_of_a_grey_image_is_said_as_such(pair, small_encoder, tmp_path: Path) -> None:  # noqa: ANN001
    from efficell_app.core.errors import InputError

    img, mask = pair
    with pytest.raises(InputError, match="'rgb' \\(three colour channels\\) was asked for but the image has 1"):
        list(train_adapter(_cfg([(img, mask)], tmp_path / "a.safetensors", small_encoder, init_adapter=None,
                                channels=(0, 1, 2))))
