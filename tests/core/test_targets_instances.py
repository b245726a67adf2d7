"""Training targets, their dihedral transforms, and dense maps -> instances."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from efficell_app.core.images import read_mask
from efficell_app.core.instances import dense_to_labels
from efficell_app.core.losses import total_loss
from efficell_app.core.metrics import average_precision
from efficell_app.core.targets import make_targets
from efficell_app.core.training_data import dihedral


def _two_touching() -> np.ndarray:
    lab = np.zeros((40, 60), np.int32)
    yy, xx = np.mgrid[:40, :60]
    lab[(yy - 20) ** 2 + (xx - 20) ** 2 < 12**2] = 1
    lab[(yy - 20) ** 2 + (xx - 41) ** 2 < 12**2] = 2  # overlaps/touches cell 1
    return lab


def test_targets_ranges_and_boundaries() -> None:
    lab = _two_touching()
    sem, geo = make_targets(lab)
    assert set(np.unique(sem)) == {0, 1, 2}
    assert (sem[lab == 0] == 0).all()
    assert geo[0].max() == pytest.approx(1.0) and geo[0][lab == 0].max() == 0
    assert np.abs(geo[1:]).max() <= 1.0
    # Offsets point to the centre: left of cell 1's centre dx > 0.
    assert geo[2][20, 12] > 0 and geo[2][20, 28] < 0
    # The touching line is boundary on both sides.
    touching = (lab == 1) & (np.roll(lab, -1, axis=1) == 2)
    assert (sem[touching] == 2).all()


def test_perfect_dense_maps_give_back_the_cells(dsb_pairs) -> None:
    gt = read_mask(dsb_pairs[3][1])
    sem, geo = make_targets(gt)
    prob = np.stack([sem == 0, sem == 1, sem == 2]).astype(np.float32)
    pred = dense_to_labels(prob, geo[0])
    ap = average_precision(gt, pred, (0.5,))["pooled"][0.5].ap
    assert ap > 0.9
    assert dense_to_labels(np.stack([np.ones_like(geo[0]), 0 * geo[0], 0 * geo[0]]), geo[0]).max() == 0


@pytest.mark.parametrize("k", range(8))
def test_dihedral_keeps_targets_consistent(k: int) -> None:
    """Targets of a transformed mask == transformed targets of the mask (offsets change sign/swap)."""
    lab = _two_touching()
    lab[5:12, 45:58] = 3
    img = np.random.default_rng(0).random((3, *lab.shape)).astype(np.float32)
    sem, geo = make_targets(lab)
    valid = np.ones(lab.shape, bool)
    im2, sem2, geo2, _ = dihedral(k, img, sem, geo, valid)
    lab2 = dihedral(k, img, lab.astype(np.uint8), geo, valid)[1].astype(np.int32)
    sem_ref, geo_ref = make_targets(lab2)
    assert np.array_equal(sem2, sem_ref)
    np.testing.assert_allclose(geo2, geo_ref, atol=1e-5)
    assert im2.shape[1:] == sem2.shape


def test_loss_finite_and_decreases_for_right_answer() -> None:
    lab = _two_touching()
    sem, geo = make_targets(lab)
    sem_t = torch.from_numpy(sem).long()[None]
    geo_t = torch.from_numpy(geo)[None]
    good_logits = torch.from_numpy(np.stack([sem == 0, sem == 1, sem == 2]).astype(np.float32) * 8)[None]

    def out(logits, g):
        return {"sem": logits, "geo": g, "sem_aux": logits[:, :, ::4, ::4], "geo_aux": g[:, :, ::4, ::4],
                "saliency": torch.zeros(1, 1, 3, 4)}

    good, terms = total_loss(out(good_logits, geo_t), sem_t, geo_t)
    bad, _ = total_loss(out(torch.zeros_like(good_logits), torch.zeros_like(geo_t)), sem_t, geo_t)
    assert torch.isfinite(good) and all(np.isfinite(v) for v in terms.values())
    assert float(good) < float(bad)
