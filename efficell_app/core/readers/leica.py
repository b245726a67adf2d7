"""Leica LIF through liffile: each image of the file (a LAS X "series") is a scene.

bioio-lif fails on lambda sweeps and XZ scans (``axes don't match array``) and stitches tile
scans with a negative Z step; liffile opens every LIF we have. Tile scans, XZ scans and
lambda sweeps are refused with the reason: EffiCell segments XY images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..image_data import ImageData, PlaneChoice, check_planes, square_pixel_size, to_cyx, to_um, unique_scene_names
from .common import file_channel_names, pick_scene, refuse, with_scene


def _images(lif) -> list:  # noqa: ANN001 - liffile.LifFile
    return list(lif.images)


def _names(path: Path, images: list) -> list[str]:
    return [path.name] if len(images) == 1 else unique_scene_names([im.name for im in images])


def scene_names(path: Path) -> list[str]:
    import liffile

    with liffile.LifFile(path) as lif:
        return _names(path, _images(lif))


def _check_axes(path: Path, dims: tuple[str, ...], shape: tuple[int, ...]) -> None:
    sizes = dict(zip(dims, shape))
    if dims[-2:] != ("Y", "X"):
        raise refuse(path, f"is an {dims[-1]}{dims[-2]} scan (frames of {dims[-2]}×{dims[-1]}, axes {''.join(dims)}), "
                     "not an XY image")
    if sizes.get("M", 1) > 1:
        raise refuse(path, f"is a tile scan of {sizes['M']} unstitched tiles (export the merged image from LAS X)")
    lam = [d for d in dims if d in ("λ", "Λ") and sizes[d] > 1]
    if lam:
        raise refuse(path, f"is a wavelength (lambda) scan of {sizes[lam[0]]} steps")
    other = [d for d in dims if d not in "TZCYXSM" and sizes[d] > 1]
    if other:
        raise refuse(path, f"has axes {''.join(other)} that EffiCell cannot reduce to a 2-D image")


def read(path: Path, scene: int | None, planes: PlaneChoice) -> ImageData:
    import liffile

    with liffile.LifFile(path) as lif:
        images = _images(lif)
        scene, scene_name = pick_scene(path, scene, _names(path, images))
        im = images[scene]
        dims, shape = tuple(im.dims), tuple(int(n) for n in im.shape)
        _check_axes(path, dims, shape)
        check_planes(path, dict(zip(dims, shape)), planes)  # before reading every plane of a stack
        arr = np.asarray(im.asarray())
        px, note = square_pixel_size(*(_step_um(im.coords.get(ax)) for ax in ("X", "Y")))
        luts = [el.get("LUTName") for el in im.xml_element.iterfind(".//ChannelDescription")]
    keep = [i for i, d in enumerate(dims) if d != "M"]
    arr = arr.reshape([shape[i] for i in keep])
    data, rgb = to_cyx(path, arr, "".join(dims[i] for i in keep), planes, None)
    # LAS X names a channel by its colour table (Green, Red, Gray), as its own viewer does.
    return with_scene(ImageData(data=data, path=path, pixel_size_um=px, rgb=rgb, notes=[note] if note else [],
                                channel_names=() if rgb else file_channel_names(luts, data.shape[0])), scene_name)


def _step_um(coords) -> float | None:  # noqa: ANN001 - an axis' coordinates in metres
    return to_um(abs(float(coords[1] - coords[0])), "m") if coords is not None and len(coords) > 1 else None
