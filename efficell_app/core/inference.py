"""Dense prediction over whole images: tiling at the encoder's native size with overlap, blending
of the dense maps (never of instances) across tiles, batching, mixed precision, OOM fallback.

The device choice lives in :mod:`.device` (``choose_device`` and ``device_report`` are imported
here too, where older code looks for them).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .cancel import CancelToken
from .device import choose_device, device_report  # noqa: F401 - their former home

__all__ = ["DensePredictor", "TilePlan", "blend_window", "choose_device", "device_report", "plan_tiles"]

log = logging.getLogger(__name__)


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
    """Runs an EffiCell model over an image of any size; returns blended probability and geometry maps.

    On a GPU the image is uploaded once, its tiles are cut, batched and blended on the GPU (each
    tile's output never crosses to the host), and only the final maps come back. ``precision``
    ("auto", "fp32", "bf16", "fp16"; see :func:`.device.autocast_dtype`) sets autocast.
    A GPU out-of-memory error halves the batch, then (``cpu_fallback``) moves the model to the
    CPU; each step is noted in ``notes`` for the user.
    """

    # The accumulators stay on the GPU while they take at most this share of its free memory.
    GPU_ACCUMULATOR_SHARE = 0.25

    def __init__(self, model, device: str = "cpu", tile: int = 512, patch: int = 16, overlap: int | None = None,  # noqa: ANN001
                 batch_size: int | None = None, precision: str = "auto", cpu_fallback: bool = True) -> None:
        from .device import autocast_dtype

        autocast_dtype(device, precision)  # an unknown precision fails here, not at the first image
        self.model = model.eval().to(device)
        self.device = device
        self.tile = tile
        self.patch = patch
        self.overlap = overlap if overlap is not None else max(patch * 2, (tile // 8) // patch * patch)
        self.batch_size = batch_size or (4 if device.startswith("cuda") else 1)
        self.precision = precision
        self.cpu_fallback = cpu_fallback
        self.notes: list[str] = []

    def _forward(self, batch):  # noqa: ANN001, ANN202 - (B,3,h,w) tensor -> (prob, geo) float32 tensors on self.device
        import torch

        from .device import autocast

        x = batch.to(self.device, torch.float32)
        with torch.inference_mode(), autocast(self.device, self.precision):
            out = self.model(x)
        return torch.softmax(out["sem"].float(), 1), out["geo"].float()

    def run_batch(self, batch):  # noqa: ANN001, ANN201 - tensor -> (prob, geo) tensors
        """:meth:`_forward` with the out-of-memory fallback: smaller batches, then (``cpu_fallback``) the CPU."""
        import torch

        from .device import free_cached_memory, is_out_of_memory

        try:
            return self._forward(batch)
        except RuntimeError as exc:  # torch.OutOfMemoryError is one
            if not (self.device.startswith("cuda") and is_out_of_memory(exc)) or (len(batch) == 1 and not self.cpu_fallback):
                raise
        # Retried here, outside the handler: the exception's traceback still references the failed
        # forward's activations, so memory freed inside the handler would not be free yet.
        free_cached_memory(self.device)
        if len(batch) > 1:
            half = len(batch) // 2
            self.batch_size = max(1, half)
            self._note(f"GPU out of memory: batch reduced to {self.batch_size}")
            a, b = self.run_batch(batch[:half]), self.run_batch(batch[half:])
            dev = b[0].device  # the second half may have ended on the CPU: join there
            return torch.cat([a[0].to(dev), b[0]]), torch.cat([a[1].to(dev), b[1]])
        gpu = self.device
        self._note("GPU out of memory: continuing on the CPU")
        self.device = "cpu"
        self.model.to("cpu")
        free_cached_memory(gpu)
        return self._forward(batch)

    def _note(self, text: str) -> None:
        if text not in self.notes:  # once per image, however many batches it hit
            self.notes.append(text)
            log.warning("%s", text)

    def _forward_safe(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`run_batch` for a numpy batch (what the strip code feeds): numpy float32 out."""
        import torch

        prob, geo = self.run_batch(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)))
        return prob.cpu().numpy(), geo.cpu().numpy()

    def _staging_device(self, nbytes: int) -> str:
        """Where the image and the accumulators of ``nbytes`` live: the GPU when they fit easily, else the host."""
        import torch

        from .device import cuda_index

        if not self.device.startswith("cuda"):
            return "cpu"
        free, _total = torch.cuda.mem_get_info(cuda_index(self.device))
        return self.device if nbytes <= self.GPU_ACCUMULATOR_SHARE * free else "cpu"

    def _stage(self, x: np.ndarray, win: np.ndarray, stage: str):  # noqa: ANN202 - (image, window, accumulators)
        """The padded image, the blend window and zeroed accumulators (prob 3, geo 3, weight 1) on ``stage``;
        on the host when the GPU has no room for them (its free memory does not show a per-process limit)."""
        import torch

        from .device import is_out_of_memory

        def make(dev: str):  # noqa: ANN202
            return (torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(dev), torch.from_numpy(win).to(dev),
                    torch.zeros((7, *x.shape[1:]), dtype=torch.float32, device=dev))

        if stage == "cpu":
            return make("cpu")
        try:
            return make(stage)
        except RuntimeError as exc:
            if not is_out_of_memory(exc):
                raise
        return make("cpu")

    def predict(self, x: np.ndarray, cancel: CancelToken | None = None,
                progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``x``: (3, H, W) float32 normalised image at model scale -> (prob (3,H,W), geo (3,H,W)) float32."""
        import torch

        _, h, w = x.shape
        plan = plan_tiles(h, w, self.tile, self.patch, self.overlap)
        th, tw = plan.tile
        # Reflect-pad images smaller than one tile (and odd sizes) up to the tile grid.
        ph, pw = max(h, th), max(w, tw)
        if (ph, pw) != (h, w):
            mode = "reflect" if (ph - h < h and pw - w < w) else "constant"
            x = np.pad(x, ((0, 0), (0, ph - h), (0, pw - w)), mode=mode)
        win_np = blend_window(th, tw, self.overlap if plan.n_tiles > 1 else 0)
        with torch.inference_mode():
            src, win, acc = self._stage(x, win_np, self._staging_device(10 * 4 * ph * pw))
            stage = acc.device
            coords = [(y, x0) for y in plan.starts_y for x0 in plan.starts_x]
            done = 0
            while done < len(coords):  # not range(..., batch_size): an OOM retry shrinks the batch mid-way
                if cancel is not None:
                    cancel.raise_if_cancelled()
                chunk = coords[done:done + self.batch_size]
                batch = torch.stack([src[:, y:y + th, x0:x0 + tw] for y, x0 in chunk])
                prob, geo = self.run_batch(batch)
                prob, geo = prob.to(stage), geo.to(stage)
                for (y, x0), p, g in zip(chunk, prob, geo):
                    acc[0:3, y:y + th, x0:x0 + tw] += p * win
                    acc[3:6, y:y + th, x0:x0 + tw] += g * win
                    acc[6, y:y + th, x0:x0 + tw] += win
                done += len(chunk)
                if progress is not None:
                    progress(done, len(coords))
            acc[:6] /= acc[6:7].clamp_min(1e-6)
            out = acc[:6, :h, :w].cpu().numpy()  # on a CPU a view: no copy of the maps
        return out[:3], out[3:6]
