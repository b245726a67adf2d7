"""The CUDA path: same labels as the CPU, mixed precision, tiles blended on the GPU, the forced
out-of-memory fallback, feature caching and few-shot training on the GPU, overlapped
post-processing, and the GPU named in every record. Tolerances as in benchmarks/gpu.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from efficell_app.core.images import ImageData, model_input, read_image
from efficell_app.core.metrics import average_precision

pytestmark = pytest.mark.cuda

# CPU fp32 is the reference. cuDNN convolutions run in TF32 by default, hence the fp32 margin.
TOL = {"fp32": (0.99, 1e-2), "bf16": (0.95, 0.1)}  # (F1@0.5 at least, max abs probability difference at most)


def _f1(ref: np.ndarray, got: np.ndarray) -> float:
    return float(average_precision(ref, got, (0.5,))["pooled"][0.5].f1)


@pytest.fixture(scope="module")
def images(dsb_pairs_module, phase_pairs_module) -> list[ImageData]:  # noqa: ANN001
    return [read_image(dsb_pairs_module[0][0]), read_image(phase_pairs_module[0][0])]


@pytest.fixture(scope="module")
def dsb_pairs_module() -> list[tuple[Path, Path]]:
    d = Path(__file__).resolve().parents[1] / "data" / "dsb2018_fluo"
    return [(p, d / "masks" / p.name) for p in sorted((d / "images").glob("*.tif"))]


@pytest.fixture(scope="module")
def phase_pairs_module() -> list[tuple[Path, Path]]:
    d = Path(__file__).resolve().parents[1] / "data" / "usiigaci_phase"
    return [(p, d / "masks" / p.name) for p in sorted((d / "images").glob("*.tif"))]


@pytest.fixture(scope="module")
def cpu_results(images: list[ImageData]) -> list:
    from efficell_app.core.pipeline import Segmenter

    seg = Segmenter.load(None, device="cpu", precision="fp32")
    return [(seg.segment(img, diameter=seg.target_diameter), seg.predictor.predict(model_input(img, seg.meta.channels)))
            for img in images]


def _big(images: list[ImageData], size: int = 1024) -> ImageData:
    """A size x size real image (the phase-contrast tile, reflected): 9 tiles of the built-in model."""
    a = images[1].data[0]
    return ImageData(np.pad(a, ((0, size - a.shape[0]), (0, size - a.shape[1])), mode="reflect")[None])


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_same_labels_as_the_cpu(gpu: str, images: list[ImageData], cpu_results: list, precision: str) -> None:
    from efficell_app.core.pipeline import Segmenter

    seg = Segmenter.load(None, device=gpu, precision=precision)
    f1_min, prob_max = TOL[precision]
    for img, (ref, (ref_prob, ref_geo)) in zip(images, cpu_results):
        res = seg.segment(img, diameter=seg.target_diameter)
        prob, geo = seg.predictor.predict(model_input(img, seg.meta.channels))
        assert prob.dtype == np.float32 and prob.shape == ref_prob.shape
        assert np.abs(prob - ref_prob).max() <= prob_max and np.abs(geo - ref_geo).max() <= prob_max
        assert _f1(ref.labels, res.labels) >= f1_min
        assert res.settings["precision"] == (precision if gpu != "cpu" else "fp32" if precision == "fp32" else "bf16")


def test_tiles_are_blended_on_the_gpu(real_cuda: str, images: list[ImageData]) -> None:
    """The accumulators live on the GPU; what comes back is the final maps only."""
    from efficell_app.core.pipeline import Segmenter

    seg = Segmenter.load(None, device=real_cuda)
    pred = seg.predictor
    x = model_input(_big(images), seg.meta.channels)
    assert pred._staging_device(10 * 4 * x.shape[1] * x.shape[2]).startswith("cuda")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    prob, geo = pred.predict(x)
    # 9 tiles blended: the image and the 7 accumulator planes were on the GPU at once
    assert torch.cuda.max_memory_allocated() >= 10 * 4 * x.shape[1] * x.shape[2]
    assert prob.shape == (3, *x.shape[1:]) and np.isfinite(prob).all() and np.isfinite(geo).all()
    np.testing.assert_allclose(prob.sum(0), 1.0, atol=1e-3)


def test_forced_out_of_memory_shrinks_the_batch_then_falls_back_to_the_cpu(real_cuda: str, images: list[ImageData]) -> None:
    from efficell_app.core.pipeline import Segmenter

    img = _big(images)
    seg = Segmenter.load(None, device=real_cuda, batch_size=8)
    d = seg.target_diameter
    ref = seg.segment(img, diameter=d)
    seg.predictor.batch_size = 1
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    seg.segment(img, diameter=d)
    peak1 = torch.cuda.max_memory_allocated()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    total = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
    idx = torch.cuda.current_device()
    try:
        # Room for a batch of 1 (twice over), not for 8: the batch shrinks and the GPU finishes.
        torch.cuda.set_per_process_memory_fraction((base + 2 * (peak1 - base) + 64 * 2**20) / total, idx)
        seg.predictor.batch_size = 8
        res = seg.segment(img, diameter=d)
        assert any("batch reduced" in n for n in res.notes), res.notes
        assert seg.predictor.device.startswith("cuda"), res.notes  # retried outside the handler: memory was freed
        assert _f1(ref.labels, res.labels) >= 0.99
        # Room for nothing: the CPU finishes the image, and the user is told.
        torch.cuda.empty_cache()
        torch.cuda.set_per_process_memory_fraction((torch.cuda.memory_allocated() + 2**20) / total, idx)
        res = seg.segment(img, diameter=d)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, idx)
    assert any("continuing on the CPU" in n for n in res.notes) and seg.predictor.device == "cpu"
    assert _f1(ref.labels, res.labels) >= TOL["bf16"][0]  # bf16 on the GPU against fp32 on the CPU


def test_training_validation_never_moves_the_adapters_off_the_gpu(gpu: str, random_segmenter) -> None:  # noqa: ANN001
    """Validation shares the adapters being trained: an out-of-memory error there is the caller's, not a move."""
    from efficell_app.core.inference import DensePredictor

    pred = DensePredictor(random_segmenter.model.to(gpu), device=gpu, tile=32, patch=16, cpu_fallback=False, batch_size=2)
    calls: list[int] = []

    def oom(batch: torch.Tensor) -> None:
        calls.append(len(batch))
        raise torch.OutOfMemoryError("CUDA out of memory (test)")

    pred._forward = oom
    pred.device = "cuda"  # on the CPU stand-in too: the fallback rules are what is tested
    pred._staging_device = lambda nbytes: "cpu"
    with pytest.raises(torch.OutOfMemoryError):
        pred.predict(np.zeros((3, 32, 64), np.float32))
    assert calls == [2, 1] and pred.batch_size == 1 and pred.device == "cuda"
    assert next(random_segmenter.model.parameters()).device.type == gpu


def test_feature_cache_on_the_gpu_matches_the_cpu(gpu: str) -> None:
    from efficell_app.core.encoders import build_encoder
    from efficell_app.core.feature_cache import FeatureCache

    torch.manual_seed(0)
    enc = build_encoder("efficell_compact", weights="auto")
    tile = np.random.default_rng(1).random((3, 128, 128)).astype(np.float32)
    ref = FeatureCache(enc, device="cpu").get_tile(tile, k=3)
    cache = FeatureCache(enc.to(gpu), device=gpu)
    assert cache.precision == ("bf16" if gpu.startswith("cuda") else "fp32")
    got = cache.get_tile(tile, k=3)
    for a, b in zip(ref, got):
        a32, b32 = a.astype(np.float32), b.astype(np.float32)
        assert np.abs(a32 - b32).max() <= 0.05 * (np.abs(a32).max() + 1e-6)
    assert cache.stats.encoder_seconds > 0


def test_few_shot_training_on_the_gpu_records_it(gpu: str, dsb_pairs_module, tmp_path: Path) -> None:  # noqa: ANN001
    from efficell_app.core.device import describe_device
    from efficell_app.core.encoders import build_encoder
    from efficell_app.core.model.adapter_io import read_adapter_meta
    from efficell_app.core.pipeline import Segmenter
    from efficell_app.core.training import TrainConfig, train_adapter

    torch.manual_seed(0)
    enc = build_encoder("efficell_compact", weights=None, small=True, device=gpu)
    out = tmp_path / "gpu.safetensors"
    cfg = TrainConfig(train=dsb_pairs_module[:2], out=out, encoder=enc, init_adapter=None, epochs=2, crop=64,
                      target_diameter=16.0, device=gpu)
    events = list(train_adapter(cfg))
    assert events[-1].phase == "done" and out.is_file()
    meta = read_adapter_meta(out)
    assert meta.training["device"] == gpu and meta.training["device_info"]["name"] == describe_device(gpu)["name"]
    assert meta.training["batch"] == (8 if gpu == "cuda" else 4)
    # written from the GPU, read back anywhere
    from efficell_app.core.model import EffiCellModel
    from efficell_app.core.model.adapter_io import load_adapter

    ad, m, sha = load_adapter(out, "efficell_compact", meta.encoder_sha256)
    seg = Segmenter(EffiCellModel(enc.to("cpu"), ad), m, sha, out, "cpu")
    assert seg.segment(read_image(dsb_pairs_module[0][0]), diameter=16.0).labels.shape


def test_overlapped_stream_equals_segment_on_the_gpu(gpu: str, images: list[ImageData]) -> None:
    from efficell_app.core.pipeline import Segmenter
    from efficell_app.core.pipelined import post_processing_pool, segment_stream

    seg = Segmenter.load(None, device=gpu)
    d = seg.target_diameter
    with post_processing_pool(2) as pool:
        items = list(segment_stream(seg, images * 2, d, pool=pool))
    for img, it in zip(images * 2, items):
        assert it.ok, it.error
        np.testing.assert_array_equal(it.result.labels, seg.segment(img, diameter=d).labels)
        assert it.result.settings["device_info"]["type"] == gpu.split(":")[0]


def test_the_gpu_is_named_everywhere(gpu: str, images: list[ImageData], tmp_path: Path) -> None:
    import json

    from efficell_app.cli.info import collect
    from efficell_app.core.batch import RUN_FILE, segment_files
    from efficell_app.core.device import describe_device, device_text
    from efficell_app.core.export import write_label_tiff
    from efficell_app.core.pipeline import Segmenter

    d = describe_device(gpu)
    if gpu == "cuda":
        assert d["memory_gib"] > 1 and d["name"] and device_text(gpu) == f"GPU: {d['name']} ({d['memory_gib']:.0f} GiB)"
        assert collect()["device"]["name"] == d["name"]
    seg = Segmenter.load(None, device=gpu)
    p = tmp_path / "in.tif"
    write_label_tiff(images[0].data[0].astype(np.uint16), p)
    list(segment_files([p], tmp_path / "out", seg))
    rec = json.loads((tmp_path / "out" / RUN_FILE).read_text())["settings"]
    assert rec["device_info"]["name"] == d["name"]
