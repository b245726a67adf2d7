"""Nikon ND2 through ``nd2`` (NIS-Elements' own SDK layout; modern and legacy files).

Multi-point (``P``) acquisitions are one scene per position. The pixel size is taken only
where NIS-Elements marked the axes calibrated; bioio-nd2 reports Z = 1.0 µm for single-plane
files, a default the file does not state (only X/Y are used here).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from ..image_data import ImageData, PlaneChoice, square_pixel_size, unique_scene_names
from .common import assemble, file_channel_names, pick_scene, refuse, with_scene


def _open(path: Path):  # noqa: ANN202
    import nd2

    return nd2.ND2File(path)


def _position_names(f, n: int) -> list[str | None]:  # noqa: ANN001 - nd2.ND2File
    try:
        for loop in f.experiment or ():
            if getattr(loop, "type", "") == "XYPosLoop":
                return [getattr(p, "name", None) for p in loop.parameters.points][:n]
    except (AttributeError, TypeError):
        pass
    return [None] * n


def _names(path: Path, f) -> list[str]:  # noqa: ANN001
    n = int(f.sizes.get("P", 1))
    return [path.name] if n == 1 else unique_scene_names(_position_names(f, n))


def scene_names(path: Path) -> list[str]:
    with _open(path) as f:
        return _names(path, f)


def read(path: Path, scene: int | None, planes: PlaneChoice) -> ImageData:
    with _open(path) as f:
        scene, scene_name = pick_scene(path, scene, _names(path, f))
        sizes = dict(f.sizes)
        other = [ax for ax in sizes if ax not in "PTZCYXS" and sizes[ax] > 1]
        if other:
            raise refuse(path, f"has axes {''.join(other)} that EffiCell cannot reduce to a 2-D image")
        # Frames are read one at a time (no dask: the bundle leaves it out): each frame is one
        # (T, P, Z) point of the acquisition loops, holding every channel.
        frames = {tuple(sorted(d.items())): i for i, d in enumerate(f.loop_indices)}
        loops = set(f.loop_indices[0]) if f.loop_indices else set()
        rgb = "S" in sizes

        @functools.lru_cache(maxsize=2)
        def frame(t: int, z: int) -> np.ndarray:
            key = tuple(sorted((ax, v) for ax, v in (("T", t), ("Z", z), ("P", scene)) if ax in loops))
            arr = np.asarray(f.read_frame(frames[key]))
            return arr if "C" in sizes else arr[None]  # (C, Y, X[, S])

        n_c = sizes.get("C", 1)
        data = assemble(path, lambda c, t, z: frame(t, z)[c], n_c, sizes.get("T", 1), sizes.get("Z", 1), planes)
        if rgb:
            if n_c > 1:
                raise refuse(path, f"holds {n_c} colour (RGB) channels; only a single colour channel is supported")
            data = np.moveaxis(data[0], -1, 0)
        px, note = None, None
        try:
            meta = f.metadata.channels[0]
            calibrated = meta.volume.axesCalibrated  # (x, y, z)
            if calibrated[0] and calibrated[1]:
                size = f.voxel_size()
                px, note = square_pixel_size(float(size.x) if size.x > 0 else None, float(size.y) if size.y > 0 else None)
            names = [ch.channel.name for ch in f.metadata.channels]
        except (AttributeError, IndexError, TypeError):
            names = []
    return with_scene(ImageData(data=np.ascontiguousarray(data), path=path, pixel_size_um=px if px and px > 0 else None,
                                notes=[note] if note else [],
                                rgb=rgb, channel_names=() if rgb else file_channel_names(names, data.shape[0])),
                      scene_name)
