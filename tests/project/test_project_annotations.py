"""Annotations (with history) and results are kept apart; label files are validated."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from efficell_app.project import ANNOTATION_HISTORY, Project


@pytest.fixture()
def image_id(project: Project, image_folder: Path) -> int:
    return project.add_folder(image_folder, "exp").added[0]


def _labels(project: Project, image_id: int, k: int) -> np.ndarray:
    rec = project.get_image(image_id)
    lab = np.zeros((rec.height, rec.width), np.int32)
    for j in range(k):
        lab[2 + 6 * j: 6 + 6 * j, 3:9] = j + 1
    return lab


def test_save_and_load_annotation(project: Project, image_id: int) -> None:
    assert project.load_annotation(image_id) is None and project.annotation_history(image_id) == []
    lab = _labels(project, image_id, 3)
    v = project.save_annotation(image_id, lab, note="first pass")
    assert (v.version, v.n_cells, v.note) == (1, 3, "first pass")
    assert v.path.is_file() and v.path.parent == project.root / "annotations" / str(image_id)
    out = project.load_annotation(image_id)
    assert out.dtype == np.int32 and np.array_equal(out, lab)
    assert project.get_image(image_id).status == "annotated"
    assert [r.id for r in project.annotated_images("exp")] == [image_id]


def test_history_keeps_last_n(project: Project, image_id: int) -> None:
    versions = [project.save_annotation(image_id, _labels(project, image_id, k % 12)) for k in range(ANNOTATION_HISTORY + 3)]
    hist = project.annotation_history(image_id)
    assert [h.version for h in hist] == list(range(ANNOTATION_HISTORY + 3, 3, -1))
    assert all(not v.path.exists() for v in versions[:3]) and all(v.path.exists() for v in versions[3:])
    assert np.array_equal(project.load_annotation(image_id, version=5), _labels(project, image_id, 4))
    assert np.array_equal(project.load_annotation(image_id), _labels(project, image_id, (ANNOTATION_HISTORY + 2) % 12))
    with pytest.raises(KeyError):
        project.load_annotation(image_id, version=1)
    files = sorted(p.name for p in (project.root / "annotations" / str(image_id)).iterdir())
    assert len(files) == ANNOTATION_HISTORY


def test_a_replaced_annotation_is_kept_past_the_rolling_history(project: Project, image_id: int) -> None:
    work = project.save_annotation(image_id, _labels(project, image_id, 5), note="annotation")
    kept = project.keep_annotation(image_id, "replaced by an empty image")  # the user starts over
    assert kept.version == work.version and kept.note.startswith("kept: replaced by an empty image")
    for k in range(ANNOTATION_HISTORY + 5):  # many autosaves of the new annotation
        project.save_annotation(image_id, _labels(project, image_id, k % 4))
    hist = project.annotation_history(image_id)
    assert len(hist) == ANNOTATION_HISTORY + 1 and hist[-1].version == work.version and work.path.is_file()
    assert np.array_equal(project.load_annotation(image_id, version=work.version), _labels(project, image_id, 5))


def test_prediction_never_overwrites_annotation(project: Project, image_id: int) -> None:
    lab = _labels(project, image_id, 2)
    project.save_annotation(image_id, lab)
    project.set_status(image_id, "reviewed")
    pred = _labels(project, image_id, 5)
    path = project.record_result(image_id, pred, {"diameter": 12}, {"encoder": "compact", "adapter": "builtin"})
    assert path.parent == project.root / "results" / str(image_id)
    assert np.array_equal(project.load_annotation(image_id), lab)
    assert project.get_image(image_id).status == "reviewed"  # a prediction does not demote the image
    found = project.labels_for(image_id)
    assert found.kind == "annotation" and found.origin == "annotation v1" and np.array_equal(found.labels, lab)
    result = project.labels_for(image_id, "result")  # one kind only: the latest result
    assert result.kind == "result" and np.array_equal(result.labels, pred) and result.identity["encoder"] == "compact"
    assert np.array_equal(project.load_labels(project.latest_result(image_id)), pred)


def test_results_record_settings_and_identity(project: Project, image_id: int) -> None:
    ident = {"app_version": "0.1.0", "encoder": "compact", "encoder_sha256": "a" * 64, "adapter": "x",
             "adapter_sha256": "b" * 64}
    run = project.start_run({"diameter": None}, ident, "exp")
    p1 = project.record_result(image_id, _labels(project, image_id, 1), {"diameter": 10.0}, ident, run_id=run,
                               seconds=0.5)
    p2 = project.record_result(image_id, _labels(project, image_id, 4), {"diameter": 20.0}, ident)
    assert project.get_image(image_id).status == "segmented"
    latest = project.latest_result(image_id)
    assert latest.path == p2 and latest.n_cells == 4 and latest.settings == {"diameter": 20.0}
    assert latest.identity == ident and latest.run_id is None
    older = project.list_results(image_id)[1]
    assert older.path == p1 and older.run_id == run and older.seconds == 0.5
    runs = project.list_runs()
    assert [(r.id, r.set_name, r.n_results) for r in runs] == [(run, "exp", 1)]
    found = project.labels_for(image_id)
    assert found.kind == "result" and found.labels.max() == 4 and found.origin == f"result {latest.id}"
    assert project.labels_for(image_id, "annotation") is None
    assert project.delete_results(image_id, keep_last=1) == 1 and not p1.exists() and p2.exists()


def test_bad_labels_are_refused(project: Project, image_id: int) -> None:
    rec = project.get_image(image_id)
    with pytest.raises(ValueError, match="is 5x5 but its image"):
        project.save_annotation(image_id, np.zeros((5, 5), np.int32))
    with pytest.raises(ValueError, match="negative"):
        project.save_annotation(image_id, np.full((rec.height, rec.width), -1, np.int32))
    with pytest.raises(ValueError, match="whole numbers"):
        project.record_result(image_id, np.zeros((rec.height, rec.width), np.float32), {}, {})
    with pytest.raises(KeyError):
        project.save_annotation(99999, np.zeros((5, 5), np.int32))
    assert project.annotation_history(image_id) == [] and project.latest_result(image_id) is None
    # bool masks and small integer types are accepted and stored as int32
    v = project.save_annotation(image_id, np.ones((rec.height, rec.width), bool))
    assert v.n_cells == 1 and project.load_annotation(image_id).dtype == np.int32


def test_a_label_file_the_index_does_not_know_is_never_overwritten(project: Project, image_id: int) -> None:
    """A file the index does not know (an older or lost index's annotation) is kept: the save takes
    the next free version. A temporary file of an interrupted write goes. (A file the index
    journaled as in flight when the process died is replaced: test_faults, the 'index' kill.)"""
    folder = project.root / "annotations" / str(image_id)
    folder.mkdir(parents=True)
    (folder / "v000001.tif").write_bytes(b"someone's annotation")
    (folder / ".v000001.abc.tif.part").write_bytes(b"temp")
    assert project.load_annotation(image_id) is None
    lab = _labels(project, image_id, 2)
    v = project.save_annotation(image_id, lab)
    assert v.version == 2 and np.array_equal(project.load_annotation(image_id), lab)
    assert (folder / "v000001.tif").read_bytes() == b"someone's annotation"
    assert sorted(p.name for p in folder.iterdir()) == ["v000001.tif", "v000002.tif"]
