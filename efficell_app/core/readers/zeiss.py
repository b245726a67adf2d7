"""Zeiss CZI through pylibCZIrw (ZEISS's own libCZI): every compression ZEN writes (zstd and
JPEG-XR included), scenes (positions, wells, tile regions) composed from their tiles.

bioio-czi wraps the same library but refuses files without a scaling block (``DAPI_GFP.czi``);
czifile cannot decode zstd subblocks and returns all scenes as one stage-wide canvas.
"""

from __future__ import annotations

import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..image_data import ImageData, PlaneChoice, square_pixel_size, to_um, unique_scene_names
from .common import assemble, file_channel_names, pick_scene, refuse, with_scene

_UNSUPPORTED_AXES = {"H": "raw Airyscan phases", "R": "rotations", "I": "illuminations", "V": "views"}


def _open(path: Path):  # noqa: ANN202 - a pylibCZIrw document (context manager)
    from pylibCZIrw import czi as pyczi

    return pyczi.open_czi(str(path))


@dataclass(frozen=True)
class _Meta:
    """What EffiCell takes from a CZI's XML metadata (parsing it is most of the cost of a small file)."""

    scene_names: dict[int, str | None]
    pixel_size_um: float | None
    channel_names: tuple[str | None, ...]
    note: str | None = None  # pixels that are not square


_CACHE: dict[tuple[str, int, int], _Meta] = {}  # (path, mtime, size) -> parsed metadata, the last few files
_CACHE_LOCK = threading.Lock()  # workers read images in parallel


def _parse(xml: str) -> _Meta:
    root = ET.fromstring(xml)
    scenes: dict[int, str | None] = {}
    for i, el in enumerate(root.iterfind(".//Information/Image/Dimensions/S/Scenes/Scene")):
        name = el.get("Name")
        shape = el.find("Shape")
        shape_name = shape.get("Name") if shape is not None else None
        if name and shape_name and shape_name != name:
            name = f"{name}-{shape_name}"  # e.g. position P1 in well A1
        scenes[int(el.get("Index", i))] = name
    sizes = {el.get("Id"): to_um(el.findtext("Value"), "m")  # CZI stores metres, whatever its display unit
             for el in root.iterfind(".//Scaling/Items/Distance")}
    px, note = square_pixel_size(sizes.get("X"), sizes.get("Y"))
    names = tuple(el.get("Name") for el in root.iterfind(".//Information/Image/Dimensions/Channels/Channel"))
    return _Meta(scenes, px, names, note)


def _meta(path: Path, doc) -> _Meta:  # noqa: ANN001
    """The file's metadata, parsed once per file version (adding a file lists its scenes, then reads each)."""
    st = path.stat()
    key = (str(path), st.st_mtime_ns, st.st_size)
    with _CACHE_LOCK:
        meta = _CACHE.get(key)
    if meta is None:
        meta = _parse(doc.raw_metadata)
        with _CACHE_LOCK:
            _CACHE[key] = meta
            while len(_CACHE) > 16:
                _CACHE.pop(next(iter(_CACHE)))
    return meta


def _scene_indices(doc) -> list[int]:  # noqa: ANN001
    return sorted(doc.scenes_bounding_rectangle) or [-1]  # -1: a file without scenes


def _names(path: Path, doc) -> list[str]:  # noqa: ANN001
    indices = _scene_indices(doc)
    if len(indices) == 1:
        return [path.name]
    named = _meta(path, doc).scene_names
    return unique_scene_names([named.get(i) for i in indices])


def scene_names(path: Path) -> list[str]:
    with _open(path) as doc:
        return _names(path, doc)


def read(path: Path, scene: int | None, planes: PlaneChoice) -> ImageData:
    with _open(path) as doc:
        meta = _meta(path, doc)
        scene, scene_name = pick_scene(path, scene, _names(path, doc))
        box = doc.total_bounding_box
        size = {ax: hi - lo for ax, (lo, hi) in box.items()}
        for ax, what in _UNSUPPORTED_AXES.items():
            if size.get(ax, 1) > 1:
                raise refuse(path, f"holds {size[ax]} {what} (CZI axis {ax}); process it in ZEN first")
        index = _scene_indices(doc)[scene]
        start = {ax: box[ax][0] for ax in "CTZ" if ax in box}
        n_c, n_t, n_z = size.get("C", 1), size.get("T", 1), size.get("Z", 1)
        types = doc.pixel_types
        colour = any(str(t).startswith("Bgr") for t in types.values())
        if colour and n_c > 1:
            raise refuse(path, f"holds {n_c} colour (RGB) channels; only a single colour channel is supported")
        kw = {} if index < 0 else {"scene": index}

        def plane(c: int, t: int, z: int) -> np.ndarray:
            where = {"C": c + start.get("C", 0), "T": t + start.get("T", 0), "Z": z + start.get("Z", 0)}
            arr = doc.read(plane=where, **kw)  # (Y, X, samples); tiles composed, gaps filled with 0
            return arr[..., ::-1] if colour else arr[..., 0]  # BGR -> RGB

        data = assemble(path, plane, n_c, n_t, n_z, planes)
    if colour:
        data = np.moveaxis(data[0], -1, 0)
    return with_scene(ImageData(data=np.ascontiguousarray(data), path=path, pixel_size_um=meta.pixel_size_um, rgb=colour,
                                notes=[meta.note] if meta.note else [], channel_names=() if colour else file_channel_names(meta.channel_names, data.shape[0])),
                      scene_name)
