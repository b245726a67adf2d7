"""Large-image segmentation in strips: same labels as the whole image, cancel, and GPU OOM fallback."""

from __future__ import annotations

import numpy as np
import pytest

from efficell_app.core.cancel import CancelToken
from efficell_app.core.errors import Cancelled
from efficell_app.core.images import ImageData, model_input
from efficell_app.core.standins import cone_cells, same_partition
from efficell_app.core.strips import ModelInput, StripPlan, segment_in_strips, stream_dense


@pytest.mark.parametrize("diameter", [24.0, 16.0, 40.0, None])
def test_strips_equal_the_whole_image(pointwise_segmenter, diameter: float | None) -> None:  # noqa: ANN001
    seg = pointwise_segmenter
    img = ImageData(cone_cells(420, 260, 140, seed=1)[None])
    whole = seg.segment(img, diameter=diameter)
    assert whole.n_cells > 20
    strip = segment_in_strips(seg, img, diameter, plan=StripPlan(core_rows=37, margin=120))
    assert strip.scale == whole.scale and strip.settings["strips"] == {"core_rows": 37, "margin": 120}
    assert strip.labels.dtype == np.int32 and strip.labels.shape == (420, 260)
    assert same_partition(whole.labels, strip.labels)
    # Per-cell confidence follows the cells (match ids through the pixels they share).
    m = whole.labels > 0
    ids = np.unique(np.stack([whole.labels[m], strip.labels[m]]), axis=1)
    np.testing.assert_allclose(whole.cell_confidence[ids[0] - 1], strip.cell_confidence[ids[1] - 1], rtol=1e-4)
    assert len(strip.cell_confidence) == strip.n_cells
    assert strip.uncertainty == pytest.approx(whole.uncertainty, rel=1e-3, abs=1e-6)


def test_segment_switches_to_strips_above_the_threshold(pointwise_segmenter) -> None:  # noqa: ANN001
    seg = pointwise_segmenter
    img = ImageData(cone_cells(300, 300, 80, seed=2)[None])
    whole = seg.segment(img, diameter=24.0)
    seg.strip_pixels = 100 * 100
    strip = seg.segment(img, diameter=24.0, keep_uncertainty_map=True)
    assert "strips" in strip.settings and "strips" not in whole.settings
    assert same_partition(whole.labels, strip.labels)
    assert strip.uncertainty_map is not None and strip.uncertainty_map.shape == (300, 300)
    # Estimated diameter: above the threshold it is measured on a central crop.
    est = seg.segment(img)
    assert est.settings["diameter_estimated"] and est.n_cells > 0


def test_strips_with_the_real_random_model(random_segmenter) -> None:  # noqa: ANN001
    """The real (random) network: dense maps bit-identical when streamed; labels a valid partition."""
    import torch

    torch.set_num_threads(1)
    seg = random_segmenter
    seg.predictor.tile = 128
    seg.predictor.overlap = 32
    img = ImageData(cone_cells(300, 200, 60, seed=3)[None])
    x = model_input(img)
    prob, geo = seg.predictor.predict(x)
    blocks = list(stream_dense(seg.predictor, ModelInput(img, None).rows, 300, 200))
    assert np.array_equal(np.concatenate([b[1] for b in blocks], axis=1), prob)
    assert np.array_equal(np.concatenate([b[2] for b in blocks], axis=1), geo)
    res = segment_in_strips(seg, img, 24.0, plan=StripPlan(core_rows=60, margin=40))
    ids = np.unique(res.labels)
    assert ids[0] == 0 and np.array_equal(ids[1:], np.arange(1, res.n_cells + 1))


@pytest.mark.parametrize("dtype,channels,rgb", [(np.uint8, None, False), (np.uint16, (1, 0), False), (np.float32, (0, 1, 2), False),
                                                 (np.int32, None, False), (np.float64, (2,), False), (np.uint8, None, True)])
def test_model_input_rows_are_bit_identical(dtype, channels, rgb: bool) -> None:  # noqa: ANN001
    rng = np.random.default_rng(0)
    data = (rng.random((3, 70, 50)) * (200 if dtype == np.uint8 else 5000)).astype(dtype)
    if dtype == np.float64:
        data += 1e6  # a large offset: normalised in float64
    img = ImageData(data, rgb=rgb)
    ref = model_input(img, channels)
    src = ModelInput(img, channels)
    got = np.concatenate([src.rows(a, min(a + 17, 70)) for a in range(0, 70, 17)], axis=1)
    assert np.array_equal(ref, got)
    from efficell_app.core.strips import resize_each_channel

    for scale in (0.61, 1.37):
        source, shape = src.at_scale(scale)
        assert np.array_equal(resize_each_channel(ref, scale), source(0, shape[0]))


def test_cancel_during_strips(pointwise_segmenter) -> None:  # noqa: ANN001
    seg = pointwise_segmenter
    img = ImageData(cone_cells(400, 200, 60, seed=4)[None])
    token = CancelToken()
    seen = []

    def progress(f: float) -> None:
        seen.append(f)
        if f > 0.3:
            token.cancel()

    with pytest.raises(Cancelled):
        segment_in_strips(seg, img, 24.0, cancel=token, progress=progress, plan=StripPlan(core_rows=40, margin=30))
    assert seen and max(seen) < 1.0


def test_gpu_out_of_memory_retries_smaller_then_cpu(random_segmenter, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    """Simulated CUDA OOM: batch halves, then the CPU takes over, the result is unchanged and the user is told."""
    import torch

    seg = random_segmenter
    pred = seg.predictor
    pred.tile, pred.overlap = 64, 16
    img = ImageData(cone_cells(130, 130, 20, seed=5)[None])
    x = model_input(img)
    ref = pred.predict(x)
    real_forward = pred._forward
    calls: list[tuple[str, int]] = []

    def fake_forward(batch: np.ndarray):  # noqa: ANN202
        calls.append((pred.device, len(batch)))
        if pred.device.startswith("cuda"):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_forward(batch)

    monkeypatch.setattr(pred, "_forward", fake_forward)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    monkeypatch.setattr(pred, "_staging_device", lambda nbytes: "cpu")  # no GPU memory to ask about here
    pred.device, pred.batch_size = "cuda", 4
    got = pred.predict(x)
    assert pred.device == "cpu"
    assert calls[0] == ("cuda", 4) and ("cuda", 2) in calls and ("cuda", 1) in calls
    assert any("batch reduced to 2" in n for n in pred.notes)
    assert any("continuing on the CPU" in n for n in pred.notes)
    np.testing.assert_allclose(got[0], ref[0], atol=1e-5)
    # Segmenter.segment hands the notes to the user.
    pred.device = "cuda"
    res = seg.segment(img, diameter=24.0)
    assert any("GPU out of memory" in n for n in res.notes)
    assert not pred.notes  # not repeated for the next image


def test_out_of_memory_on_the_cpu_is_not_swallowed(random_segmenter, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    import torch

    pred = random_segmenter.predictor

    def oom(batch: np.ndarray):  # noqa: ANN202
        raise torch.OutOfMemoryError("out of memory")

    monkeypatch.setattr(pred, "_forward", oom)
    with pytest.raises(torch.OutOfMemoryError):
        pred.predict(np.zeros((3, 64, 64), np.float32))
