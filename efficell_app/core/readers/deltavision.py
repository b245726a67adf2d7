"""DeltaVision DV through mrc (memory-mapped: only the planes used are read). DV files name no
channels (only wavelengths), so channel names stay unknown."""

from __future__ import annotations

from pathlib import Path

from ..image_data import ImageData, PlaneChoice, square_pixel_size, to_cyx, to_um
from .common import pick_scene


def scene_names(path: Path) -> list[str]:
    return [path.name]


def read(path: Path, scene: int | None, planes: PlaneChoice) -> ImageData:
    import mrc

    pick_scene(path, scene, scene_names(path))

    with mrc.DVFile(path) as dv:
        axes = "".join(dv.axes).upper()
        data, rgb = to_cyx(path, dv.data, axes, planes, None)
        data = data.copy()  # the memory map closes with the file
        px, note = square_pixel_size(to_um(dv.voxel_size.x, "µm"), to_um(dv.voxel_size.y, "µm"))
    return ImageData(data=data, path=path, pixel_size_um=px, rgb=rgb, notes=[note] if note else [])
