"""Stand-ins for tests and benchmarks: synthetic cells, a pointwise "network", and a label comparison.

They exercise the real tiling, strip, stitching and watershed code without a trained model, so
results are predictable (a cell is where the image is bright; its distance map is its intensity)
and fast at any image size. Not used by the application itself.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def cone_cells(h: int, w: int, n: int, seed: int, r: float = 11.0) -> np.ndarray:
    """``n`` cells of radius ``r`` whose intensity falls linearly from the centre (uint16)."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w), np.float32)
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(n):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        np.maximum(img, np.clip(1 - np.hypot(yy - cy, xx - cx) / r, 0, 1), out=img)
    img += rng.uniform(0, 1e-3, img.shape).astype(np.float32)  # no exact ties (as real network outputs)
    return (img * 4000 + 100).astype(np.uint16)


class PointwiseModel:
    """Fake network of 1x1 convolutions: background where dark, interior where bright, distance = intensity.

    Drop-in for ``DensePredictor.model`` (same call signature and output dict as EffiCellModel).
    """

    def __init__(self, sem_weight: tuple[float, float, float] = (-12.0, 8.0, 0.0),
                 sem_bias: tuple[float, float, float] = (2.0, 0.0, 0.5)) -> None:
        """``sem_weight``: how the first input channel drives the background/interior/boundary logits
        (the boundary logit is driven by the third channel); ``sem_bias``: their biases."""
        import torch

        self.s = torch.nn.Conv2d(3, 3, 1)
        self.g = torch.nn.Conv2d(3, 3, 1)
        bg, inside, boundary = sem_weight
        with torch.no_grad():
            self.s.weight.copy_(torch.tensor([[bg, 0, 0], [inside, 0, 0], [0, 0, boundary]])[:, :, None, None])
            self.s.bias.copy_(torch.tensor(sem_bias))
            self.g.weight.copy_(torch.eye(3)[:, :, None, None])
            self.g.bias.zero_()

    def eval(self) -> PointwiseModel:
        return self

    def to(self, device: str) -> PointwiseModel:
        return self

    def __call__(self, x: Any) -> dict[str, Any]:
        return {"sem": self.s(x), "geo": self.g(x)}


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """True when two label images are equal up to renumbering."""
    if a.shape != b.shape or not np.array_equal(a > 0, b > 0):
        return False
    m = a > 0
    if not m.any():
        return True
    pairs = np.unique(np.stack([a[m], b[m]]), axis=1)
    return len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))
