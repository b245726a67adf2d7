"""Ranking images by model uncertainty (annotate next)."""

from __future__ import annotations

import numpy as np

from efficell_app.core.images import read_image
from efficell_app.core.uncertainty import (
    ImageUncertainty,
    cell_uncertainty_image,
    image_score,
    rank_images,
    suggest,
)


def test_image_score_and_suggest() -> None:
    s_sure, low, mean = image_score(0.1, np.array([0.9, 0.95, 0.8]))
    assert low == 0.0 and abs(mean - 0.883) < 1e-3 and abs(s_sure - 0.05) < 1e-9
    s_unsure, low2, _ = image_score(0.4, np.array([0.3, 0.9, 0.5, 0.2]))
    assert low2 == 0.75 and s_unsure > s_sure
    assert image_score(0.2, np.zeros(0))[0] == 0.6  # nothing found: doubtful
    items = [ImageUncertainty("a", score=0.1), ImageUncertainty("b", score=0.7), ImageUncertainty("c", error="x"),
             ImageUncertainty("d", score=0.4)]
    assert [s.key for s in suggest(items, 2)] == ["b", "d"]


def test_cell_uncertainty_image() -> None:
    labels = np.array([[0, 1, 1], [2, 2, 0]], np.int32)
    u = cell_uncertainty_image(labels, np.array([0.9, 0.25], np.float32))
    np.testing.assert_allclose(u, [[0, 0.1, 0.1], [0.75, 0.75, 0]], atol=1e-6)


def test_rank_images_with_a_real_segmenter(random_segmenter, dsb_pairs) -> None:
    import torch

    torch.set_num_threads(1)
    loads = [(i, (lambda p=p: read_image(p))) for i, (p, _m) in enumerate(dsb_pairs[:2])]
    loads.append((99, lambda: read_image("/no/such/file.tif")))
    out = list(rank_images(random_segmenter, loads, diameter=20.0))
    assert [o.key for o in out] == [0, 1, 99]
    assert out[2].error and "no/such/file.tif" in out[2].error
    for o in out[:2]:
        assert 0.0 <= o.score <= 1.0 and 0.0 <= o.disagreement <= 1.0 and o.n_cells >= 0
    assert [s.key for s in suggest(out, 5)] == sorted([0, 1], key=lambda k: -out[k].score)
