"""The image type every reader returns, and the rules all readers share (plane choice, axes to
(C, H, W), units to µm, scene names). The TIFF/raster readers (:mod:`.images`) and the microscope
readers (:mod:`.readers`) both build on this module, so neither imports the other's internals."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .errors import ImageReadError

# TIFF/OME units to micrometres.
_UNIT_TO_UM = {
    "µm": 1.0, "μm": 1.0, "um": 1.0, "micron": 1.0, "microns": 1.0, "micrometer": 1.0, "micrometre": 1.0,
    "\\u00b5m": 1.0, "nm": 1e-3, "m": 1e6, "meter": 1e6, "metre": 1e6, "nanometer": 1e-3, "mm": 1e3, "millimeter": 1e3, "cm": 1e4,
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
        """From ``--z`` / ``--t``; ValueError with a message for the user when not a plane."""
        zz: int | str | None = None
        if z is not None:
            zz = "max" if z.strip().lower() in ("max", "mip") else _plane(z, "--z", "or 'max' (maximum projection)")
        return cls(z=zz, t=None if t is None else _plane(t, "--t", ""))

    def describe(self) -> str:
        """``"z max"``, ``"z 3, t 2"`` (planes counted from 1, as a microscope's software counts them);
        ``""`` for an image with neither axis."""
        parts = []
        if self.z is not None:
            parts.append("z max" if self.z == "max" else f"z {int(self.z) + 1}")
        if self.t is not None:
            parts.append(f"t {int(self.t) + 1}")
        return ", ".join(parts)


class PlanesNeeded(ImageReadError):
    """A z-stack or time series read without saying which plane to use.

    ``sizes`` maps each axis still to choose (``"Z"``, ``"T"``) to its number of planes, all of
    them at once (the window's plane dialog asks for every axis in one go); ``unlabelled`` is set
    when the file does not say what its planes are (they may also be channels). The message names
    no command-line option: the window asks with a dialog, the command line adds its own options
    (:attr:`command_line`).
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
        """The options of ``efficell segment`` (``measure``, ``train``) that choose these planes."""
        if self.unlabelled:
            return "--z N|max or --t N"
        return " and ".join("--z N or --z max" if ax == "Z" else "--t N" for ax in self.sizes)


def _plane(text: str, option: str, alternative: str) -> int:
    value = text.strip()
    if not value.isdigit():
        raise ValueError(f"{option} must be a plane number (0, 1, 2, ...){' ' + alternative if alternative else ''}, "
                         f"not '{text}'")
    return int(value)


@dataclass
class ImageData:
    """An image as read from disk: raw values, channel-first."""

    data: np.ndarray  # (C, H, W), the file's dtype
    path: Path | None = None
    channel_names: tuple[str, ...] = ()
    pixel_size_um: float | None = None
    rgb: bool = False  # an RGB(A) colour image such as H&E histology
    notes: list[str] = field(default_factory=list)  # warnings worth showing the user
    scene: str | None = None  # the scene's name when the file holds several (see scene_names)
    #: (C, H, W) bool: NaN/infinite pixels the reader replaced (so that segmentation can run); their
    #: values are not the file's, so measurements leave them out. None: every pixel is the file's.
    replaced: np.ndarray | None = None

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

    def with_data(self, data: np.ndarray, replaced: np.ndarray | None = None) -> ImageData:
        return replace(self, data=data, notes=list(self.notes), replaced=replaced)


def unique_scene_names(names: list[str | None]) -> list[str]:
    """Scene names as shown to the user: the file's own where they are there and distinct, else ``scene k``."""
    clean = [(n or "").strip() for n in names]
    if all(clean) and len(set(clean)) == len(clean):
        return clean
    return [f"scene {k}" for k in range(len(names))]


def check_scene(path: Path, scene: int | None, names: list[str]) -> int:
    """The scene index to read: ``scene`` when it exists, 0 for a single-scene file; otherwise a clear error."""
    if scene is None:
        if len(names) > 1:
            shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
            raise ImageReadError(path, f"holds {len(names)} scenes ({shown}); 'efficell segment' and projects read "
                                 "each scene as an image of its own, other commands need one image per file")
        return 0
    if not 0 <= int(scene) < len(names):
        raise ImageReadError(path, f"scene {scene} does not exist (the file holds {len(names)})")
    return int(scene)


def block_rows(width: int, pixels: int = 4_000_000) -> int:
    """Rows per block for row-wise passes over large images (about ``pixels`` pixels a block)."""
    return max(1, pixels // max(1, width))


def channels_equal(data: np.ndarray) -> bool:
    """True for 'RGB' files that are really grayscale (R == G == B everywhere); compared a block of rows at a time."""
    if data.shape[0] != 3:
        return False
    step = block_rows(data.shape[2])
    for r in range(0, data.shape[1], step):
        block = data[:, r:r + step]
        if not (np.array_equal(block[0], block[1]) and np.array_equal(block[0], block[2])):
            return False
    return True


def to_cyx(path: Path, arr: np.ndarray, axes: str, planes: PlaneChoice, channel_axis: int | None) -> tuple[np.ndarray, bool]:
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
    check_planes(path, {ax: int(arr.shape[axes.index(ax)]) for ax in "TZ" if ax in axes}, planes)
    for ax in "TZ":
        if ax not in axes:
            continue
        i = axes.index(ax)
        index = plane_index(path, ax, arr.shape[i], planes)
        if index is None:
            arr = arr.max(axis=i)
        else:
            arr = arr[(slice(None),) * i + (index,)]  # a view (keeps a memory map mapped)
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
    if rgb and channels_equal(arr):
        arr, rgb = arr[:1], False
    if mapped and isinstance(arr, np.memmap):
        return arr, rgb  # a (possibly strided) view of the file: contiguous copies would read it all
    return np.ascontiguousarray(arr), rgb


def check_planes(path: Path | None, sizes: dict[str, int], planes: PlaneChoice) -> None:
    """Raise :class:`PlanesNeeded` once, naming every ``Z``/``T`` axis of ``sizes`` (axis -> planes)
    that has more than one plane and no choice in ``planes``. Readers call it when they know all
    axis sizes, before reading pixels, so the window's plane dialog learns every axis at once."""
    missing = {ax: int(sizes[ax]) for ax, choice in (("Z", planes.z), ("T", planes.t))
               if int(sizes.get(ax, 1)) > 1 and choice is None}
    if missing:
        raise PlanesNeeded(path, missing)


def plane_index(path: Path | None, axis: str, n: int, planes: PlaneChoice) -> int | None:
    """The plane of a ``T`` or ``Z`` axis of ``n`` planes to read: an index, or None for a maximum
    projection. An axis of one plane needs no choice. One rule for every reader."""
    if n <= 1:
        return 0
    choice, label = (planes.t, "time points") if axis == "T" else (planes.z, "z-planes")
    if choice is None:
        raise PlanesNeeded(path, {axis: n})
    if choice == "max":
        if axis == "T":
            raise ImageReadError(path, "a maximum projection over time is not offered; choose a time point")
        return None
    if not 0 <= int(choice) < n:
        raise ImageReadError(path, f"{label[:-1]} {choice} does not exist (the file has {n}, numbered 0 to {n - 1})")
    return int(choice)


def to_um(value: float | str | None, unit: str | None = "µm") -> float | None:
    """A length in ``unit`` as µm; None when missing, not positive or in an unknown unit."""
    try:
        v = float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
    factor = _UNIT_TO_UM.get((unit or "µm").strip().lower())
    if v is None or factor is None or not np.isfinite(v) or v <= 0:
        return None
    return float(f"{v * factor:.10g}")  # 1.6e-06 m is 1.6 µm, not 1.5999999999999999


SQUARE_TOLERANCE = 0.01  # pixel width and height within 1 % of each other: square


def square_pixel_size(x_um: float | None, y_um: float | None) -> tuple[float | None, str | None]:
    """The pixel size of a file whose pixels are ``x_um`` wide and ``y_um`` high: ``x_um`` when they are
    square (or the height is not recorded), else None and a note: lengths and areas in µm need square
    pixels (one size per pixel), so such an image is measured in pixels rather than with a wrong area."""
    if x_um is None or y_um is None or abs(x_um - y_um) <= SQUARE_TOLERANCE * max(x_um, y_um):
        return x_um, None
    return None, (f"its pixels are not square ({x_um:g} x {y_um:g} µm): measured in pixels (areas and lengths in "
                  "µm need square pixels)")
