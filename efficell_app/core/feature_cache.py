"""Cache of frozen-encoder features for training (METHOD.md, "Making it fast").

The encoder never changes during few-shot training, so its output for a training tile and
each of its 8 dihedral transforms (flips / 90° rotations) is computed once and kept as
float16. Every training step then runs only the adapters.

Entries are keyed by a signature, as micro-sam keys its embeddings: sha256 of the image
content hash, the encoder name, the encoder weights' sha256, the tile box, the dihedral
transform, the scale, the precision the encoder ran in (when not float32) and the cache
version. They live in memory, or, for large training
sets, in ``.npy`` files named by signature in a cache folder (written atomically, read
memory-mapped), where a later training run on the same images finds them again.

The encoder runs here and nowhere else during training (under ``no_grad``: it is a
:class:`~efficell_app.core.encoders.registry.FrozenEncoder`).
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

CACHE_VERSION = 1
# Dihedral transforms in the order they are cached when fewer than 8 are affordable:
# identity, the 90° / 180° / 270° rotations, then the four reflections.
DIHEDRAL_ORDER = (0, 5, 3, 6, 1, 2, 4, 7)


def array_sha256(a: np.ndarray) -> str:
    """Content hash of an array (dtype and shape included)."""
    h = hashlib.sha256()
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()


def feature_signature(image_sha: str, encoder_name: str, weights_sha: str, box: tuple[int, int, int, int], k: int,
                      scale: float, precision: str = "fp32") -> str:
    """The cache key of one tile's features under dihedral transform ``k``.

    ``precision`` is the arithmetic the encoder ran in ('fp32', 'bf16', 'fp16'); float32 keys
    are those of the first cache version, so features cached then are found again.
    """
    parts = [image_sha, encoder_name, weights_sha, ",".join(str(int(v)) for v in box), str(int(k)),
             f"{float(scale):.6f}", f"v{CACHE_VERSION}"]
    text = "|".join(parts + ([precision] if precision != "fp32" else []))
    return hashlib.sha256(text.encode()).hexdigest()


def dihedral_box(box: tuple[int, int, int, int], shape: tuple[int, int], k: int) -> tuple[int, int, int, int]:
    """Where box ``(y0, x0, y1, x1)`` of an ``(H, W)`` array lands after dihedral transform ``k``.

    Same convention as :func:`~efficell_app.core.training_data.dihedral`: transpose (bit 2),
    then flip y (bit 1), then flip x (bit 0). So ``dihedral(k, a)[dihedral_box(b)] ==
    dihedral(k, a[b])``: a crop can be cut in the original frame and transformed alone.
    """
    y0, x0, y1, x1 = box
    h, w = shape
    if k & 4:
        y0, x0, y1, x1 = x0, y0, x1, y1
        h, w = w, h
    if k & 2:
        y0, y1 = h - y1, h - y0
    if k & 1:
        x0, x1 = w - x1, w - x0
    return y0, x0, y1, x1


def tile_boxes(h: int, w: int, tile: int, stride: int, min_side: int = 0) -> tuple[tuple[int, int], list[tuple[int, int, int, int]]]:
    """Tiles covering an ``(h, w)`` image with as little overlap as the stride grid allows.

    Each side is split into ``ceil(n / tile)`` equal tiles (a multiple of ``stride``, at most
    ``tile`` px, at least ``min_side``): a 640 px side gives two 320 px tiles, not two 512 px
    tiles overlapping by 384. An image smaller than a tile is padded.
    Returns ``((padded_h, padded_w), [boxes])``.
    """
    tile = max(stride, tile // stride * stride)
    low = max(stride, -(-min_side // stride) * stride)

    def side(n: int) -> int:
        parts = -(-n // tile)
        return min(max(-(-(-(-n // parts)) // stride) * stride, low), max(tile, low))

    th, tw = side(h), side(w)
    ph, pw = max(h, th), max(w, tw)

    def starts(n: int, t: int) -> list[int]:
        parts = -(-n // t)
        if parts <= 1:
            return [0]
        return sorted({round(i * (n - t) / (parts - 1)) for i in range(parts)})

    return (ph, pw), [(y, x, y + th, x + tw) for y in starts(ph, th) for x in starts(pw, tw)]


def pad_image(x: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Pad a (C, H, W) image at the bottom/right as inference does (reflect when possible, else zeros)."""
    h, w = x.shape[-2:]
    ph, pw = shape
    if (ph, pw) == (h, w):
        return x
    mode = "reflect" if (ph - h < h and pw - w < w) else "constant"
    return np.pad(x, ((0, 0), (0, ph - h), (0, pw - w)), mode=mode)


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    encoder_seconds: float = 0.0
    bytes_in_memory: int = 0
    files_written: int = 0


class FeatureCache:
    """Encoder features by signature, in memory or in ``cache_dir``.

    ``get(image, image_sha, box, k, scale)`` returns the features of ``image[:, box]``
    (already padded) under dihedral transform ``k``: one float16 array per encoder level,
    each ``(C_i, H'/stride, W'/stride)``, where ``(H', W')`` is the transformed tile size.
    """

    def __init__(self, encoder, device: str = "cpu", cache_dir: str | Path | None = None,  # noqa: ANN001 - FrozenEncoder
                 precision: str = "auto") -> None:
        from .device import precision_name
        from .model.adapter_io import RANDOM_WEIGHTS

        self.encoder = encoder
        self.device = device
        # The same arithmetic as inference on this device (bf16 on a GPU by default), so that
        # the adapters train on the features they will be given.
        self.precision = precision_name(device, precision)
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.encoder_name = encoder.spec.name
        self.weights_sha = encoder.weights_sha256 or RANDOM_WEIGHTS
        self.channels = tuple(int(c) for c in encoder.out_channels)
        self.stride = int(encoder.stride)
        self.stats = CacheStats()
        self.transforms_cached: list[int] = list(DIHEDRAL_ORDER)
        self._mem: dict[str, np.ndarray] = {}

    def signature(self, image_sha: str, box: tuple[int, int, int, int], k: int, scale: float) -> str:
        return feature_signature(image_sha, self.encoder_name, self.weights_sha, box, k, scale, self.precision)

    def __contains__(self, sig: str) -> bool:
        return sig in self._mem or (self.cache_dir is not None and self._file(sig).is_file())

    def _file(self, sig: str) -> Path:
        assert self.cache_dir is not None
        return self.cache_dir / f"{sig}.npy"

    def get(self, image: np.ndarray, image_sha: str, box: tuple[int, int, int, int], k: int = 0,
            scale: float = 1.0) -> list[np.ndarray]:
        """Features of tile ``box`` of ``image`` (C, H, W) under transform ``k`` (computed on a miss)."""
        sig = self.signature(image_sha, box, k, scale)
        arr = self._lookup(sig)
        if arr is None:
            y0, x0, y1, x1 = box
            arr = self._compute(image[:, y0:y1, x0:x1], k)
            self._store(sig, arr)
            arr = self._mem[sig]
        else:
            self.stats.hits += 1
        return self._split(arr)

    def get_tile(self, tile: np.ndarray, k: int = 0, scale: float = 1.0) -> list[np.ndarray]:
        """Features of a whole tile keyed by its own content (validation tiles)."""
        h, w = tile.shape[-2:]
        return self.get(tile, array_sha256(tile), (0, 0, h, w), k, scale)

    def fill(self, tiles: list[tuple[np.ndarray, str, tuple[int, int, int, int], float]],
             budget_s: float | None = None) -> Iterator[tuple[int, int]]:
        """Compute the features of every ``(image, image_sha, box, scale)`` tile under the dihedral
        transforms, yielding ``(done, total)`` after each (the caller may stop between them).

        With ``budget_s`` the number of transforms (1, 2, 4 or 8, in :data:`DIHEDRAL_ORDER`) is
        cut, after timing the first transform, to what fits in that many seconds; the transforms
        in use end up in ``transforms_cached``.
        """
        ks = list(DIHEDRAL_ORDER)
        total, done = len(tiles) * len(ks), 0
        for n_k, k in enumerate(DIHEDRAL_ORDER):
            if n_k >= len(ks):
                break
            for image, sha, box, scale in tiles:
                misses = self.stats.misses
                self.get(image, sha, box, k, scale)
                done += 1
                if budget_s is not None and n_k == 0 and self.stats.misses > misses:
                    per_pass = self.stats.encoder_seconds / self.stats.misses
                    afford = budget_s / max(per_pass * len(tiles), 1e-9)
                    ks = ks[:max(1, min(8, 2 ** int(math.log2(max(afford, 1.0)))))]
                    total = len(tiles) * len(ks)
                yield done, total
        self.transforms_cached = ks

    def _lookup(self, sig: str) -> np.ndarray | None:
        arr = self._mem.get(sig)
        if arr is not None or self.cache_dir is None:
            return arr
        f = self._file(sig)
        if not f.is_file():
            return None
        try:
            arr = np.load(f, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:  # a damaged cache file is recomputed, never trusted
            log.warning("feature cache file %s unreadable (%s); recomputing", f, exc)
            return None
        if arr.dtype != np.float16 or arr.ndim != 3 or arr.shape[0] != sum(self.channels):
            log.warning("feature cache file %s has the wrong layout; recomputing", f)
            return None
        self._mem[sig] = arr
        return arr

    def _compute(self, tile: np.ndarray, k: int) -> np.ndarray:
        import torch

        from .device import autocast
        from .training_data import dihedral_tensor

        t0 = time.perf_counter()
        x = dihedral_tensor(k, torch.from_numpy(np.ascontiguousarray(tile, dtype=np.float32)))[None].to(self.device)
        with torch.no_grad(), autocast(self.device, self.precision):
            feats = self.encoder(x)
        # .cpu() waits for the GPU, so encoder_seconds is the real time on any device
        out = torch.cat([f[0].float() for f in feats], 0).to("cpu", torch.float16).numpy()
        self.stats.encoder_seconds += time.perf_counter() - t0
        self.stats.misses += 1
        return out

    def _store(self, sig: str, arr: np.ndarray) -> None:
        if self.cache_dir is None:
            self._mem[sig] = arr
            self.stats.bytes_in_memory += arr.nbytes
            return
        from .fileio import atomic_path

        with atomic_path(self._file(sig), suffix=".npy") as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, arr, allow_pickle=False)
        self.stats.files_written += 1
        self._mem[sig] = np.load(self._file(sig), mmap_mode="r", allow_pickle=False)

    def _split(self, arr: np.ndarray) -> list[np.ndarray]:
        out, c0 = [], 0
        for c in self.channels:
            out.append(arr[c0:c0 + c])
            c0 += c
        return out

    def clear_memory(self) -> None:
        self._mem.clear()
        self.stats.bytes_in_memory = 0


def default_cache_dir() -> Path:
    """``$EFFICELL_HOME/feature_cache``, else the user cache folder."""
    import os

    home = os.environ.get("EFFICELL_HOME")
    if home:
        return Path(home) / "feature_cache"
    import platformdirs

    return Path(platformdirs.user_cache_dir("EffiCell", appauthor=False)) / "features"


class CachedFeatureModel:
    """Looks like an ``EffiCellModel`` to :class:`~efficell_app.core.inference.DensePredictor`,
    but takes encoder features from a :class:`FeatureCache` (keyed by tile content), so that
    validating during training runs only the adapters, through the real tiling and blending."""

    def __init__(self, cache: FeatureCache, adapters, features_only: bool = False) -> None:  # noqa: ANN001 - EffiCellAdapters
        self.cache = cache
        self.adapters = adapters
        self.encoder = cache.encoder
        self.features_only = features_only  # only fill the cache (outputs are zeros)

    def eval(self) -> CachedFeatureModel:
        self.adapters.eval()
        return self

    def to(self, device: str) -> CachedFeatureModel:  # noqa: ARG002 - adapters already live on the training device
        return self

    def __call__(self, x):  # noqa: ANN001, ANN204 - (B,3,H,W) tensor -> adapter outputs
        import torch

        tiles = x.detach().float().cpu().numpy()
        per = [self.cache.get_tile(t) for t in tiles]
        if self.features_only:
            zeros = torch.zeros((x.shape[0], 3, *x.shape[-2:]), device=x.device)
            return {"sem": zeros, "geo": zeros}
        feats = [torch.from_numpy(np.stack([p[i] for p in per])).to(x.device, torch.float32) for i in range(len(per[0]))]
        return self.adapters(feats, x.float())
