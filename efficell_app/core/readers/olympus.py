"""Olympus FluoView OIB (and OIF) through oiffile; bioio has no plugin for these."""

from __future__ import annotations

from pathlib import Path

from ..image_data import ImageData, PlaneChoice, square_pixel_size, to_cyx, to_um
from .common import file_channel_names, pick_scene


def scene_names(path: Path) -> list[str]:
    return [path.name]  # one image per file


def read(path: Path, scene: int | None, planes: PlaneChoice) -> ImageData:
    import oiffile

    pick_scene(path, scene, scene_names(path))

    with oiffile.OifFile(path) as oif:
        axes = str(oif.axes).upper()
        arr = oif.asarray()
        main = oif.mainfile
    data, rgb = to_cyx(path, arr, axes, planes, None)
    ref = main.get("Reference Image Parameter", {})
    px, note = square_pixel_size(to_um(ref.get("WidthConvertValue"), str(ref.get("WidthUnit", ""))),
                                 to_um(ref.get("HeightConvertValue"), str(ref.get("HeightUnit", ""))))
    names = [main.get(f"Channel {k} Parameters", {}).get("CH Name") for k in range(1, data.shape[0] + 1)]
    return ImageData(data=data, path=path, pixel_size_um=px, rgb=rgb, notes=[note] if note else [],
                     channel_names=file_channel_names(names, data.shape[0]))
