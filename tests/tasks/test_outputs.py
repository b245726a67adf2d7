"""The resume check of batch outputs (``tasks.outputs.check_output``): a mask is complete for a run
when it records the run's key and its input is unchanged; anything else there is refused unless
overwriting. No cluster needed."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from efficell_app.core.export import write_label_tiff
from efficell_app.core.images import PlaneChoice
from efficell_app.tasks.outputs import (
    BATCH_KEY,
    batch_record,
    check_output,
    part_files,
    read_mask_record,
    remove_part_files,
    run_key,
)

IDENTITY = {"app_version": "1", "encoder": "efficell_compact", "encoder_sha256": "e" * 64, "adapter_sha256": "a" * 64}


def _key(**changes: object) -> str:
    choices = {"diameter": 20.0, "channels": None, "planes": PlaneChoice(), "pixel_size_um": None, **changes}
    identity = {**IDENTITY, **choices.pop("identity", {})}  # type: ignore[dict-item]
    return run_key(identity, **choices)  # type: ignore[arg-type]


@pytest.fixture()
def source(tmp_path: Path, dsb_pairs) -> Path:
    p = tmp_path / "in" / "a.tif"
    p.parent.mkdir()
    shutil.copy(dsb_pairs[0][0], p)
    return p


def test_run_key_changes_with_what_shapes_the_masks_only() -> None:
    assert _key() == _key(identity={"app_version": "2"})  # a new release with the same model makes the same masks
    for change in ({"diameter": 25.0}, {"channels": (1, 0)}, {"planes": PlaneChoice(z="max")},
                   {"pixel_size_um": 0.5}, {"identity": {"adapter_sha256": "b" * 64}}):
        assert _key(**change) != _key(), change


@pytest.mark.parametrize("top", [7, 70_000])  # uint16 (ImageJ Info) and uint32 (private tag) masks
def test_a_mask_with_the_runs_key_and_the_same_input_is_kept(tmp_path: Path, source: Path, top: int) -> None:
    target = tmp_path / "out" / "a_masks.tif"
    target.parent.mkdir()
    labels = np.zeros((16, 16), np.int64)
    labels[2:5, 2:5] = top
    write_label_tiff(labels, target, metadata={BATCH_KEY: batch_record(_key(), source)})
    assert read_mask_record(target)[BATCH_KEY]["run_key"] == _key()
    assert check_output(target, source, _key(), overwrite=False).action == "keep"
    assert check_output(target, source, _key(), overwrite=True).action == "segment"
    other = check_output(target, source, _key(diameter=30.0), overwrite=False)
    assert other.action == "refuse" and "other settings" in other.reason and "--overwrite" in other.reason

    with open(source, "ab") as fh:  # the input changed since (same name, other content)
        fh.write(b"\0")
    changed = check_output(target, source, _key(), overwrite=False)
    assert changed.action == "refuse" and "a.tif changed" in changed.reason


def test_anything_else_in_the_way_is_refused_and_nothing_there_is_segmented(tmp_path: Path, source: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    assert check_output(out / "none_masks.tif", source, _key(), overwrite=False).action == "segment"
    foreign = out / "foreign_masks.tif"
    write_label_tiff(np.ones((8, 8), np.uint16), foreign)  # EffiCell's, but from a run that records no key
    (out / "text_masks.tif").write_text("someone's notes", encoding="utf-8")
    (out / "dir_masks.tif").mkdir()
    for name, words in (("foreign_masks.tif", "not written by a resumable"), ("text_masks.tif", "not written by"),
                        ("dir_masks.tif", "as a folder")):
        check = check_output(out / name, source, _key(), overwrite=False)
        assert check.action == "refuse" and words in check.reason, name


def test_part_files_of_the_outputs_only_are_removed(tmp_path: Path) -> None:
    (tmp_path / ".a_masks.x1y2.tif.part").write_bytes(b"half")
    (tmp_path / ".b_masks.z3.tif.part").write_bytes(b"half")
    (tmp_path / ".notes.q.txt.part").write_bytes(b"someone else's")
    (tmp_path / "a_masks.tif").write_bytes(b"whole")
    assert {p.name for p in part_files(tmp_path, ["a_masks.tif", "b_masks.tif"])} == {".a_masks.x1y2.tif.part",
                                                                                      ".b_masks.z3.tif.part"}
    assert remove_part_files(tmp_path, ["a_masks.tif", "b_masks.tif"], older_than=0.0) == 0  # newer: in use
    assert remove_part_files(tmp_path, ["a_masks.tif", "b_masks.tif"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [".notes.q.txt.part", "a_masks.tif"]
