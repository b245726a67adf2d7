"""The compute device: which one to use, what it is (for the window, ``efficell info`` and every
run record), the numeric precision of inference on it, and the few helpers that GPU work needs
(its work is asynchronous: clocks must wait for it; its memory has a peak worth reporting).

torch is imported inside the functions, so importing this module stays cheap (the window
imports it before torch is loaded).
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# "auto": bf16 on a CUDA GPU that supports it (fp16 on older ones), fp32 elsewhere.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


class DeviceUnavailable(ValueError):
    """A device was asked for that this machine does not have (or does not know). The message names
    no command-line option: the window shows it too; the command line adds ``--device`` itself."""

    def __init__(self, device: str, reason: str) -> None:
        super().__init__(reason)
        self.device = device


def choose_device(pref: str = "auto") -> str:
    """``auto`` picks CUDA, then Apple MPS, then CPU. An explicit choice that is absent raises
    :class:`DeviceUnavailable` (a ValueError)."""
    import torch

    pref = (pref or "auto").lower()
    if pref == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if _mps_available():
            return "mps"
        return "cpu"
    if pref.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceUnavailable(pref, f"no CUDA GPU found (torch {torch.__version__})")
    if pref == "mps" and not _mps_available():
        raise DeviceUnavailable(pref, "Apple MPS is not available on this machine")
    if pref not in ("cpu", "mps") and not pref.startswith("cuda"):
        raise DeviceUnavailable(pref, f"unknown device '{pref}' (auto, cpu, cuda, cuda:N, mps)")
    if pref.startswith("cuda:"):
        try:
            idx = int(pref.split(":", 1)[1])
        except ValueError:
            raise DeviceUnavailable(pref, f"unknown device '{pref}' (auto, cpu, cuda, cuda:N, mps)") from None
        if not 0 <= idx < torch.cuda.device_count():
            raise DeviceUnavailable(pref, f"this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    return pref


def _mps_available() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def cpu_name() -> str:
    """The processor's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cuda_index(device: str) -> int:
    """The index of a CUDA device string ('cuda' is the current device). torch.cuda functions are given
    this int: several of them (``set_per_process_memory_fraction``, ``mem_get_info`` in older torch)
    reject ``torch.device('cuda')``, which has no index."""
    import torch

    return int(device.split(":", 1)[1]) if ":" in device else torch.cuda.current_device()


def describe_device(device: str = "auto") -> dict[str, Any]:
    """What ``device`` (a preference: auto, cpu, cuda, cuda:N, mps) is on this machine, JSON-ready.

    ``{"device": "cuda:0", "type": "cuda", "name": "NVIDIA H200", "memory_gib": 139.8,
    "capability": "9.0", "cuda": "13.0", "bf16": true, "torch": ..., "cpu_threads": ..., "cpu_cores": ...}``;
    for the CPU ``name`` is the processor. A preference this machine cannot satisfy is described
    as the CPU it falls back to, with a ``note``.
    """
    import torch

    note = None
    try:
        dev = choose_device(device)
    except ValueError as exc:
        dev, note = "cpu", str(exc)
    info: dict[str, Any] = {"device": dev, "type": dev.split(":")[0], "torch": torch.__version__,
                            "cpu_threads": torch.get_num_threads(), "cpu_cores": os.cpu_count()}
    if dev.startswith("cuda"):
        idx = cuda_index(dev)
        p = torch.cuda.get_device_properties(idx)
        info.update(device=f"cuda:{idx}", name=p.name, memory_gib=round(p.total_memory / 2**30, 1),
                    capability=f"{p.major}.{p.minor}", cuda=torch.version.cuda,
                    bf16=bool(torch.cuda.is_bf16_supported()), count=torch.cuda.device_count())
    elif dev == "mps":
        info["name"] = "Apple GPU (Metal)"
    else:
        info["name"] = cpu_name()
    if note:
        info["note"] = note
    return info


def device_text(device: str = "auto", threads: int | None = None) -> str:
    """One line for the status bar: 'GPU: NVIDIA H200 (140 GiB)', 'GPU: Apple (MPS)' or 'CPU (2 threads, 2 cores)'.

    ``threads``: the torch threads the caller's work runs with (the window's preference), named
    instead of torch's current count."""
    d = describe_device(device)
    if d["type"] == "cuda":
        return f"GPU: {d['name']} ({d['memory_gib']:.0f} GiB)"
    if d["type"] == "mps":
        return "GPU: Apple (MPS)"
    return cpu_text(threads or d["cpu_threads"], d["cpu_cores"])


def cpu_text(threads: int, cores: int | None = None) -> str:
    """'CPU (3 threads, 4 cores)' (``cores``: this machine's, by default)."""
    cores = cores or os.cpu_count()
    return f"CPU ({threads} thread{'s' if threads != 1 else ''}, {cores} cores)"


def quick_device_text(device: str, threads: int) -> str:
    """The device in words at once, without importing torch (a second or more): the CPU when it
    is chosen or no GPU driver is installed (Linux), else that a GPU is being looked for.
    :func:`device_text` (off the window's thread) has the last word."""
    import shutil
    import sys

    if (device or "auto") == "cpu":
        return cpu_text(threads)
    nvidia = os.path.exists("/proc/driver/nvidia/version") or shutil.which("nvidia-smi") is not None
    if sys.platform.startswith("linux") and not nvidia:
        return cpu_text(threads)
    return "Looking for a GPU…"


def gpu_names() -> list[str]:
    """Names of the CUDA GPUs (index order), for the device choice in the settings."""
    import torch

    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def device_report() -> dict[str, Any]:
    """What the user's machine offers (the self-test's report): torch build, CUDA/MPS, GPU names and memory."""
    import torch

    rep: dict[str, Any] = {"torch": torch.__version__, "cuda_build": torch.version.cuda,
                           "cpu_threads": torch.get_num_threads(), "cuda_available": torch.cuda.is_available(),
                           "gpus": [], "mps_available": _mps_available()}
    if rep["cuda_available"]:
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            rep["gpus"].append({"index": i, "name": p.name, "memory_gb": round(p.total_memory / 2**30, 1)})
    rep["device"] = choose_device("auto")
    return rep


# ----------------------------------------------------------------------------- precision


def autocast_dtype(device: str, precision: str = "auto"):  # noqa: ANN201 - torch.dtype | None
    """The dtype matrix work runs in under autocast on ``device``, or None for plain float32.

    ``auto`` is bf16 on a CUDA GPU (fp16 where bf16 is not supported) and fp32 elsewhere: CPUs
    gain little from bf16 and the CPU results stay the reference. ``bf16``/``fp16`` may be asked
    for on a CPU too (autocast supports bf16 there), which lets the mixed-precision path be
    checked without a GPU.
    """
    import torch

    p = (precision or "auto").lower()
    if p not in PRECISIONS:
        raise ValueError(f"unknown precision '{precision}' ({', '.join(PRECISIONS)})")
    kind = device.split(":")[0]
    if p == "fp32" or (p == "auto" and kind != "cuda"):
        return None
    if p == "fp16":
        return torch.float16
    if kind == "cuda" and not torch.cuda.is_bf16_supported():
        if p == "bf16":
            raise ValueError(f"precision bf16: {torch.cuda.get_device_name(cuda_index(device))} does not support bfloat16")
        return torch.float16
    return torch.bfloat16


def precision_name(device: str, precision: str = "auto") -> str:
    """What ``precision`` resolves to on ``device``: 'fp32', 'bf16' or 'fp16' (recorded with results)."""
    import torch

    dt = autocast_dtype(device, precision)
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dt]


@contextlib.contextmanager
def autocast(device: str, precision: str = "auto") -> Iterator[None]:
    """Mixed-precision region for ``precision`` on ``device`` (nothing for fp32)."""
    import torch

    dt = autocast_dtype(device, precision)
    if dt is None:
        yield
        return
    with torch.autocast(device.split(":")[0], dtype=dt):
        yield


# ----------------------------------------------------------------------------- GPU helpers


def synchronize(device: str) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously: a host clock read before this is wrong)."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(cuda_index(device))
    elif device == "mps":
        torch.mps.synchronize()


def reset_peak_memory(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(cuda_index(device))


def peak_memory_gib(device: str) -> float | None:
    """Peak memory held by tensors on a CUDA device since the last reset (None elsewhere)."""
    import torch

    if not device.startswith("cuda"):
        return None
    return round(torch.cuda.max_memory_allocated(cuda_index(device)) / 2**30, 3)


def is_out_of_memory(exc: BaseException) -> bool:
    """A GPU out-of-memory error, also as the RuntimeError that cuDNN / cuBLAS raise when their workspace fails."""
    import torch

    if isinstance(exc, torch.OutOfMemoryError):
        return True
    msg = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in msg or "CUBLAS_STATUS_ALLOC_FAILED" in msg)


def free_cached_memory(device: str) -> None:
    """Give cached, unused GPU blocks back (after an out-of-memory error, before retrying smaller)."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.empty_cache()
