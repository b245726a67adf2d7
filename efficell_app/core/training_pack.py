"""A compact, self-contained copy of the built-in model's training + validation data (the "pack").

The built-in recipe always reads its data from a pack, on the CPU here and on a GPU machine that
``../shared`` does not reach (the pack travels with the repository in an ignored folder):

    python -m efficell_app.core.training_pack --data ../shared/data --out work/pack_v2

What it holds, per image of the train and validation parts of split v2 (never the test part):

- the image as lossless WebP, 8-bit (uint16 phase-contrast images mapped linearly from their own
  min..max, which the whole-image percentile normalisation makes immaterial), **shrunk** when its
  cells are larger than the recipe ever needs them: to ``min(1, MAX_SCALE * target / diameter)``
  of its size, so the largest scale the recipe samples is still at or below the stored resolution;
- the instance labels at the same size (nearest neighbour), uint16, lzma-compressed;
- ``index.json``: dataset, stem, split part, original and stored size, the shrink factor.

Measured on split v2 (557 images): 30.8 MiB, against 117 MB for ``../shared/data`` as TIFF.
"""

from __future__ import annotations

import io
import json
import logging
import lzma
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .images import ImageData

log = logging.getLogger(__name__)

PACK_VERSION = 1
TARGET_DIAMETER = 24.0  # the built-in model's cell size (px): every packed image is rescaled to it
MAX_SCALE = 1.4  # the recipe's largest scale jitter (x1.35) never needs pixels the pack dropped
PARTS = ("train", "validation")


@dataclass
class PackedPair:
    dataset: str
    stem: str
    part: str
    image: ImageData  # (C, H, W) uint8 at the stored size
    labels: np.ndarray  # (H, W) int32 at the stored size
    shrink: float  # stored size / original size (<= 1)


def _to_uint8(data: np.ndarray) -> np.ndarray:
    if data.dtype == np.uint8:
        return data
    lo, hi = float(data.min()), float(data.max())
    if hi <= lo:
        return np.zeros(data.shape, np.uint8)
    return np.clip((data.astype(np.float64) - lo) * (255.0 / (hi - lo)) + 0.5, 0, 255).astype(np.uint8)


def _shrink(img: np.ndarray, labels: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """Anti-aliased bilinear shrink of a (C, H, W) uint8 image; nearest-neighbour labels."""
    from .training_data import resize_image, resize_labels

    small = resize_image(img.astype(np.float32), factor)
    return np.clip(np.rint(small), 0, 255).astype(np.uint8), resize_labels(labels, small.shape[1:])


def _webp(img: np.ndarray) -> bytes:
    from PIL import Image

    arr = img[0] if img.shape[0] == 1 else np.moveaxis(img, 0, -1)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, "WEBP", lossless=True, quality=100, method=4)  # method 6: 3 % smaller, 20x slower
    return buf.getvalue()


def _unwebp(data: bytes, channels: int) -> np.ndarray:
    from PIL import Image

    im = Image.open(io.BytesIO(data))
    arr = np.asarray(im.convert("L" if channels == 1 else "RGB"))
    return arr[None] if channels == 1 else np.moveaxis(arr, -1, 0)


def make_pack(data: Path, out: Path, split: dict[str, dict[str, list[str]]], target_diameter: float,
              parts: Sequence[str] = PARTS) -> dict:
    """Write the pack of ``parts`` of ``split`` to ``out`` (a new or emptied folder); -> its index."""
    from .images import read_image, read_mask
    from .training_data import object_diameter

    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for ds, by_part in split.items():
        (out / ds).mkdir(exist_ok=True)
        for part in parts:
            for stem in by_part[part]:
                img = read_image(data / ds / "images" / f"{stem}.tif")
                lab = read_mask(data / ds / "masks" / f"{stem}.tif", img.shape)
                rgb = img.rgb and img.n_channels >= 3
                raw = _to_uint8(img.data[:3] if rgb else img.data[:1])
                factor = min(1.0, MAX_SCALE * target_diameter / max(object_diameter(lab), 1.0))
                small, small_lab = _shrink(raw, lab, factor) if factor < 0.999 else (raw, lab)
                blob = _webp(small)
                if not np.array_equal(_unwebp(blob, small.shape[0]), small):  # lossless, checked once per image
                    raise RuntimeError(f"{ds}/{stem}: WebP round trip is not lossless")
                (out / ds / f"{stem}.webp").write_bytes(blob)
                (out / ds / f"{stem}.labels.xz").write_bytes(lzma.compress(small_lab.astype(np.uint16).tobytes(), preset=9))
                entries.append({"dataset": ds, "stem": stem, "part": part, "channels": int(small.shape[0]),
                                "shape": list(small.shape[1:]), "original_shape": list(img.shape), "shrink": round(factor, 6)})
        log.info("packed %s", ds)
    index = {"version": PACK_VERSION, "target_diameter": target_diameter, "max_scale": MAX_SCALE, "entries": entries}
    (out / "index.json").write_text(json.dumps(index, indent=0))
    return index


def read_pack(pack: Path, parts: Sequence[str] = PARTS, datasets: Sequence[str] | None = None) -> Iterator[PackedPair]:
    """The pairs of ``parts`` (and ``datasets``) in a pack folder, in the pack's order."""
    index_file = pack / "index.json"
    if not index_file.exists():
        raise FileNotFoundError(f"{pack}: not a training pack (no index.json); make one with "
                                "python -m efficell_app.core.training_pack")
    index = json.loads(index_file.read_text())
    if index.get("version") != PACK_VERSION:
        raise ValueError(f"{index_file}: pack version {index.get('version')}, this EffiCell reads {PACK_VERSION}")
    for e in index["entries"]:
        if e["part"] not in parts or (datasets is not None and e["dataset"] not in datasets):
            continue
        base = pack / e["dataset"] / e["stem"]
        img = _unwebp((base.with_suffix(".webp")).read_bytes(), e["channels"])
        h, w = e["shape"]
        lab = np.frombuffer(lzma.decompress(Path(f"{base}.labels.xz").read_bytes()), np.uint16).reshape(h, w).astype(np.int32)
        yield PackedPair(e["dataset"], e["stem"], e["part"], ImageData(img, rgb=e["channels"] == 3), lab, e["shrink"])


def pack_bytes(pack: Path) -> int:
    return sum(p.stat().st_size for p in pack.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    import argparse

    from .data_split import load_split

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("../shared/data"))
    p.add_argument("--out", type=Path, default=Path("work/pack_v2"))
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if (a.out / "index.json").exists():
        raise SystemExit(f"{a.out} already holds a pack; remove it first to rebuild")
    index = make_pack(a.data, a.out, load_split(2), TARGET_DIAMETER)
    print(f"{len(index['entries'])} pairs, {pack_bytes(a.out) / 2**20:.1f} MiB in {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
