"""core/pipelined.py: many images with the model in this process and the CPU work in worker processes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from efficell_app.core.images import ImageData, read_image
from efficell_app.core.measure import MIN_OBJECT_PX
from efficell_app.core.pipelined import post_processing_pool, segment_stream


@pytest.fixture()
def images(dsb_pairs, phase_pairs) -> list[ImageData]:  # noqa: ANN001
    """Three small real images (crops keep the test fast on a busy CPU)."""
    out = []
    for p in (dsb_pairs[0][0], phase_pairs[0][0], dsb_pairs[1][0]):
        img = read_image(p)
        out.append(img.with_data(img.data[:, :128, :112].copy()))
    return out


def _same(seg, images: list[ImageData], items: list, diameter: float | None) -> None:  # noqa: ANN001
    for img, it in zip(images, items):
        ref = seg.segment(img, diameter=diameter)
        assert it.ok and it.source == str(img.path), it.error
        np.testing.assert_array_equal(it.result.labels, ref.labels)
        np.testing.assert_allclose(it.result.cell_confidence, ref.cell_confidence, rtol=1e-6)
        assert it.result.uncertainty == pytest.approx(ref.uncertainty)
        assert it.result.settings == {**ref.settings}
        # every object is measured but those below the minimum size, which the summary counts
        _, sizes = np.unique(ref.labels[ref.labels > 0], return_counts=True)
        small = int(np.count_nonzero(sizes < MIN_OBJECT_PX))
        assert len(it.cells) == ref.n_cells - small and it.summary["objects_below_min_size"] == small


def test_same_results_as_segment_in_order_and_a_bad_file_named(random_segmenter, images: list[ImageData],  # noqa: ANN001
                                                                tmp_path: Path, dsb_pairs) -> None:  # noqa: ANN001
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"II*\x00" + b"\x13" * 100)
    path = dsb_pairs[2][0]  # a path is read by the stream itself
    items = list(segment_stream(random_segmenter, [images[0], bad, path, *images[1:]], 20.0, pool=None))
    assert [i.index for i in items] == [0, 1, 2, 3, 4]
    assert not items[1].ok and items[1].error.startswith(str(bad))
    _same(random_segmenter, [images[0], read_image(path), *images[1:]], [items[0], *items[2:]], 20.0)


def test_estimated_diameter_goes_through_segment(random_segmenter, images: list[ImageData]) -> None:  # noqa: ANN001
    items = list(segment_stream(random_segmenter, images[:1], None, pool=None))
    _same(random_segmenter, images[:1], items, None)


@pytest.mark.slow
def test_worker_processes_give_the_same_results(random_segmenter, images: list[ImageData]) -> None:  # noqa: ANN001
    with post_processing_pool(2) as pool:
        items = list(segment_stream(random_segmenter, images * 2, 20.0, pool=pool, max_in_flight=2))
    assert [i.index for i in items] == list(range(6))
    assert all(i.post_seconds > 0 for i in items)
    _same(random_segmenter, images * 2, items, 20.0)
