"""What the vendor readers share: trusting the file's metadata, and assembling (C, Y, X)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..errors import ImageReadError
from ..image_data import ImageData, PlaneChoice, check_planes, check_scene, plane_index

# Names that readers make up when the file has none ("Channel:0:0" from OME IDs, "0", "1" from
# indices): never shown as if the file had named its channels.
_INVENTED = re.compile(r"^(channel[:\s_]*\d+(:\d+)*|\d+)$", re.IGNORECASE)


def file_channel_names(names: Sequence[str | None], n: int) -> tuple[str, ...]:
    """The channel names as the file states them, or () ("unknown") when any is missing or invented."""
    clean = [str(x).strip() if x is not None else "" for x in names]
    if len(clean) != n or not all(clean) or any(_INVENTED.match(x) for x in clean):
        return ()
    return tuple(clean)


def planes_to_read(path: Path, sizes: dict[str, int], planes: PlaneChoice) -> dict[str, int | None]:
    """For each of the ``T``/``Z`` axes in ``sizes``: the plane index to read, or None (max projection);
    :class:`~..image_data.PlanesNeeded` naming every axis without a choice."""
    check_planes(path, sizes, planes)
    return {ax: plane_index(path, ax, sizes[ax], planes) for ax in "TZ" if ax in sizes}


def assemble(path: Path, read_plane: Callable[[int, int, int], np.ndarray], n_c: int, n_t: int, n_z: int,
             planes: PlaneChoice) -> np.ndarray:
    """(C, Y, X) from ``read_plane(c, t, z) -> (Y, X)``, reading only the planes needed: the chosen
    t and z, or every z of the chosen t for a maximum projection (accumulated plane by plane, so
    a projection of a large stack never holds the stack in memory)."""
    idx = planes_to_read(path, {"T": n_t, "Z": n_z}, planes)
    t = idx["T"] or 0
    zs = range(n_z) if idx["Z"] is None else [idx["Z"]]
    out = []
    for c in range(n_c):
        acc = None
        for z in zs:
            plane = np.asarray(read_plane(c, t, z))
            acc = plane if acc is None else np.maximum(acc, plane)
        out.append(acc)
    shapes = {a.shape for a in out}
    if len(shapes) != 1:
        raise ImageReadError(path, f"channels of different sizes {sorted(shapes)}; cannot combine them")
    return np.stack(out)


def refuse(path: Path, what: str) -> ImageReadError:
    """A refusal that says what is not supported (raised by the reader)."""
    return ImageReadError(path, f"{what}: not supported (EffiCell segments XY images, one plane or projection at a time)")


def pick_scene(path: Path, scene: int | None, names: list[str]) -> tuple[int, str | None]:
    """(index to read, the scene's name or None for a single-scene file); a clear error otherwise."""
    k = check_scene(path, scene, names)
    return k, (names[k] if len(names) > 1 else None)


def with_scene(img: ImageData, name: str | None) -> ImageData:
    img.scene = name
    return img
