"""CUDA tests: they run where torch sees a CUDA GPU and skip cleanly elsewhere (CI has none).

On the GPU machine: ``PYTHONPATH=. python3 -m pytest -q tests/cuda`` (docs/gpu.md).
``EFFICELL_CUDA_TESTS_ON=cpu`` runs their logic on the CPU instead (what can be checked without a
GPU; the tests that need CUDA itself still skip), to try them out before a GPU is at hand.
"""

from __future__ import annotations

import os

import pytest


@pytest.fixture()
def gpu() -> str:
    """The device under test: 'cuda', or skip."""
    import torch

    if os.environ.get("EFFICELL_CUDA_TESTS_ON") == "cpu":
        return "cpu"
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (run on the GPU machine: docs/gpu.md)")
    return "cuda"


@pytest.fixture()
def real_cuda(gpu: str) -> str:
    """For the checks that only CUDA itself can answer (memory limits, memory statistics)."""
    if gpu != "cuda":
        pytest.skip("needs CUDA itself, not the CPU stand-in")
    return gpu
