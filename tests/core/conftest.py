"""Fixtures the training tests share."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture()
def one_thread() -> None:
    """One torch thread: the machine is shared, and the training tests' images are tiny."""
    torch.set_num_threads(1)


@pytest.fixture()
def small_encoder():  # noqa: ANN201 - FrozenEncoder
    """The compact encoder in its small configuration, random weights (seed 0)."""
    from efficell_app.core.encoders import build_encoder

    torch.manual_seed(0)
    return build_encoder("efficell_compact", weights=None, small=True)
