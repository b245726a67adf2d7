"""File stems and image/mask pairing by name, shared by the commands and the project.

An image ``<stem>.tif`` and its mask pair by stem: the mask is ``<stem>.tif`` in another
folder, or ``<stem>_masks.tif`` (``_cp_masks``, ``_mask``, ``_labels``; ``.tiff`` and
``.png`` too) anywhere. ``.ome.tif`` / ``.ome.tiff`` count as one extension.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

MASK_EXTENSIONS = (".tif", ".tiff", ".png")
#: name endings that mark a mask file, in the order ``find_mask`` prefers them
MASK_TAILS = ("_masks", "_cp_masks", "_mask", "_labels")
_OME = (".ome.tiff", ".ome.tif")


def split_name(name: str) -> tuple[str, str]:
    """``(stem, extension)`` of a file name; ``.ome.tif(f)`` is one extension (``"a.ome.tif"`` -> ``("a", ".ome.tif")``)."""
    low = name.lower()
    for ext in _OME:
        if low.endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)], name[-len(ext):]
    p = Path(name)
    return p.stem, p.suffix


def image_stem(path: str | Path) -> str:
    """The file name without its extension (``.ome.tif`` counted as one)."""
    return split_name(Path(path).name)[0]


def mask_stem(path: str | Path) -> str:
    """The pairing key of an image or mask file: its stem without a mask tail (``_masks`` ...).

    A name that is only a tail (``_masks.tif``) keeps it.
    """
    stem = image_stem(path)
    low = stem.lower()
    for tail in sorted(MASK_TAILS, key=len, reverse=True):
        if low.endswith(tail) and len(stem) > len(tail):
            return stem[: -len(tail)]
    return stem


def is_mask_name(path: str | Path) -> bool:
    """True when the name ends in a mask tail (``x_masks.tif``), so it is a mask even beside its image."""
    return mask_stem(path) != image_stem(path)


def mask_files_by_stem(folder: Path, keep: Callable[[Path], bool] | None = None) -> dict[str, list[Path]]:
    """Mask-like files (``MASK_EXTENSIONS``, not hidden) directly in ``folder``, sorted, grouped by :func:`mask_stem`.

    ``keep`` filters the files further.
    """
    found: dict[str, list[Path]] = {}
    for f in sorted(folder.iterdir()):
        is_mask = f.is_file() and not f.name.startswith(".") and f.name.lower().endswith(MASK_EXTENSIONS)
        if is_mask and (keep is None or keep(f)):
            found.setdefault(mask_stem(f), []).append(f)
    return found


def shared_stems(found: dict[str, list[Path]], what: str = "files") -> Iterable[tuple[Path, str]]:
    """``(first path, reason)`` for each stem that several files share: ambiguous, not guessed."""
    for stem, paths in found.items():
        if len(paths) > 1:
            others = ", ".join(p.name for p in paths[1:])
            yield paths[0], f"several {what} have the stem '{stem}' ({others} too); keep one"


def find_mask(image: Path, masks_dir: Path) -> Path | None:
    """The mask of ``image`` in ``masks_dir`` (``<stem><tail><ext>``, a bare ``<stem><ext>`` last), or None."""
    stem = image_stem(image)
    for tail in (*MASK_TAILS, ""):
        for ext in MASK_EXTENSIONS + tuple(e.upper() for e in MASK_EXTENSIONS):
            cand = masks_dir / f"{stem}{tail}{ext}"
            if cand.is_file() and cand.resolve() != image.resolve():
                return cand
    return None
