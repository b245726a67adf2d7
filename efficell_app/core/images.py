"""Reading microscopy images into one type, and normalising them for the model.

Every reader returns an :class:`ImageData`: raw pixel values (never normalised) as a
``(C, H, W)`` array, channel names, the pixel size when the file records it, and the
path. Z-stacks and time series are never guessed: the caller chooses a plane (or a
maximum projection) and otherwise gets an error that says how to choose.

TIFF, PNG, JPEG and BMP are read here; microscope vendor formats (CZI, ND2, LIF, OIB, DV)
by :mod:`.readers`. A file with several scenes (positions, wells, OME images) is one image
per scene: :func:`scene_names` lists them and ``read_image(..., scene=k)`` reads one.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .errors import ImageReadError
from .image_data import (  # noqa: F401 - re-exported: the types every caller of the readers uses
    ImageData,
    PlaneChoice,
    PlanesNeeded,
    block_rows,
    channels_equal,
    check_scene,
    plane_index,
    square_pixel_size,
    to_cyx,
    to_um,
    unique_scene_names,
)

log = logging.getLogger(__name__)

TIFF_SUFFIXES = (".tif", ".tiff", ".ome.tif", ".ome.tiff")
RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
# Microscope formats read by .readers (one module per vendor); extension -> format name.
VENDOR_FORMATS = {".czi": "Zeiss CZI", ".nd2": "Nikon ND2", ".lif": "Leica LIF", ".oib": "Olympus OIB",
                  ".dv": "DeltaVision"}
VENDOR_SUFFIXES = tuple(VENDOR_FORMATS)
IMAGE_SUFFIXES = TIFF_SUFFIXES + RASTER_SUFFIXES + VENDOR_SUFFIXES
READABLE = "TIFF/OME-TIFF, PNG, JPEG, BMP, CZI, ND2, LIF, OIB, DV"  # for messages and file dialogs
# Name filters of an "open images" file dialog (Qt's syntax; no Qt needed here).
IMAGE_FILE_FILTER = ";;".join([
    "Images (" + " ".join(f"*{x}" for x in IMAGE_SUFFIXES if x.count(".") == 1) + ")",
    "Microscope files (" + " ".join(f"*{x}" for x in VENDOR_SUFFIXES) + ")",
    "TIFF and OME-TIFF (*.tif *.tiff)",
    "All files (*)",
])
MIN_SIDE = 8  # smaller images cannot hold a cell the model could see
MEMMAP_MIN_BYTES = 32 * 2**20  # uncompressed TIFFs at least this big are memory-mapped, not read (see read_image)
MAX_CHANNELS = 16

def is_image_file(path: str | Path) -> bool:
    name = str(path).lower()
    return name.endswith(IMAGE_SUFFIXES) and not Path(path).name.startswith(".")


def display_name(path: str | Path, scene: str | None) -> str:
    """``file`` or, for one scene of a multi-scene file, ``file [scene]`` (as projects and tables show it)."""
    name = Path(path).name
    return f"{name} [{scene}]" if scene is not None else name


def find_images(paths: list[str | Path] | tuple[str | Path, ...]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Expand files and folders (recursively) into image files.

    Returns ``(images, skipped)``, where ``skipped`` lists ``(path, reason)`` for files in the
    given folders that are not images, so the caller can say what was left out. An entry named
    like an image that cannot be one (a broken link, a symlink loop, a folder named
    ``x.tif`` holding no images) is kept in ``images``: its reader names the problem.
    """
    images: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = len(images)
            for f in sorted(p.rglob("*")):
                if f.name.startswith("."):
                    continue
                if f.is_file():
                    if is_image_file(f):
                        images.append(f)
                    else:
                        skipped.append((f, f"not an image file ({f.suffix or 'no extension'})"))
                elif is_image_file(f) and not (f.is_dir() and _holds_images(f)):
                    images.append(f)  # named like an image but is not a readable file
            if len(images) == found and is_image_file(p):
                images.append(p)  # a folder named like an image, holding none
        else:
            images.append(p)  # named explicitly: let the reader say what is wrong with it
    return images, skipped


def _holds_images(folder: Path) -> bool:
    return any(f.is_file() and is_image_file(f) for f in folder.rglob("*"))


def _check_readable(path: Path, what: str) -> None:
    """Name what is wrong with a path before decoding it: a missing file, a link to nothing, a
    folder, an empty or unreadable file (permission denied is said as such, not as damage)."""
    if not path.exists():
        if path.is_symlink():
            raise ImageReadError(path, "is a symbolic link to nothing (a broken link or a symlink loop)")
        raise ImageReadError(path, f"{what}file not found")
    if path.is_dir():
        raise ImageReadError(path, f"is a folder, not {'a mask' if what else 'an image'} file")
    try:
        with open(path, "rb") as fh:
            empty = not fh.read(1)
    except PermissionError as exc:
        raise ImageReadError(path, "cannot be read: permission denied (check the file's permissions)") from exc
    except OSError as exc:
        raise ImageReadError(path, f"cannot be read ({exc.strerror or exc})") from exc
    if empty:
        raise ImageReadError(path, f"{what}file is empty (0 bytes)")


# ----------------------------------------------------------------------------- readers


def read_image(path: str | Path, planes: PlaneChoice | None = None, channel_axis: int | None = None,
               memmap: bool | None = None, scene: int | None = None) -> ImageData:
    """Read a TIFF/OME-TIFF, PNG, JPEG, BMP or microscope (CZI, ND2, LIF, OIB, DV) file.

    ``scene`` picks one scene (0-based, as :func:`scene_names` lists them) of a file that holds
    several; ``None`` reads a single-scene file and refuses a multi-scene one with a message
    naming its scenes. ``channel_axis`` overrides the channel axis of a plain 3-D TIFF without metadata
    (0 = channel-first, -1 = channel-last). Raises :class:`ImageReadError` naming the file.

    Large images are memory-mapped instead of read: when a TIFF's first series is stored
    uncompressed, contiguous and in the machine's byte order, and holds at least
    :data:`MEMMAP_MIN_BYTES` (``memmap=None``, the default; ``True``: whenever possible;
    ``False``: never), ``.data`` is a read-only :class:`numpy.memmap` of ``(C, H, W)``
    (a strided view for interleaved RGB; a view of the chosen plane of a z/t stack) and
    pixels are read from disk only when used, so the strip path of segmentation reads the
    rows it needs. Compressed, tiled, bit-packed or byte-swapped TIFFs and PNG/JPEG/BMP
    files are decoded into memory as usual.
    """
    path = Path(path)
    planes = planes or PlaneChoice()
    _check_readable(path, "")
    vendor = VENDOR_FORMATS.get(path.suffix.lower())
    kind = file_kind(path)  # read by content: a PNG named .tif is still a PNG
    with tifffile_complaints() as complaints:
        img = _read_any(path, planes, channel_axis, memmap, scene, kind, vendor)
    if complaints:  # read, but not cleanly: say so beside the result
        img.notes.append(f"the file may be damaged or truncated: its TIFF reader reported '{_short(complaints[0])}'"
                         + (f" (and {len(complaints) - 1} more)" if len(complaints) > 1 else "")
                         + "; check the image and its metadata (pixel size)")
    named = _SUFFIX_KIND.get(path.suffix.lower())
    if kind is not None and named is not None and kind != named:
        img.notes.insert(0, f"the file is a {kind} image although its name ends in '{path.suffix}'; read as {kind}")
    return img


def _read_any(path: Path, planes: PlaneChoice, channel_axis: int | None, memmap: bool | None, scene: int | None,
              kind: str | None, vendor: str | None) -> ImageData:
    """:func:`read_image`'s reading, by the file's kind; every failure an :class:`ImageReadError`."""
    lower = path.name.lower()
    try:
        if not lower.endswith(IMAGE_SUFFIXES):
            raise ImageReadError(path, f"unsupported file type '{path.suffix}' (EffiCell reads {READABLE})")
        if vendor is not None and kind is None:
            from . import readers

            img = readers.read(path, planes, scene)
        elif kind == "TIFF" or (kind is None and lower.endswith(TIFF_SUFFIXES)):
            img = _read_tiff(path, planes, channel_axis, memmap, scene)
        else:
            _single_scene(path, scene)
            img = _read_raster(path)
    except ImageReadError:
        raise
    except MemoryError as exc:
        raise ImageReadError(path, "image too large to load into memory, or a damaged header claims it is") from exc
    except Exception as exc:  # noqa: BLE001 - any decoder failure becomes one clear line
        if vendor is not None and kind is None:
            raise ImageReadError(path, f"cannot be read as {vendor} ({_short(exc)}); the file may be damaged, "
                                 "truncated or of a variant EffiCell's reader does not know") from exc
        if kind is None:
            raise ImageReadError(path, f"cannot be read as an image: {_NOT_AN_IMAGE}") from exc
        raise ImageReadError(path, f"cannot be read as an image ({_short(exc)}); the file may be damaged or truncated") from exc
    return _validate(img)


_MAGIC = ((b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"II+\x00", "TIFF"), (b"MM\x00+", "TIFF"),
          (b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"BM", "BMP"))
_NOT_AN_IMAGE = "its content is not TIFF, PNG, JPEG or BMP (another kind of file, or damaged)"
_SUFFIX_KIND = {".tif": "TIFF", ".tiff": "TIFF", ".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP"}


def scene_names(path: str | Path) -> list[str]:
    """The names of the scenes (positions, wells, OME images) of an image file; one entry for a
    single-scene file. Unnamed scenes are called ``scene k``. Reads the header only.

    A file that cannot be opened gives one entry: :func:`read_image` then says what is wrong."""
    path = Path(path)
    vendor = VENDOR_FORMATS.get(path.suffix.lower())
    kind = file_kind(path)
    if not path.is_file() or (kind is None and vendor is None and not str(path).lower().endswith(TIFF_SUFFIXES)):
        return [path.name]  # read_image says what is wrong with it
    try:
        if vendor is not None and kind is None:
            from . import readers

            return readers.scene_names(path)
        if kind == "TIFF" or kind is None:
            import tifffile

            with tifffile_complaints(), tifffile.TiffFile(path, is_mmstack=False) as tif:  # read_image tells them
                return [name for name, _ in _tiff_scenes(tif)] or [path.name]  # no series: read_image says why
    except ImageReadError:
        raise
    except Exception as exc:  # noqa: BLE001 - the reader's own failure, told once by read_image
        log.debug("%s: scenes not listed (%s)", path, exc)
    return [path.name]


def _single_scene(path: Path, scene: int | None) -> None:
    if scene not in (None, 0):
        raise ImageReadError(path, f"scene {scene} does not exist (the file holds 1)")


def file_kind(path: str | Path) -> str | None:
    """'TIFF', 'PNG', 'JPEG' or 'BMP' from a file's first bytes (not its name); None for anything else."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError:
        return None
    return next((kind for magic, kind in _MAGIC if head.startswith(magic)), None)


def _short(exc: BaseException | str) -> str:
    """One line of at most 160 characters; raw bytes a decoder quotes (``b'~j\\x7f...'``) are left out."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return re.sub(r"\s*b(['\"]).*?(?<!\\)\1", " (raw bytes)", text)[:160]


_complaints = threading.local()  # the messages tifffile logs while this thread reads a file


class _TifffileComplaints(logging.Filter):
    """Routes what tifffile logs while a file is read here (:func:`tifffile_complaints`) to that read,
    instead of the terminal: there its lines named no file and came twice (listing scenes, reading)."""

    def filter(self, record: logging.LogRecord) -> bool:
        sink = getattr(_complaints, "sink", None)
        if sink is None or record.levelno < logging.WARNING:
            return True
        sink.append(record.getMessage())
        return False


_COMPLAINTS_FILTER = _TifffileComplaints()


@contextlib.contextmanager
def tifffile_complaints() -> Iterator[list[str]]:
    """Collect (and keep off the terminal) the warnings and errors tifffile logs in this thread meanwhile."""
    tlog = logging.getLogger("tifffile")
    if _COMPLAINTS_FILTER not in tlog.filters:
        tlog.addFilter(_COMPLAINTS_FILTER)
    outer = getattr(_complaints, "sink", None)
    _complaints.sink = []
    try:
        yield _complaints.sink
    finally:
        _complaints.sink = outer


def _read_raster(path: Path) -> ImageData:
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        mode = im.mode
        if mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            mode = im.mode
        if mode in ("1", "L", "I", "F", "I;16", "I;16B", "I;16L"):
            arr = np.asarray(im)
            if mode == "1":
                arr = arr.astype(np.uint8) * 255
            data = arr[None]
            return ImageData(data=data, path=path)
        if mode in ("LA", "PA"):
            return ImageData(data=np.asarray(im.convert("L"))[None], path=path)
        if mode not in ("RGB", "RGBA"):
            im = im.convert("RGB")
        arr = np.asarray(im)[..., :3]
    data = np.moveaxis(arr, -1, 0)
    if channels_equal(data):
        return ImageData(data=np.ascontiguousarray(data[:1]), path=path)
    return ImageData(data=np.ascontiguousarray(data), path=path, rgb=True)


def _tiff_scenes(tif) -> list[tuple[str, object]]:  # noqa: ANN001 - tifffile objects
    """(name, series) per scene: every image of an OME-TIFF (positions of a Micro-Manager file
    included: the file is opened with ``is_mmstack=False``), else the first series alone (later
    series of a plain TIFF are thumbnails or pyramid levels, not scenes)."""
    series = list(tif.series)
    if tif.is_ome and len(series) > 1:
        return list(zip(unique_scene_names([s.name for s in series]), series))
    return [(Path(tif.filehandle.path).name, series[0])] if series else []


def _read_tiff(path: Path, planes: PlaneChoice, channel_axis: int | None, memmap: bool | None = None,
               scene: int | None = None) -> ImageData:
    import tifffile

    with tifffile.TiffFile(path, is_mmstack=False) as tif:
        scenes = _tiff_scenes(tif)
        if not scenes:
            raise ImageReadError(path, "TIFF holds no image data")
        k = check_scene(path, scene, [n for n, _ in scenes])
        scene_name, series = scenes[k] if len(scenes) > 1 else (None, scenes[0][1])
        axes = series.axes.upper()
        arr = _tiff_memmap(path, tif, series) if memmap is not False else None
        if arr is not None and memmap is None and arr.nbytes < MEMMAP_MIN_BYTES:
            arr = None
        if arr is None:
            arr = series.asarray()
        pixels = _ome_pixels(tif, k)  # the OME-XML is parsed once: it can be megabytes (Bio-Formats' original metadata)
        pixel_size, note = square_pixel_size(*_tiff_pixel_size(tif, pixels))
        names = _tiff_channel_names(tif, pixels)
    data, rgb = to_cyx(path, arr, axes, planes, channel_axis)
    if names and len(names) != data.shape[0]:
        names = ()
    return ImageData(data=data, path=path, channel_names=tuple(names), pixel_size_um=pixel_size, rgb=rgb,
                     scene=scene_name, notes=[note] if note else [])


def _tiff_memmap(path: Path, tif, series) -> np.memmap | None:  # noqa: ANN001 - tifffile objects
    """A read-only memory map of the series in its file's shape, or None when its pixels are not
    stored uncompressed, contiguous and in native byte order (such files are decoded instead)."""
    try:
        offset = series.dataoffset
        dtype = np.dtype(series.dtype)
        if offset is None or dtype.kind not in "uif" or not series.keyframe.is_memmappable:
            return None
        dtype = dtype.newbyteorder(tif.byteorder)
        if not dtype.isnative and dtype.itemsize > 1:
            return None  # byte-swapping would need a full copy anyway
        shape = tuple(int(n) for n in series.shape)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if nbytes == 0 or offset + nbytes > path.stat().st_size:
            return None  # truncated: let the decoder report it
        return np.memmap(path, dtype=dtype.newbyteorder("="), mode="r", offset=offset, shape=shape)
    except (AttributeError, ValueError, OSError) as exc:  # unusual layouts: just decode
        log.debug("%s: not memory-mapped (%s)", path, exc)
        return None


def _ome_pixels(tif, index: int):  # noqa: ANN001, ANN202 - tifffile.TiffFile -> Element | None
    """The ``Pixels`` element of the ``index``-th OME ``Image``; None for a TIFF without (readable) OME-XML."""
    if not (tif.is_ome and tif.ome_metadata):
        return None
    try:
        root = ET.fromstring(tif.ome_metadata)
    except ET.ParseError as exc:  # bad metadata must not stop the image from loading
        log.debug("ignoring unreadable OME-XML: %s", exc)
        return None
    images = [el for el in root if el.tag.endswith("Image")]
    if not images:
        return None
    image = images[min(index, len(images) - 1)]
    return next((el for el in image.iter() if el.tag.endswith("Pixels")), None)


def _tiff_pixel_size(tif, pixels=None) -> tuple[float | None, float | None]:  # noqa: ANN001 - tifffile.TiffFile, OME Pixels element
    """Pixel width and height in µm from OME-XML (``pixels``, the scene's OME ``Pixels``), ImageJ
    metadata, or TIFF resolution tags in cm; (None, None) when the file records none."""
    try:
        if pixels is not None and pixels.get("PhysicalSizeX"):
            px = to_um(pixels.get("PhysicalSizeX"), pixels.get("PhysicalSizeXUnit", "µm"))
            if px:
                return px, to_um(pixels.get("PhysicalSizeY"), pixels.get("PhysicalSizeYUnit", "µm"))
        tags = tif.pages[0].tags
        sizes = [_resolution_um(tif, tags, tag) for tag in ("XResolution", "YResolution")]
        return (sizes[0], sizes[1]) if sizes[0] else (None, None)
    except Exception as exc:  # noqa: BLE001 - bad metadata must not stop the image from loading
        log.debug("ignoring unreadable resolution metadata: %s", exc)
    return None, None


def _resolution_um(tif, tags, tag: str) -> float | None:  # noqa: ANN001
    """One resolution tag as the size of a pixel in µm (ImageJ's unit, or centimetres)."""
    res = tags.get(tag)
    if res is None:
        return None
    num, den = res.value
    if not num:
        return None
    per_unit = den / num  # size of one pixel in the resolution unit
    unit = str((tif.imagej_metadata or {}).get("unit", "")).strip().lower()
    if tif.is_imagej and unit:
        return to_um(per_unit, unit)
    res_unit = tags.get("ResolutionUnit")
    if res_unit is not None and int(res_unit.value) == 3:  # centimetre
        value = per_unit * 1e4
        return value if 1e-4 < value < 1e4 else None
    return None


def _tiff_channel_names(tif, pixels=None) -> tuple[str, ...]:  # noqa: ANN001
    """Channel names of the scene's OME ``pixels`` or the ImageJ labels; () where the file names none
    (an OME ``Channel`` without ``Name`` has only an ID such as ``Channel:0:0``, which is no name)."""
    try:
        if pixels is not None:
            names = [el.get("Name") for el in pixels if el.tag.endswith("Channel")]
            if names and all(names):
                return tuple(str(n) for n in names)
        ij = tif.imagej_metadata or {}
        labels = ij.get("Labels")
        if isinstance(labels, (list, tuple)) and labels:
            return tuple(str(x) for x in labels)
    except Exception as exc:  # noqa: BLE001
        log.debug("ignoring unreadable channel names: %s", exc)
    return ()


def _validate(img: ImageData) -> ImageData:
    data, path = img.data, img.path
    if data.dtype == bool:
        raise ImageReadError(path, "is a binary (boolean) image, not an intensity image; if it is a mask, use it as a mask")
    if np.iscomplexobj(data):
        raise ImageReadError(path, f"has complex pixel values ({data.dtype}); EffiCell needs real intensities")
    if data.dtype.kind not in "uif":
        raise ImageReadError(path, f"unsupported pixel type {data.dtype}")
    h, w = data.shape[1:]
    if h < MIN_SIDE or w < MIN_SIDE:
        raise ImageReadError(path, f"image is {h}x{w} pixels; EffiCell needs at least {MIN_SIDE}x{MIN_SIDE}")
    if data.shape[0] > MAX_CHANNELS:
        raise ImageReadError(path, f"has {data.shape[0]} channels; that looks like a stack of planes rather than "
                             f"channels (at most {MAX_CHANNELS} channels are supported)")
    if data.dtype.kind == "f":
        step = block_rows(w)
        n_bad = sum(int(np.count_nonzero(~np.isfinite(data[:, r:r + step]))) for r in range(0, h, step))
        if n_bad == data.size:
            raise ImageReadError(path, "every pixel is NaN or infinite")
        if n_bad:
            data = np.array(data)  # in memory (a memory map is read-only)
            bad = ~np.isfinite(data)
            fill = np.nanmin(np.where(bad, np.nan, data))
            data[bad] = fill
            img = img.with_data(data, replaced=bad)
            img.notes.append(f"{n_bad} NaN/infinite pixel(s) replaced by the image minimum for segmentation "
                             "(measurements leave them out)")
    if img.data.size and img.data.min() == img.data.max():
        img.notes.append(f"image is constant (every pixel is {img.data.flat[0]}): no cells can be found")
    return img


# ----------------------------------------------------------------------------- masks


def read_mask(path: str | Path, shape: tuple[int, int] | None = None, notes: list[str] | None = None) -> np.ndarray:
    """Read an instance label image (0 = background) as int32 ``(H, W)``.

    Refuses negative or non-integer labels and, when ``shape`` is given, a different size. What
    is worth telling about how it was read (a binary mask taken apart into regions) goes into
    ``notes`` when given, else the log.
    """
    path = Path(path)
    _check_readable(path, "mask ")
    kind = file_kind(path)  # by content, as read_image
    try:
        if kind == "TIFF" or (kind is None and str(path).lower().endswith(TIFF_SUFFIXES)):
            import tifffile

            with tifffile_complaints() as complaints:
                arr = np.asarray(tifffile.imread(path))
            if complaints:
                log.warning("%s: the mask may be damaged or truncated (its TIFF reader reported '%s')", path,
                            _short(complaints[0]))
        else:
            from PIL import Image

            with Image.open(path) as im:
                arr = np.asarray(im)
    except Exception as exc:  # noqa: BLE001
        if kind is None:
            raise ImageReadError(path, f"cannot be read as a mask: {_NOT_AN_IMAGE}") from exc
        raise ImageReadError(path, f"cannot be read as a mask ({_short(exc)}); the file may be damaged") from exc
    if arr.ndim > 2:  # drop extra singleton axes ((1, H, W), (H, W, 1)); a 1-pixel-high mask stays 2-D
        squeezed = np.squeeze(arr)
        arr = squeezed if squeezed.ndim >= 2 or arr.shape[-2] * arr.shape[-1] != arr.size else arr.reshape(arr.shape[-2:])
    if arr.ndim != 2:
        raise ImageReadError(path, f"a mask must be 2-D, this one has shape {tuple(arr.shape)}")
    if arr.dtype == bool:
        from skimage.measure import label

        arr = label(arr, connectivity=1)
    elif arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ImageReadError(path, "mask has non-integer labels; a mask holds whole numbers (0 = background)")
    elif arr.dtype.kind not in "ui":
        raise ImageReadError(path, f"mask has unsupported type {arr.dtype}")
    if arr.size and arr.min() < 0:
        raise ImageReadError(path, "mask has negative labels; labels must be 0 (background) or positive")
    if shape is not None and tuple(arr.shape) != tuple(shape):
        raise ImageReadError(path, f"mask is {arr.shape[0]}x{arr.shape[1]} but its image is {shape[0]}x{shape[1]}")
    if arr.size and arr.max() > np.iinfo(np.int32).max:
        raise ImageReadError(path, "mask labels exceed the int32 range")
    arr = _binary_as_labels(arr, path, notes)
    if arr.dtype == np.uint32:  # all below 2**31 (checked above): the same bits as int32, no copy of a slide's labels
        return arr.view(np.int32)
    return arr.astype(np.int32, copy=False)


def _binary_as_labels(arr: np.ndarray, path: Path, notes: list[str] | None = None) -> np.ndarray:
    """A binary mask (one value, 1 or the type's largest: ImageJ's 0/255, a 0/1 or 0/65535 export) over
    several separate regions as one label per region, as a boolean mask is read; said in the log, since
    touching cells of a binary mask stay one object. Any other mask is a label image and left as it is
    (label 7 in two pieces stays one cell 7)."""
    top = arr.max() if arr.size else 0
    binary_values = {1} | ({int(np.iinfo(arr.dtype).max)} if arr.dtype.kind in "ui" else set())
    if top <= 0 or int(top) not in binary_values or np.count_nonzero(arr == top) != np.count_nonzero(arr):
        return arr
    from skimage.measure import label

    regions, n = label(arr > 0, connectivity=1, return_num=True)
    if n <= 1:
        return arr
    note = (f"{path}: holds a single value ({top}) over {n} separate regions: read as a binary mask, one cell per "
            "region (touching cells stay one)")
    if notes is None:
        log.warning("%s", note)
    else:
        notes.append(note)
    return regions


# ----------------------------------------------------------------------------- normalisation


def percentile_range(channel: np.ndarray, low: float = 1.0, high: float = 99.8, max_samples: int = 4_000_000) -> tuple[float, float]:
    """Percentiles of one whole channel; large channels are sampled on a regular grid.

    A channel of more than ``max_samples`` pixels is sampled every ``sy``-th row and every
    ``sx``-th column (``sy = ceil(sqrt(n / max_samples))``, ``sx`` then chosen so that at most
    about ``max_samples`` pixels are taken): only the sampled rows are read (a memory-mapped
    image is not read whole) and only the sample is converted to float (at most
    ``max_samples`` floats, whatever the image size). The grid is deterministic, so the same
    image always normalises the same way; for images larger than the sample the percentiles
    are those of about 4 million pixels spread evenly over the image, within a small fraction
    of a percentile rank of the whole image's (tests/core/test_large_images_memory.py).
    """
    sample = subsample_grid(channel, max_samples)
    lo, hi = np.percentile(sample.astype(work_dtype(sample.dtype), copy=False).reshape(-1), [low, high])
    return float(lo), float(hi)


def subsample_grid(channel: np.ndarray, max_samples: int = 4_000_000) -> np.ndarray:
    """A strided view of a 2-D ``channel`` with at most about ``max_samples`` pixels (the channel itself when smaller)."""
    if channel.size <= max_samples:
        return channel
    if channel.ndim != 2:
        flat = channel.reshape(-1)
        return flat[::int(np.ceil(flat.size / max_samples))]
    h, w = channel.shape
    sy = min(h, int(np.ceil(np.sqrt(channel.size / max_samples))))
    rows = -(-h // sy)
    sx = min(w, max(1, int(np.ceil(rows * w / max_samples))))
    return channel[::sy, ::sx]


def work_dtype(dtype: np.dtype) -> type:
    """float32 holds 8/16-bit integers and float32 exactly; wider types need float64 arithmetic."""
    return np.float32 if dtype.itemsize <= 2 or dtype == np.float32 else np.float64


def normalize(data: np.ndarray, low: float = 1.0, high: float = 99.8) -> np.ndarray:
    """Per-channel percentile normalisation of a whole ``(C, H, W)`` image to ~[0, 1] float32.

    Computed on the whole image (never per tile) so that tiles agree. A constant channel
    becomes zeros.
    """
    out = np.empty(data.shape, dtype=np.float32)
    for c in range(data.shape[0]):
        lo, hi = percentile_range(data[c], low, high)
        if hi - lo < 1e-12:
            lo, hi = float(data[c].min()), float(data[c].max())
        if hi - lo < 1e-12:
            out[c] = 0.0
            continue
        work = work_dtype(data.dtype)
        if work is np.float32:
            np.subtract(data[c], lo, out=out[c], dtype=np.float32)
            out[c] *= np.float32(1.0 / (hi - lo))
        else:  # subtract in float64 (a large offset would swamp float32), a block of rows at a time
            step = max(1, 4_000_000 // max(1, data.shape[2]))
            for r in range(0, data.shape[1], step):
                out[c, r:r + step] = (data[c, r:r + step].astype(np.float64) - lo) * (1.0 / (hi - lo))
    np.clip(out, -0.5, 1.5, out=out)
    return out


def parse_channels(spec: str | None) -> tuple[int, ...] | None:
    """Parse ``--channels``: ``"0"`` (one channel), ``"1,0"`` (cytoplasm, nucleus), ``"rgb"`` or ``None`` (auto)."""
    if spec is None or spec.strip().lower() in ("", "auto"):
        return None
    if spec.strip().lower() == "rgb":
        return (0, 1, 2)
    try:
        idx = tuple(int(s) for s in re.split(r"[,\s]+", spec.strip()) if s)
    except ValueError as exc:
        raise ValueError(f"--channels must be channel numbers such as '0' or '1,0', not '{spec}'") from exc
    if not 1 <= len(idx) <= 3 or any(i < 0 for i in idx):
        raise ValueError(f"--channels takes 1 to 3 channel numbers (0-based), not '{spec}'")
    return idx


def input_channels(img: ImageData, channels: tuple[int, ...] | None) -> tuple[int, ...]:
    """The channels the model takes from ``img``: those given, else RGB for a colour image, else the first;
    an :class:`ImageReadError` naming the file when the image lacks one ('rgb' on a grey image said so)."""
    if channels is None:
        return (0, 1, 2) if img.rgb and img.n_channels >= 3 else (0,)
    missing = [c for c in channels if c >= img.n_channels]
    if missing:
        asked = "'rgb' (three colour channels) was" if tuple(channels) == (0, 1, 2) else f"channel {missing[0]} is"
        raise ImageReadError(img.path, f"{asked} asked for but the image has {img.n_channels} channel(s)")
    return tuple(channels)


def model_input(img: ImageData, channels: tuple[int, ...] | None = None) -> np.ndarray:
    """The 3-channel normalised float32 array the model sees.

    Grayscale is replicated; RGB is kept; with ``channels`` = (cyto, nucleus) the two are
    placed in the first two planes and their mean in the third. Without ``channels`` a
    multi-channel non-RGB image uses its first channel.
    """
    data = img.data
    channels = input_channels(img, channels)
    sel = normalize(data[list(channels)])
    if sel.shape[0] == 1:
        return np.repeat(sel, 3, axis=0)
    if sel.shape[0] == 2:
        return np.concatenate([sel, sel.mean(axis=0, keepdims=True)], axis=0)
    return sel
