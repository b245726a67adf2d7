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
