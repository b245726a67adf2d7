"""Pure-numpy rendering for display: channel composites, label overlays and thumbnails.

Free of Qt, so background work (the tasks layer) computes overlay colours and thumbnails off
the window's thread, and the viewer hands the arrays to pyqtgraph ``ImageItem``s.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Colour-blind-friendly, well separated hues (Okabe-Ito + Tol bright), as 0-255 RGB.
PALETTE = np.array(
    [
        (230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178),
        (213, 94, 0), (204, 121, 167), (102, 204, 238), (34, 136, 51), (238, 102, 119),
        (170, 51, 119), (187, 187, 187),
    ],
    dtype=np.uint8,
)
CHANNEL_COLOURS = {
    "grey": (255, 255, 255), "red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255),
    "cyan": (0, 255, 255), "magenta": (255, 0, 255), "yellow": (255, 255, 0),
}
_ROW_CHUNK = 1024
_PAIR_ROWS = 256  # rows per band of the label-image passes (touching pairs, overlays)


@dataclass
class ChannelDisplay:
    """How one channel is drawn: colour, contrast limits (raw values), visibility."""

    name: str
    colour: str = "grey"
    lo: float = 0.0
    hi: float = 1.0
    visible: bool = True


def default_displays(data: np.ndarray, names: tuple[str, ...], rgb: bool) -> list[ChannelDisplay]:
    """Initial colours and auto-contrast (0.5-99.8 percentiles) for a ``(C, H, W)`` image."""
    n = data.shape[0]
    if n == 1:
        colours = ["grey"]
    elif rgb and n == 3:
        colours = ["red", "green", "blue"]
    else:
        cycle = ["green", "magenta", "cyan", "yellow", "red", "blue"]
        colours = [cycle[i % len(cycle)] for i in range(n)]
    out = []
    for c in range(n):
        lo, hi = auto_levels(data[c])
        out.append(ChannelDisplay(name=names[c] if c < len(names) else f"ch{c}", colour=colours[c], lo=lo, hi=hi))
    return out


def auto_levels(channel: np.ndarray, low: float = 0.5, high: float = 99.8) -> tuple[float, float]:
    """Robust display range of one channel (sampled on large images)."""
    flat = channel.reshape(-1)
    if flat.size > 1_000_000:
        flat = flat[:: int(np.ceil(flat.size / 1_000_000))]
    lo, hi = np.percentile(flat.astype(np.float32, copy=False), [low, high])
    if hi <= lo:
        lo, hi = float(flat.min()), float(flat.max())
        if hi <= lo:
            hi = lo + 1.0
    return float(lo), float(hi)


def composite(data: np.ndarray, displays: list[ChannelDisplay], only: int | None = None) -> np.ndarray:
    """Additive colour composite of the visible channels as ``(H, W, 3)`` uint8.

    ``only`` shows a single channel (in its colour). Rendered in row chunks so a
    4k x 4k image does not need gigabytes of temporaries.
    """
    _, h, w = data.shape
    out = np.zeros((h, w, 3), dtype=np.uint8)
    chans = [only] if only is not None else [i for i, d in enumerate(displays) if d.visible]
    acc = np.empty((min(h, _ROW_CHUNK), w, 3), dtype=np.float32)
    for r0 in range(0, h, _ROW_CHUNK):
        r1 = min(h, r0 + _ROW_CHUNK)
        a = acc[: r1 - r0]
        a.fill(0.0)
        for c in chans:
            d = displays[c]
            scale = 1.0 / max(d.hi - d.lo, 1e-12)
            v = (data[c, r0:r1].astype(np.float32) - np.float32(d.lo)) * np.float32(scale)
            np.clip(v, 0.0, 1.0, out=v)
            col = np.asarray(CHANNEL_COLOURS.get(d.colour, (255, 255, 255)), dtype=np.float32)
            for k in range(3):
                if col[k]:
                    a[..., k] += v * col[k]
        np.clip(a, 0.0, 255.0, out=a)
        out[r0:r1] = a.astype(np.uint8)
    return out


def touching_pairs(labels: np.ndarray, gap: int = 2) -> np.ndarray:
    """``(N, 2)`` pairs of labels (smaller first, sorted) that touch or are within ``gap`` pixels
    (4-neighbourhood shifts). Worked in bands of rows (overlapping by ``gap``) so the shifted
    comparisons stay in the cache: 9x faster than whole-image ones on an 8192² image."""
    n = int(labels.max(initial=0)) if labels.size else 0
    encode = n < 2**31  # a pair as one int64 (lo * (n + 1) + hi): a 1-D unique, much faster than unique(axis=0)
    found: list[np.ndarray] = []
    h = labels.shape[0]
    for r0 in range(0, h, _PAIR_ROWS):
        block = labels[r0:min(h, r0 + _PAIR_ROWS + gap)]
        for d in range(1, gap + 1):
            for a, b in ((block[:, :-d], block[:, d:]), (block[:-d, :], block[d:, :])):
                m = (a != b) & (a > 0) & (b > 0)
                if not m.any():
                    continue
                x, y = a[m].astype(np.int64), b[m].astype(np.int64)
                lo, hi = np.minimum(x, y), np.maximum(x, y)
                found.append(np.unique(lo * (n + 1) + hi) if encode else np.unique(np.stack([lo, hi], 1), axis=0))
    if not found:
        return np.zeros((0, 2), dtype=labels.dtype)
    if not encode:
        return np.unique(np.concatenate(found), axis=0).astype(labels.dtype)
    k = np.unique(np.concatenate(found))
    return np.stack([k // (n + 1), k % (n + 1)], axis=1).astype(labels.dtype)


def label_colours(labels: np.ndarray) -> np.ndarray:
    """A ``(max_label + 1, 4)`` uint8 RGBA table where touching cells get different colours.

    Greedy graph colouring: each cell prefers a palette entry chosen from its id (so colours
    look varied) and moves to the next free entry when a neighbour already holds it.
    """
    n = int(labels.max()) if labels.size else 0
    lut = np.zeros((n + 1, 4), dtype=np.uint8)
    if n == 0:
        return lut
    k = len(PALETTE)
    neighbours: dict[int, list[int]] = {}
    for a, b in touching_pairs(labels).tolist():
        neighbours.setdefault(a, []).append(b)
        neighbours.setdefault(b, []).append(a)
    colour = np.full(n + 1, -1, dtype=np.int64)
    for lab in range(1, n + 1):
        taken = {int(colour[j]) for j in neighbours.get(lab, ())}
        pref = (lab * 5) % k
        for step in range(k):
            c = (pref + step) % k
            if c not in taken:
                break
        colour[lab] = c
    lut[1:, :3] = PALETTE[colour[1:]]
    lut[1:, 3] = 255
    return lut


def boundaries(labels: np.ndarray) -> np.ndarray:
    """Boolean mask of pixels of a cell that touch another label (or background)."""
    b = np.zeros(labels.shape, dtype=bool)
    diff = labels[:, 1:] != labels[:, :-1]
    b[:, 1:] |= diff
    b[:, :-1] |= diff
    diff = labels[1:, :] != labels[:-1, :]
    b[1:, :] |= diff
    b[:-1, :] |= diff
    return b & (labels > 0)


def overlay_rgba(labels: np.ndarray, mode: str = "fill", lut: np.ndarray | None = None) -> np.ndarray:
    """``(H, W, 4)`` uint8 overlay: ``"fill"`` (cells filled, darker rims) or ``"outline"``.
    Drawn in bands of rows (each with a row of context for the rims), 4x faster on large images."""
    lut = label_colours(labels) if lut is None else lut
    h, w = labels.shape
    out = np.empty((h, w, 4), np.uint8)
    for r0 in range(0, h, _PAIR_ROWS):
        r1 = min(h, r0 + _PAIR_ROWS)
        a0, a1 = max(r0 - 1, 0), min(r1 + 1, h)
        edge = boundaries(labels[a0:a1])[r0 - a0:r0 - a0 + (r1 - r0)]
        lab = labels[r0:r1]
        rgba = out[r0:r1]
        np.take(lut, lab, axis=0, out=rgba)
        if mode == "outline":
            rgba *= edge[..., None]
        else:
            alpha = rgba[..., 3]
            alpha[...] = np.where(lab > 0, np.uint8(150), np.uint8(0))
            alpha[edge] = 255
    return out


def highlight_rgba(labels: np.ndarray, label: int) -> tuple[np.ndarray, tuple[int, int]] | None:
    """A white 2-px outline of one cell, cropped to its box: ``(rgba, (row0, col0))``, or None."""
    if label <= 0:
        return None
    rows = np.flatnonzero((labels == label).any(axis=1))
    if rows.size == 0:
        return None
    r0, r1 = int(rows[0]), int(rows[-1]) + 1
    band = labels[r0:r1] == label
    cols = np.flatnonzero(band.any(axis=0))
    c0, c1 = int(cols[0]), int(cols[-1]) + 1
    r0p, c0p = max(r0 - 1, 0), max(c0 - 1, 0)
    mask = labels[r0p : r1 + 1, c0p : c1 + 1] == label
    edge = np.zeros_like(mask)
    inner = mask.copy()
    for _ in range(2):
        e = boundaries(inner.astype(np.int32))
        edge |= e
        inner &= ~e
    rgba = np.zeros(mask.shape + (4,), dtype=np.uint8)
    rgba[edge] = (255, 255, 255, 255)
    return rgba, (r0p, c0p)


def format_number(v: float) -> str:
    """Pixel values for the status line: integers plain, floats with 4 significant digits."""
    f = float(v)
    return str(int(f)) if f.is_integer() and abs(f) < 1e9 else f"{f:.4g}"


def thumbnail_array(data: np.ndarray, size: int = 48) -> np.ndarray:
    """``(C, H, W)`` raw image -> ``(s, s, 3)`` uint8 thumbnail (contrast-stretched, letterboxed)."""
    c, h, w = data.shape
    step = max(1, int(np.ceil(max(h, w) / size)))
    small = np.ascontiguousarray(data[:, ::step, ::step])
    rgb = composite(small, default_displays(small, tuple(f"ch{i}" for i in range(c)), c == 3))
    out = np.full((size, size, 3), 20, dtype=np.uint8)
    sh, sw = rgb.shape[:2]
    sh, sw = min(sh, size), min(sw, size)
    r0, c0 = (size - sh) // 2, (size - sw) // 2
    out[r0 : r0 + sh, c0 : c0 + sw] = rgb[:sh, :sw]
    return out


def uncertainty_rgba(labels: np.ndarray, confidence: np.ndarray) -> np.ndarray:
    """Cells coloured from yellow (sure) to red (unsure), more opaque when unsure."""
    from .uncertainty import cell_uncertainty_image

    u = cell_uncertainty_image(labels, confidence)
    rgba = np.zeros(labels.shape + (4,), np.uint8)
    inside = labels > 0
    t = np.clip(u * 2.0, 0.0, 1.0)  # 1 - confidence of 0.5 and more is fully red
    rgba[..., 0] = np.where(inside, 255, 0)
    rgba[..., 1] = np.where(inside, (220 * (1.0 - t)).astype(np.uint8), 0)
    rgba[..., 3] = np.where(inside, (60 + 170 * t).astype(np.uint8), 0)
    return rgba
