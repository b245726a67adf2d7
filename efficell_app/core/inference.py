"""Dense prediction over whole images: device choice, tiling at the encoder's native size with
overlap, blending of the dense maps (never of instances) across tiles, batching, OOM fallback."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .cancel import CancelToken

log = logging.getLogger(__name__)


def choose_device(pref: str = "auto") -> str:
    """``auto`` picks CUDA, then Apple MPS, then CPU. An explicit choice that is absent raises ValueError."""
    import torch

    pref = (pref or "auto").lower()
    if pref == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if pref.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA GPU found (torch %s)" % torch.__version__)
    if pref == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        raise ValueError("--device mps: Apple MPS is not available on this machine")
    if pref not in ("cpu", "mps") and not pref.startswith("cuda"):
        raise ValueError(f"unknown device '{pref}' (auto, cpu, cuda, cuda:N, mps)")
    return pref


def device_report() -> dict:
    """What the user's machine offers: torch build, CUDA/MPS, GPU names and memory, CPU threads."""
    import torch

    rep = {"torch": torch.__version__, "cuda_build": torch.version.cuda, "cpu_threads": torch.get_num_threads(),
           "cuda_available": torch.cuda.is_available(), "gpus": [],
           "mps_available": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())}
    if rep["cuda_available"]:
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            rep["gpus"].append({"index": i, "name": p.name, "memory_gb": round(p.total_memory / 2**30, 1)})
    rep["device"] = choose_device("auto")
    return rep


@dataclass(frozen=True)
class TilePlan:
    tile: tuple[int, int]
    starts_y: tuple[int, ...]
    starts_x: tuple[int, ...]

    @property
    def n_tiles(self) -> int:
        return len(self.starts_y) * len(self.starts_x)


def _starts(n: int, tile: int, overlap: int) -> tuple[int, ...]:
    if n <= tile:
        return (0,)
    step = max(tile - overlap, 1)
    s = list(range(0, n - tile, step)) + [n - tile]
    return tuple(sorted(set(s)))


def plan_tiles(h: int, w: int, tile: int, patch: int, overlap: int) -> TilePlan:
    """Tiles of at most ``tile`` px (a multiple of ``patch``), overlapping by ``overlap`` px, covering (h, w)."""
    th = min(tile, -(-h // patch) * patch)
    tw = min(tile, -(-w // patch) * patch)
    return TilePlan((th, tw), _starts(max(h, th), th, overlap), _starts(max(w, tw), tw, overlap))


def blend_window(th: int, tw: int, overlap: int) -> np.ndarray:
    """Weights that fall linearly to ~0 over ``overlap`` px at each tile edge (so tiles cross-fade)."""
    def ramp(n: int) -> np.ndarray:
        r = np.ones(n, np.float32)
        m = min(overlap, n // 2)
        if m > 0:
            edge = (np.arange(m, dtype=np.float32) + 0.5) / m
            r[:m] = edge
            r[n - m:] = edge[::-1]
        return r
    return np.outer(ramp(th), ramp(tw))


class DensePredictor:
    """Runs an EffiCell model over an image of any size; returns blended probability and geometry maps."""

    def __init__(self, model, device: str = "cpu", tile: int = 512, patch: int = 16, overlap: int | None = None,  # noqa: ANN001
                 batch_size: int | None = None, amp: bool = True) -> None:
        self.model = model.eval().to(device)
        self.device = device
        self.tile = tile
        self.patch = patch
        self.overlap = overlap if overlap is not None else max(patch * 2, (tile // 8) // patch * patch)
        self.batch_size = batch_size or (4 if device.startswith("cuda") else 1)
        self.amp = amp
        self.notes: list[str] = []

    def _forward(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        x = torch.from_numpy(batch).to(self.device)
        with torch.inference_mode():
            if self.amp and self.device.startswith("cuda"):
                dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
                with torch.autocast("cuda", dtype=dtype):
                    out = self.model(x)
            else:
                out = self.model(x)
            prob = torch.softmax(out["sem"].float(), 1)
            geo = out["geo"].float()
        return prob.cpu().numpy(), geo.cpu().numpy()

    def _forward_safe(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """On GPU out-of-memory: retry with smaller batches, then on the CPU, and say so."""
        import torch

        try:
            return self._forward(batch)
        except torch.OutOfMemoryError:
            if not self.device.startswith("cuda"):
                raise
            torch.cuda.empty_cache()
            if len(batch) > 1:
                self.batch_size = max(1, len(batch) // 2)
                self.notes.append(f"GPU out of memory: batch reduced to {self.batch_size}")
                half = len(batch) // 2
                a, b = self._forward_safe(batch[:half]), self._forward_safe(batch[half:])
                return np.concatenate([a[0], b[0]]), np.concatenate([a[1], b[1]])
            self.notes.append("GPU out of memory: continuing on the CPU")
            log.warning("GPU out of memory; continuing on the CPU")
            self.device = "cpu"
            self.model.to("cpu")
            return self._forward(batch)

    def predict(self, x: np.ndarray, cancel: CancelToken | None = None,
                progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``x``: (3, H, W) float32 normalised image at model scale -> (prob (3,H,W), geo (3,H,W)) float32."""
        _, h, w = x.shape
        plan = plan_tiles(h, w, self.tile, self.patch, self.overlap)
        th, tw = plan.tile
        # Reflect-pad images smaller than one tile (and odd sizes) up to the tile grid.
        ph, pw = max(h, th), max(w, tw)
        if (ph, pw) != (h, w):
            mode = "reflect" if (ph - h < h and pw - w < w) else "constant"
            xp = np.pad(x, ((0, 0), (0, ph - h), (0, pw - w)), mode=mode)
        else:
            xp = x
        win = blend_window(th, tw, self.overlap if plan.n_tiles > 1 else 0)
        acc_p = np.zeros((3, ph, pw), np.float32)
        acc_g = np.zeros((3, ph, pw), np.float32)
        acc_w = np.zeros((ph, pw), np.float32)
        coords = [(y, x0) for y in plan.starts_y for x0 in plan.starts_x]
        done = 0
        while done < len(coords):  # not range(..., batch_size): an OOM retry shrinks the batch mid-way
            if cancel is not None:
                cancel.raise_if_cancelled()
            chunk = coords[done:done + self.batch_size]
            batch = np.stack([xp[:, y:y + th, x0:x0 + tw] for y, x0 in chunk]).astype(np.float32)
            prob, geo = self._forward_safe(batch)
            for (y, x0), p, g in zip(chunk, prob, geo):
                acc_p[:, y:y + th, x0:x0 + tw] += p * win
                acc_g[:, y:y + th, x0:x0 + tw] += g * win
                acc_w[y:y + th, x0:x0 + tw] += win
            done += len(chunk)
            if progress is not None:
                progress(done, len(coords))
        acc_w = np.maximum(acc_w, 1e-6)
        acc_p /= acc_w
        acc_g /= acc_w
        return acc_p[:, :h, :w], acc_g[:, :h, :w]
