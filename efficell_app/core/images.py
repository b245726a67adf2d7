"""Reading microscopy images into one type, and normalising them for the model.

Every reader returns an :class:`ImageData`: raw pixel values (never normalised) as a
``(C, H, W)`` array, channel names, the pixel size when the file records it, and the
path. Z-stacks and time series are never guessed: the caller chooses a plane (or a
maximum projection) and otherwise gets an error that says how to choose.
"""

from __future__ import annotations

import logging
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .errors import ImageReadError

log = logging.getLogger(__name__)

TIFF_SUFFIXES = (".tif", ".tiff", ".ome.tif", ".ome.tiff")
RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
IMAGE_SUFFIXES = TIFF_SUFFIXES + RASTER_SUFFIXES
MIN_SIDE = 8  # smaller images cannot hold a cell the model could see
MEMMAP_MIN_BYTES = 32 * 2**20  # uncompressed TIFFs at least this big are memory-mapped, not read (see read_image)
MAX_CHANNELS = 16

# TIFF/OME units to micrometres.
_UNIT_TO_UM = {
    "µm": 1.0, "um": 1.0, "micron": 1.0, "microns": 1.0, "micrometer": 1.0, "micrometre": 1.0,
    "\\u00B5m": 1.0, "nm": 1e-3, "nanometer": 1e-3, "mm": 1e3, "millimeter": 1e3, "cm": 1e4,
}


@dataclass(frozen=True)
class PlaneChoice:
    """How to reduce a z-stack or time series to one 2-D (multi-channel) image.

    ``z`` and ``t`` are a plane index, ``"max"`` (maximum projection), or ``None`` (the
    file must have no such axis, or only one plane on it).
    """

    z: int | str | None = None
    t: int | None = None

    @classmethod
    def parse(cls, z: str | None = None, t: str | None = None) -> PlaneChoice:
        zz: int | str | None = None
        if z is not None:
            zz = "max" if z.strip().lower() in ("max", "mip") else int(z)
        return cls(z=zz, t=None if t is None else int(t))


class PlanesNeeded(ImageReadError):
    """A z-stack or time series read without saying which plane to use.

    ``sizes`` maps each axis still to choose (``"Z"``, ``"T"``) to its number of planes;
    ``unlabelled`` is set when the file does not say what its planes are (they may also be
    channels). The message names no command-line option: the window asks with a dialog, the
    command line adds its own options (:attr:`command_line`).
    """

    def __init__(self, path: str | Path | None, sizes: dict[str, int], unlabelled: bool = False) -> None:
        self.sizes = dict(sizes)
        self.unlabelled = unlabelled
        if unlabelled:
            n = next(iter(sizes.values()))
            reason = (f"3-D image of {n} planes without metadata: say whether they are channels, z-planes or "
                      "time points (choose a plane or a projection)")
        else:
            words = {"Z": "z-planes", "T": "time points"}
            stack = " and ".join(f"{n} {words[ax]}" for ax, n in sizes.items())
            reason = f"is a stack of {stack}; choose " + " and ".join(
                "a z-plane or the maximum projection" if ax == "Z" else "a time point" for ax in sizes)
        super().__init__(path, reason)

    @property
    def command_line(self) -> str:
        """The options of ``efficell segment`` that choose these planes."""
        if self.unlabelled:
            return "--z N|max or --t N"
        return " and ".join("--z N or --z max" if ax == "Z" else "--t N" for ax in self.sizes)


@dataclass
class ImageData:
    """An image as read from disk: raw values, channel-first."""

    data: np.ndarray  # (C, H, W), the file's dtype
    path: Path | None = None
    channel_names: tuple[str, ...] = ()
    pixel_size_um: float | None = None
    rgb: bool = False  # an RGB(A) colour image such as H&E histology
    notes: list[str] = field(default_factory=list)  # warnings worth showing the user

    def __post_init__(self) -> None:
        if self.data.ndim != 3:
            raise ValueError(f"ImageData wants (C, H, W), got shape {self.data.shape}")
        if not self.channel_names:
            n = self.data.shape[0]
            names = ("red", "green", "blue") if self.rgb and n == 3 else tuple(f"ch{i}" for i in range(n))
            self.channel_names = names

    @property
    def n_channels(self) -> int:
        return int(self.data.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.data.shape[1]), int(self.data.shape[2])

    def with_data(self, data: np.ndarray) -> ImageData:
        return replace(self, data=data, notes=list(self.notes))


def is_image_file(path: str | Path) -> bool:
    name = str(path).lower()
    return name.endswith(IMAGE_SUFFIXES) and not Path(path).name.startswith(".")


def find_images(paths: list[str | Path] | tuple[str | Path, ...]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Expand files and folders (recursively) into image files.

    Returns ``(images, skipped)``, where ``skipped`` lists ``(path, reason)`` for files in the
    given folders that are not images, so the caller can say what was left out.
    """
    images: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for p in map(Path, paths):
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if not f.is_file() or f.name.startswith("."):
                    continue
                if is_image_file(f):
                    images.append(f)
                else:
                    skipped.append((f, f"not an image file ({f.suffix or 'no extension'})"))
        else:
            images.append(p)  # named explicitly: let the reader say what is wrong with it
    return images, skipped


# ----------------------------------------------------------------------------- readers


def read_image(path: str | Path, planes: PlaneChoice | None = None, channel_axis: int | None = None,
               memmap: bool | None = None) -> ImageData:
    """Read a TIFF/OME-TIFF, PNG, JPEG or BMP file.

    ``channel_axis`` overrides the channel axis of a plain 3-D TIFF without metadata
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
    if not path.exists():
        raise ImageReadError(path, "file not found")
    if path.is_dir():
        raise ImageReadError(path, "is a folder, not an image file")
    size = path.stat().st_size
    if size == 0:
        raise ImageReadError(path, "file is empty (0 bytes)")
    lower = path.name.lower()
    kind = file_kind(path)  # read by content: a PNG named .tif is still a PNG
    try:
        if not lower.endswith(IMAGE_SUFFIXES):
            raise ImageReadError(path, f"unsupported file type '{path.suffix}' (EffiCell reads TIFF, PNG, JPEG, BMP)")
        if kind == "TIFF" or (kind is None and lower.endswith(TIFF_SUFFIXES)):
            img = _read_tiff(path, planes, channel_axis, memmap)
        else:
            img = _read_raster(path)
    except ImageReadError:
        raise
    except MemoryError as exc:
        raise ImageReadError(path, "image too large to load into memory") from exc
    except Exception as exc:  # noqa: BLE001 - any decoder failure becomes one clear line
        if kind is None:
            raise ImageReadError(path, f"cannot be read as an image: {_NOT_AN_IMAGE}") from exc
        raise ImageReadError(path, f"cannot be read as an image ({_short(exc)}); the file may be damaged or truncated") from exc
    img = _validate(img)
    named = _SUFFIX_KIND.get(path.suffix.lower())
    if kind is not None and named is not None and kind != named:
        img.notes.insert(0, f"the file is a {kind} image although its name ends in '{path.suffix}'; read as {kind}")
    return img


_MAGIC = ((b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"II+\x00", "TIFF"), (b"MM\x00+", "TIFF"),
          (b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"BM", "BMP"))
_NOT_AN_IMAGE = "its content is not TIFF, PNG, JPEG or BMP (another kind of file, or damaged)"
_SUFFIX_KIND = {".tif": "TIFF", ".tiff": "TIFF", ".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP"}


def file_kind(path: str | Path) -> str | None:
    """'TIFF', 'PNG', 'JPEG' or 'BMP' from a file's first bytes (not its name); None for anything else."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError:
        return None
    return next((kind for magic, kind in _MAGIC if head.startswith(magic)), None)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:160]


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
    if _channels_equal(data):
        return ImageData(data=np.ascontiguousarray(data[:1]), path=path)
    return ImageData(data=np.ascontiguousarray(data), path=path, rgb=True)


def _channels_equal(data: np.ndarray) -> bool:
    """True for 'RGB' files that are really grayscale (R == G == B everywhere); compared a block of rows at a time."""
    if data.shape[0] != 3:
        return False
    step = _block_rows(data.shape[2])
    for r in range(0, data.shape[1], step):
        block = data[:, r:r + step]
        if not (np.array_equal(block[0], block[1]) and np.array_equal(block[0], block[2])):
            return False
    return True


def _block_rows(width: int, pixels: int = 4_000_000) -> int:
    """Rows per block for row-wise passes over large images (about ``pixels`` pixels a block)."""
    return max(1, pixels // max(1, width))


def _read_tiff(path: Path, planes: PlaneChoice, channel_axis: int | None, memmap: bool | None = None) -> ImageData:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if not tif.series:
            raise ImageReadError(path, "TIFF holds no image data")
        series = tif.series[0]
        axes = series.axes.upper()
        arr = _tiff_memmap(path, tif, series) if memmap is not False else None
        if arr is not None and memmap is None and arr.nbytes < MEMMAP_MIN_BYTES:
            arr = None
        if arr is None:
            arr = series.asarray()
        pixel_size = _tiff_pixel_size(tif)
        names = _tiff_channel_names(tif)
    data, rgb = _to_cyx(path, arr, axes, planes, channel_axis)
    if names and len(names) != data.shape[0]:
        names = ()
    return ImageData(data=data, path=path, channel_names=tuple(names), pixel_size_um=pixel_size, rgb=rgb)


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


def _to_cyx(path: Path, arr: np.ndarray, axes: str, planes: PlaneChoice, channel_axis: int | None) -> tuple[np.ndarray, bool]:
    """Bring a TIFF series to (C, Y, X), applying the user's z/t choice.

    A memory-mapped series stays a memory map (views only; no copy unless a maximum
    projection is asked for)."""
    mapped = isinstance(arr, np.memmap)
    arr = arr if mapped else np.asarray(arr)
    # Drop singleton axes other than Y and X.
    keep = [i for i, a in enumerate(axes) if arr.shape[i] != 1 or a in "YX"]
    arr = arr.reshape([arr.shape[i] for i in keep])
    axes = "".join(axes[i] for i in keep)
    rgb = "S" in axes and arr.shape[axes.index("S")] in (3, 4)
    # Unlabelled leading axes (Q, I) of a plain TIFF: interpret, or ask.
    unknown = [a for a in axes if a not in "YXCSZT"]
    if unknown:
        if arr.ndim == 3 and axes.endswith("YX"):
            n, last = arr.shape[0], arr.shape[2]
            no_plane_choice = planes.z is None and planes.t is None
            if channel_axis == 0 or (channel_axis is None and n <= 4 and no_plane_choice):
                axes = "C" + axes[1:]
            elif channel_axis == -1 or (channel_axis is None and last <= 4 < n and no_plane_choice):
                axes = "YXC"  # pages of (rows, columns) that are really (Y, X, channels)
            elif planes.z is not None:
                axes = "Z" + axes[1:]
            elif planes.t is not None:
                axes = "T" + axes[1:]
            else:
                raise PlanesNeeded(path, {"Z": n}, unlabelled=True)
        elif arr.ndim == 3 and axes[:2] == "YX" and arr.shape[2] <= 4:
            axes = axes[:2] + "C"
        else:
            raise ImageReadError(path, f"{arr.ndim}-D image with axes '{axes}' and shape {tuple(arr.shape)} "
                                 "cannot be interpreted; save it as 2-D planes or as an OME/ImageJ hyperstack")
    if channel_axis is not None and "C" not in axes and "S" not in axes and arr.ndim == 3:
        axes = "C" + axes[1:] if channel_axis == 0 else axes[:2] + "C"
    missing = {ax: int(arr.shape[axes.index(ax)]) for ax, choice in (("Z", planes.z), ("T", planes.t))
               if ax in axes and choice is None}
    if missing:
        raise PlanesNeeded(path, missing)
    for ax, choice, label in (("T", planes.t, "time points"), ("Z", planes.z, "z-planes")):
        if ax not in axes:
            continue
        i = axes.index(ax)
        n = arr.shape[i]
        if choice == "max":
            arr = arr.max(axis=i)
        else:
            if not 0 <= int(choice) < n:
                raise ImageReadError(path, f"{label[:-1]} {choice} does not exist (the file has {n})")
            arr = arr[(slice(None),) * i + (int(choice),)]  # a view (keeps a memory map mapped)
        axes = axes.replace(ax, "")
    axes = axes.replace("S", "C")
    if axes.count("C") > 1:
        raise ImageReadError(path, f"image has two channel axes ({axes}); cannot interpret")
    if "C" not in axes:
        arr = arr[None]
        axes = "C" + axes
    if set(axes) != set("CYX") or len(axes) != 3:
        raise ImageReadError(path, f"{arr.ndim}-D image with axes '{axes}' cannot be reduced to a 2-D image")
    arr = np.transpose(arr, [axes.index("C"), axes.index("Y"), axes.index("X")])
    if rgb and arr.shape[0] == 4:
        arr = arr[:3]
    if rgb and _channels_equal(arr):
        arr, rgb = arr[:1], False
    if mapped and isinstance(arr, np.memmap):
        return arr, rgb  # a (possibly strided) view of the file: contiguous copies would read it all
    return np.ascontiguousarray(arr), rgb


def _tiff_pixel_size(tif) -> float | None:  # noqa: ANN001 - tifffile.TiffFile
    """Pixel size in µm from OME-XML, ImageJ metadata, or TIFF resolution tags in cm."""
    try:
        if tif.is_ome and tif.ome_metadata:
            root = ET.fromstring(tif.ome_metadata)
            for el in root.iter():
                if el.tag.endswith("Pixels") and el.get("PhysicalSizeX"):
                    unit = el.get("PhysicalSizeXUnit", "µm")
                    factor = _UNIT_TO_UM.get(unit)
                    if factor:
                        return float(el.get("PhysicalSizeX")) * factor
        page = tif.pages[0]
        tags = page.tags
        xres = tags.get("XResolution")
        if xres is None:
            return None
        num, den = xres.value
        if not num:
            return None
        per_unit = den / num  # size of one pixel in the resolution unit
        ij = tif.imagej_metadata or {}
        unit = str(ij.get("unit", "")).strip().lower()
        if tif.is_imagej and unit:
            factor = _UNIT_TO_UM.get(unit)
            return per_unit * factor if factor else None
        res_unit = tags.get("ResolutionUnit")
        if res_unit is not None and int(res_unit.value) == 3:  # centimetre
            value = per_unit * 1e4
            return value if 1e-4 < value < 1e4 else None
    except Exception as exc:  # noqa: BLE001 - bad metadata must not stop the image from loading
        log.debug("ignoring unreadable resolution metadata: %s", exc)
    return None


def _tiff_channel_names(tif) -> tuple[str, ...]:  # noqa: ANN001
    try:
        if tif.is_ome and tif.ome_metadata:
            root = ET.fromstring(tif.ome_metadata)
            names = [el.get("Name") for el in root.iter() if el.tag.endswith("}Channel") or el.tag == "Channel"]
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
        step = _block_rows(w)
        n_bad = sum(int(np.count_nonzero(~np.isfinite(data[:, r:r + step]))) for r in range(0, h, step))
        if n_bad == data.size:
            raise ImageReadError(path, "every pixel is NaN or infinite")
        if n_bad:
            data = np.array(data)  # in memory (a memory map is read-only)
            bad = ~np.isfinite(data)
            fill = np.nanmin(np.where(bad, np.nan, data))
            data[bad] = fill
            img = img.with_data(data)
            img.notes.append(f"{n_bad} NaN/infinite pixel(s) replaced by the image minimum")
    if img.data.size and img.data.min() == img.data.max():
        img.notes.append(f"image is constant (every pixel is {img.data.flat[0]}): no cells can be found")
    return img


# ----------------------------------------------------------------------------- masks


def read_mask(path: str | Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read an instance label image (0 = background) as int32 ``(H, W)``.

    Refuses negative or non-integer labels and, when ``shape`` is given, a different size.
    """
    path = Path(path)
    if not path.exists():
        raise ImageReadError(path, "mask file not found")
    if path.stat().st_size == 0:
        raise ImageReadError(path, "mask file is empty (0 bytes)")
    kind = file_kind(path)  # by content, as read_image
    try:
        if kind == "TIFF" or (kind is None and str(path).lower().endswith(TIFF_SUFFIXES)):
            import tifffile

            arr = np.asarray(tifffile.imread(path))
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
    return arr.astype(np.int32, copy=False)


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


def model_input(img: ImageData, channels: tuple[int, ...] | None = None) -> np.ndarray:
    """The 3-channel normalised float32 array the model sees.

    Grayscale is replicated; RGB is kept; with ``channels`` = (cyto, nucleus) the two are
    placed in the first two planes and their mean in the third. Without ``channels`` a
    multi-channel non-RGB image uses its first channel.
    """
    data = img.data
    if channels is None:
        channels = (0, 1, 2) if img.rgb and img.n_channels >= 3 else (0,)
    for c in channels:
        if c >= img.n_channels:
            raise ImageReadError(img.path, f"channel {c} requested but the image has {img.n_channels} channel(s)")
    sel = normalize(data[list(channels)])
    if sel.shape[0] == 1:
        return np.repeat(sel, 3, axis=0)
    if sel.shape[0] == 2:
        return np.concatenate([sel, sel.mean(axis=0, keepdims=True)], axis=0)
    return sel
