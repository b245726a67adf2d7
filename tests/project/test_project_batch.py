"""segment_project: every image of a set segmented and recorded; failures reported, batch goes on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from efficell_app.core.cancel import CancelToken
from efficell_app.core.errors import Cancelled
from efficell_app.project import Project
from efficell_app.tasks.segment import BatchEvent, segment_project


def test_segments_a_set_and_records_results(project: Project, image_folder: Path, segmenter) -> None:  # noqa: ANN001
    ids = project.add_folder(image_folder, "exp").added
    project.add_folder(image_folder / "plate1", "other")
    events = list(segment_project(project, segmenter, "exp"))
    assert [e.index for e in events] == [1, 2, 3, 4] and all(e.total == 4 for e in events)
    assert all(e.ok and e.n_cells > 0 and e.result_path.is_file() for e in events), [e.error for e in events]
    assert {e.image_id for e in events} == set(ids)
    assert len(segmenter.calls) == 4  # the other set was not touched
    for e in events:
        res = project.latest_result(e.image_id)
        assert res.path == e.result_path and res.n_cells == e.n_cells
        assert res.identity == segmenter.identity and res.settings["method"] == "otsu"
        assert project.get_image(e.image_id).status == "segmented"
    run = project.list_runs()[-1]
    assert run.set_name == "exp" and run.n_results == 4 and run.identity["encoder"] == "otsu"
    assert all(r.status == "new" for r in project.list_images("other"))


def test_failure_is_reported_and_batch_goes_on(project: Project, image_folder: Path, segmenter, tmp_path: Path) -> None:  # noqa: ANN001
    ids = project.add_folder(image_folder, "exp").added
    gone = project.get_image(ids[0]).path
    gone.unlink()
    segmenter.fail_on = project.get_image(ids[1]).name
    events = list(segment_project(project, segmenter))
    bad = {e.image_id: e.error for e in events if not e.ok}
    assert set(bad) == {ids[0], ids[1]}
    assert str(gone) in bad[ids[0]] and "file not found" in bad[ids[0]]
    failed = next(e for e in events if e.image_id == ids[0])
    assert failed.message.startswith("file not found") and failed.error == f"{gone}: {failed.message}"
    assert "simulated failure" in bad[ids[1]]
    assert sum(e.ok for e in events) == 2


def test_only_new_and_annotations_untouched(project: Project, image_folder: Path, segmenter) -> None:  # noqa: ANN001
    ids = project.add_folder(image_folder, "exp").added
    rec = project.get_image(ids[0])
    ann = np.zeros((rec.height, rec.width), np.int32)
    ann[1:4, 1:4] = 1
    project.save_annotation(ids[0], ann)
    events = list(segment_project(project, segmenter, "exp", only_new=True))
    assert ids[0] not in {e.image_id for e in events} and len(events) == 3
    list(segment_project(project, segmenter, "exp"))
    assert np.array_equal(project.load_annotation(ids[0]), ann)
    assert project.get_image(ids[0]).status == "annotated"
    assert list(segment_project(project, segmenter, "exp", only_new=True)) == []


def test_cancel_between_images(project: Project, image_folder: Path, segmenter) -> None:  # noqa: ANN001
    project.add_folder(image_folder, "exp")
    token = CancelToken()
    seen: list[BatchEvent] = []
    with pytest.raises(Cancelled):
        for event in segment_project(project, segmenter, "exp", cancel=token):
            seen.append(event)
            token.cancel()
    assert len(seen) == 1
    assert [r.status for r in project.list_images("exp")].count("segmented") == 1


def test_only_the_given_images_in_that_order(project: Project, image_folder: Path, segmenter) -> None:  # noqa: ANN001
    ids = project.add_folder(image_folder, "exp").added
    wanted = [ids[2], 999_999, ids[0]]
    events = list(segment_project(project, segmenter, "exp", image_ids=wanted))
    assert [e.image_id for e in events] == wanted and [e.index for e in events] == [1, 2, 3]
    assert events[0].ok and events[2].ok and len(segmenter.calls) == 2
    assert not events[1].ok and "not in the project" in events[1].error
    # a success carries what the caller goes on with; a failure does not
    assert np.array_equal(events[0].result.labels, project.load_labels(project.latest_result(ids[2])))
    assert events[0].image.data.shape[1:] == events[0].result.labels.shape and events[1].result is None
    assert project.get_image(ids[1]).status == "new"
    assert list(segment_project(project, segmenter, image_ids=[ids[0]], only_new=True)) == []
