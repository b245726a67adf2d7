"""The compute device: choice, description (window, `efficell info`, run records) and precision."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from efficell_app.core import device as devmod
from efficell_app.core.device import (
    autocast_dtype,
    choose_device,
    describe_device,
    device_text,
    precision_name,
)


def _fake_h200(monkeypatch: pytest.MonkeyPatch, bf16: bool = True) -> None:
    props = types.SimpleNamespace(name="NVIDIA H200", total_memory=141 * 2**30, major=9, minor=0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: props.name)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)


def test_choice_refuses_what_is_absent_or_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    assert choose_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no CUDA GPU"):
        choose_device("cuda")
    with pytest.raises(ValueError, match="unknown device"):
        choose_device("tpu")
    _fake_h200(monkeypatch)
    assert choose_device("auto") == "cuda" and choose_device("cuda:0") == "cuda:0"
    with pytest.raises(ValueError, match="1 CUDA GPU"):
        choose_device("cuda:3")


def test_the_gpu_is_described_by_name_and_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_h200(monkeypatch)
    d = describe_device("auto")
    assert d["device"] == "cuda:0" and d["name"] == "NVIDIA H200" and d["memory_gib"] == 141.0
    assert d["capability"] == "9.0" and d["bf16"] is True
    assert device_text("auto") == device_text("cuda:0") == "GPU: NVIDIA H200 (141 GiB)"
    assert device_text("cpu").startswith("CPU (")


def test_cpu_description_and_an_unavailable_preference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    d = describe_device("cpu")
    assert d["type"] == "cpu" and d["name"] and d["cpu_threads"] >= 1 and "note" not in d
    d = describe_device("cuda")  # asked for, absent: the CPU it falls back to, and why
    assert d["type"] == "cpu" and "no CUDA GPU" in d["note"]


def test_precision_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    assert autocast_dtype("cpu") is None and precision_name("cpu") == "fp32"
    assert autocast_dtype("cpu", "bf16") is torch.bfloat16  # allowed on a CPU: checks the mixed-precision path
    with pytest.raises(ValueError, match="unknown precision"):
        autocast_dtype("cpu", "int8")
    _fake_h200(monkeypatch)
    assert precision_name("cuda") == "bf16" and precision_name("cuda", "fp32") == "fp32"
    _fake_h200(monkeypatch, bf16=False)  # e.g. a Turing card
    assert precision_name("cuda") == "fp16"
    with pytest.raises(ValueError, match="does not support bfloat16"):
        autocast_dtype("cuda", "bf16")


def test_out_of_memory_is_recognised() -> None:
    assert devmod.is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert devmod.is_out_of_memory(RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate"))
    assert not devmod.is_out_of_memory(RuntimeError("shape mismatch"))
    assert not devmod.is_out_of_memory(ValueError("out of memory"))


def test_bf16_autocast_runs_the_whole_model_and_stays_close(random_segmenter) -> None:  # noqa: ANN001
    """The mixed-precision code path (casts inside the encoder and adapters, float32 maps out), on a CPU."""
    from efficell_app.core.inference import DensePredictor

    x = np.random.default_rng(0).random((3, 100, 90), dtype=np.float32)
    model = random_segmenter.model
    ref = DensePredictor(model, tile=64, patch=16, precision="fp32").predict(x)
    got = DensePredictor(model, tile=64, patch=16, precision="bf16").predict(x)
    for a, b in zip(ref, got):
        assert b.dtype == np.float32 and b.shape == a.shape
        assert 0 < np.abs(a - b).max() < 0.1  # bf16 did run (not identical), and stays close
    with pytest.raises(ValueError, match="unknown precision"):
        DensePredictor(model, precision="half")


def test_results_record_the_device_and_precision(random_segmenter, dsb_pairs) -> None:  # noqa: ANN001
    from efficell_app.core.images import read_image

    res = random_segmenter.segment(read_image(dsb_pairs[0][0]), diameter=16.0)
    assert res.settings["device"] == "cpu" and res.settings["precision"] == "fp32"
    assert res.settings["device_info"]["type"] == "cpu" and res.settings["device_info"]["name"]


def test_efficell_info_names_the_device_and_its_precision(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from efficell_app.cli.info import _print_text, device_info

    _fake_h200(monkeypatch)
    d = device_info()
    assert d["name"] == "NVIDIA H200" and d["memory_gib"] == 141.0 and d["precision"] == "bf16"
    _print_text({"app_version": "0", "python": "3", "torch": "t", "timm": "m", "device": d, "threads": 2,
                 "weights_dir": "w", "encoders": []})
    assert "device: cuda:0 (NVIDIA H200, 141.0 GiB, compute capability 9.0); inference precision bf16" in capsys.readouterr().out
