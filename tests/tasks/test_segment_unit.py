"""The unit of work of a segmentation run (``tasks.segment_image``): plain settings and one image in,
labels and measurements out, the same in another process as in this one (what a cluster runner needs)."""

from __future__ import annotations

import multiprocessing as mp
import pickle
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from efficell_app.project import MeasureSettings, Project
from efficell_app.tasks import ImageJob, SegmentSettings, segment_image


@pytest.mark.slow
def test_one_image_is_a_picklable_self_contained_unit(tmp_path: Path, dsb_pairs) -> None:
    with Project.create(tmp_path / "proj") as p:
        image_id = p.add_files([dsb_pairs[0][0]], "plate").added[0]
        job = ImageJob.of(p.get_image(image_id))
    settings = SegmentSettings(model=None, diameter=None, device="cpu", measure=MeasureSettings(pixel_size_um=0.5))
    assert pickle.loads(pickle.dumps((job, settings))) == (job, settings)

    here = segment_image(job, settings)  # the built-in model, loaded once for this process
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
        there = pool.submit(segment_image, job, settings).result(timeout=600)
    assert here.result.n_cells > 0 and np.array_equal(here.result.labels, there.result.labels)
    assert here.measurement.calibration.pixel_size_from == "override"
    assert here.measurement.cells.equals(there.measurement.cells)
    assert here.measurement.summary == there.measurement.summary
    assert there.image is None  # the pixels stay where they were read


def test_a_project_run_reports_how_far_each_image_is(tmp_path: Path, dsb_pairs, pointwise_segmenter) -> None:
    """``segment_images(progress=...)``: (index, total, name, fraction) within each image, in order,
    fractions rising to 1, for the window's status bar and ``segment --project``'s lines."""
    from efficell_app.tasks import ImageSegmented, segment_images

    calls: list[tuple[int, int, str, float]] = []
    with Project.create(tmp_path / "proj") as p:
        ids = p.add_files([img for img, _ in dsb_pairs[:2]], "plate").added
        events = list(segment_images(p, ids, SegmentSettings(diameter=24.0, device="cpu"),
                                     segmenter=pointwise_segmenter, progress=lambda *a: calls.append(a)))
        names = [p.get_image(i).name for i in ids]
    assert sum(isinstance(e, ImageSegmented) for e in events) == 2
    for index, name in ((1, names[0]), (2, names[1])):
        mine = [f for i, t, n, f in calls if i == index]
        assert all(t == 2 and n == name for i, t, n, _ in calls if i == index)
        assert len(mine) >= 3 and mine == sorted(mine) and 0.0 <= mine[0] < 1.0 and mine[-1] == 1.0, mine
    assert [i for i, *_ in calls] == sorted(i for i, *_ in calls)  # image 1's reports, then image 2's
