"""The weights store: where encoder weights live, how they arrive, and how they are checked.

Cache folder: ``$EFFICELL_WEIGHTS_DIR``, else ``$EFFICELL_HOME/weights``, else
``<platformdirs user data dir>/EffiCell/weights``. Files arrive by :func:`download`
(HTTP, resumable from a ``.part`` file, checksum-verified, moved into place atomically)
or :func:`import_file` (a file the user already has, e.g. copied from another computer).

Checksums: the published sha256 when there is one; otherwise the hash of the first
verified download/import is pinned in ``checksums.json`` in the cache folder and later
files are checked against it. The same file records (size, mtime) of each verified file
so that loading does not re-hash gigabytes every time.

Also here: reading checkpoint files (:func:`read_checkpoint`) and loading them strictly
(:func:`check_and_load`), shared by the SAM and DINOv2 loaders.
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import json
import logging
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import WeightsError
from ..fileio import atomic_path, atomic_write_text

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ..cancel import CancelToken
    from .registry import EncoderSpec, WeightSource

log = logging.getLogger(__name__)

RECORDS_FILE = "checksums.json"
_CHUNK = 1 << 20
ProgressFn = Callable[[int, "int | None"], None]


# ----------------------------------------------------------------------------- locations

def cache_dir() -> Path:
    """The folder holding downloaded/imported encoder weights (not created here)."""
    env = os.environ.get("EFFICELL_WEIGHTS_DIR")
    if env:
        return Path(env).expanduser()
    home = os.environ.get("EFFICELL_HOME")
    if home:
        return Path(home).expanduser() / "weights"
    import platformdirs

    return Path(platformdirs.user_data_dir("EffiCell", appauthor=False)) / "weights"


def _source(spec: EncoderSpec) -> WeightSource:
    if spec.weights is None:
        raise WeightsError(f"{spec.name}: this encoder has no published weights")
    return spec.weights


def weights_path(spec: EncoderSpec) -> Path:
    """Where the weights of ``spec`` are (bundled ones: inside the installation)."""
    src = _source(spec)
    if spec.builtin:
        from ..resources import models_dir

        return models_dir() / src.filename
    return cache_dir() / src.filename


def is_present(spec: EncoderSpec) -> bool:
    """Whether the weights file is on this computer (not checksummed here)."""
    if spec.weights is None:
        return False
    return weights_path(spec).is_file()


def format_size(n: int | None) -> str:
    """``375042383`` -> ``'358 MB'`` (binary units, as file managers show)."""
    if n is None:
        return "?"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit in ("B", "KB", "MB") else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def import_hint(spec: EncoderSpec) -> str:
    """How to get the weights onto a computer without internet."""
    src = _source(spec)
    return (
        f"On a computer without internet, download {src.url} elsewhere, copy it here and run "
        f"`efficell models import {spec.name} FILE`."
    )


def offline_message(spec: EncoderSpec) -> str:
    """What to do when the weights are missing: which file, from where, and the import command."""
    src = _source(spec)
    size = f", {format_size(src.size_bytes)}" if src.size_bytes else ""
    return (
        f"{spec.name}: the weights file {src.filename} is not on this computer (looked in {cache_dir()}). "
        f"Run `efficell models download {spec.name}` to fetch it ({src.filename}{size}). " + import_hint(spec)
    )


# ----------------------------------------------------------------------------- checksums

def file_sha256(path: str | Path, chunk_size: int = 4 * _CHUNK) -> str:
    """sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk_size):
            h.update(block)
    return h.hexdigest()


def _records_path() -> Path:
    return cache_dir() / RECORDS_FILE


def _read_records() -> dict[str, dict[str, Any]]:
    path = _records_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("%s: unreadable checksum records (%s); they will be rebuilt", path, exc)
        return {}
    return data if isinstance(data, dict) else {}


def _write_record(spec: EncoderSpec, path: Path, sha: str) -> None:
    """Remember that ``path`` (as it is now) has hash ``sha``; pins it when no hash is published."""
    records = _read_records()
    st = path.stat()
    records[_source(spec).filename] = {
        "sha256": sha,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "pinned": _source(spec).sha256 is None,
        "encoder": spec.name,
    }
    cache_dir().mkdir(parents=True, exist_ok=True)
    atomic_write_text(_records_path(), json.dumps(records, indent=1, sort_keys=True))


def expected_sha256(spec: EncoderSpec) -> str | None:
    """The published sha256, else the one pinned by the first verified download/import."""
    src = _source(spec)
    if src.sha256:
        return src.sha256.lower()
    rec = _read_records().get(src.filename)
    if rec and rec.get("pinned") and isinstance(rec.get("sha256"), str):
        return str(rec["sha256"])
    return None


def known_sha256(spec: EncoderSpec) -> str | None:
    """sha256 of the cached file when it was verified and has not changed since (no hashing)."""
    if spec.weights is None:
        return None
    path = weights_path(spec)
    rec = _read_records().get(spec.weights.filename)
    try:
        st = path.stat()
    except OSError:
        return None
    if rec and rec.get("size") == st.st_size and rec.get("mtime_ns") == st.st_mtime_ns:
        return str(rec["sha256"])
    if spec.builtin:  # shipped inside the package: hashed once per process (a few MB)
        return spec.weights.sha256 or _bundled_sha256(str(path), st.st_size, st.st_mtime_ns)
    return None


@functools.lru_cache(maxsize=8)
def _bundled_sha256(path: str, size: int, mtime_ns: int) -> str:  # noqa: ARG001 - size and time key the cache
    return file_sha256(path)


def _check_layout(spec: EncoderSpec, path: Path, shown: str | Path) -> None:
    """Load ``path`` into a memory-free (meta) model: catches a wrong file before its hash is pinned."""
    import torch

    if spec.load_checkpoint is None:
        return
    with torch.device("meta"):
        backbone = spec.builder(small=False)
    try:
        spec.load_checkpoint(backbone, path)
    except WeightsError as exc:
        raise WeightsError(str(exc).replace(str(path), str(shown))) from exc


def ensure_weights_file(spec: EncoderSpec) -> Path:
    """Path of usable weights for ``spec``, verified; raises :class:`WeightsError` saying what to do."""
    path = weights_path(spec)
    if spec.builtin:
        if not path.is_file():
            raise WeightsError(f"{path}: the built-in weights of {spec.name} are missing from this installation; reinstall EffiCell")
        return path
    if not path.is_file():
        raise WeightsError(offline_message(spec))
    known, expected = known_sha256(spec), expected_sha256(spec)
    if known is not None and (expected is None or known == expected):
        return path
    log.info("verifying %s", path)
    sha = file_sha256(path)
    if expected is not None and sha != expected:
        raise WeightsError(
            f"{path}: checksum {sha[:12]}... does not match the expected {expected[:12]}... for {spec.name} "
            f"(damaged or a different file); delete it and run `efficell models download {spec.name}` "
            f"or `efficell models import {spec.name} FILE`"
        )
    if expected is None:
        _check_layout(spec, path, path)
    _write_record(spec, path, sha)
    return path


# ----------------------------------------------------------------------------- download

def _interrupted(url: str, done: int, total: int | None, why: object) -> WeightsError:
    of = f" of {total}" if total else ""
    return WeightsError(
        f"{url}: download interrupted after {done}{of} bytes ({why}); run the same download again to resume"
    )


def download(
    spec: EncoderSpec,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
    url: str | None = None,
    timeout: float = 30.0,
) -> Path:
    """Fetch the weights of ``spec`` into the cache and return their path.

    Resumes from ``<file>.part`` with an HTTP Range request; checks the sha256 (published or
    pinned; a mismatch deletes the partial file); moves the file into place atomically.
    ``progress(done_bytes, total_bytes_or_None)`` is called per chunk; ``cancel`` is checked
    per chunk (the partial file is kept for a later resume). ``url`` overrides the source.
    """
    src = _source(spec)
    if spec.builtin:
        raise WeightsError(f"{spec.name}: its weights ship with EffiCell; nothing to download")
    url = url or src.url
    dest = weights_path(spec)
    if dest.is_file():
        try:
            ensure_weights_file(spec)
            return dest
        except WeightsError as exc:
            log.warning("%s; downloading it again", exc)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightsError(f"{dest.parent}: cannot create the weights folder ({exc.strerror or exc})") from exc
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    from ... import __version__

    headers = {"User-Agent": f"EffiCell/{__version__}", "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    hasher = hashlib.sha256()
    done, total = 0, src.size_bytes
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)  # noqa: S310 - https/http only
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to fetch: the partial file is complete
            done = total = have
            resp = None
        elif exc.code == 404:
            raise WeightsError(f"{url}: not found on the server (HTTP 404); the file may have moved. {import_hint(spec)}") from exc
        else:
            raise WeightsError(f"{url}: the server answered HTTP {exc.code} ({exc.reason}); try again later") from exc
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise WeightsError(f"{url}: cannot reach {urllib.parse.urlsplit(url).netloc or url} ({reason}). {import_hint(spec)}") from exc

    if resp is None:
        _hash_into(hasher, part)
    else:
        with resp:
            start = 0
            if resp.status == 206:
                m = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", resp.headers.get("Content-Range", ""))
                start = int(m.group(1)) if m else -1
                if start != have:
                    part.unlink(missing_ok=True)
                    raise WeightsError(f"{url}: the server resumed at the wrong place; partial file deleted, run the download again")
                if m and m.group(3) != "*":
                    total = int(m.group(3))
                _hash_into(hasher, part)
            else:
                length = resp.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else total
            done = start
            if progress is not None:
                progress(done, total)
            try:
                with open(part, "ab" if start else "wb") as fh:
                    while True:
                        if cancel is not None:
                            cancel.raise_if_cancelled()
                        try:
                            block = resp.read(_CHUNK)
                        except (OSError, http.client.HTTPException) as exc:
                            raise _interrupted(url, done, total, exc) from exc
                        if not block:
                            break
                        fh.write(block)
                        hasher.update(block)
                        done += len(block)
                        if progress is not None:
                            progress(done, total)
                    fh.flush()
                    os.fsync(fh.fileno())
            except OSError as exc:
                raise WeightsError(f"{part}: cannot write the download ({exc.strerror or exc})") from exc
        if total is not None and done < total:
            raise _interrupted(url, done, total, "the connection closed early")
    return _finish(spec, part, dest, hasher.hexdigest(), url)


def _hash_into(hasher: Any, path: Path) -> None:
    with open(path, "rb") as fh:
        while block := fh.read(4 * _CHUNK):
            hasher.update(block)


def _finish(spec: EncoderSpec, part: Path, dest: Path, sha: str, origin: str) -> Path:
    """Verify the complete ``part`` and move it onto ``dest``; a bad file is deleted."""
    expected = expected_sha256(spec)
    if expected is not None and sha != expected:
        part.unlink(missing_ok=True)
        raise WeightsError(
            f"{origin}: checksum of the downloaded {dest.name} ({sha[:12]}...) does not match the expected "
            f"{expected[:12]}...; the damaged file was deleted, run the download again"
        )
    if expected is None:
        try:
            _check_layout(spec, part, origin)
        except WeightsError:
            part.unlink(missing_ok=True)
            raise
    os.replace(part, dest)
    _write_record(spec, dest, sha)
    log.info("%s: saved %s (sha256 %s)", spec.name, dest, sha)
    return dest


def import_file(spec: EncoderSpec, path: str | Path) -> Path:
    """Copy a weights file the user already has into the cache (checksum verified when known)."""
    src = _source(spec)
    if spec.builtin:
        raise WeightsError(f"{spec.name}: its weights ship with EffiCell; nothing to import")
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: file not found")
    dest = weights_path(spec)
    expected = expected_sha256(spec)
    if expected is None:
        _check_layout(spec, path, path)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightsError(f"{dest.parent}: cannot create the weights folder ({exc.strerror or exc})") from exc
    if dest.exists() and dest.resolve() == path.resolve():
        ensure_weights_file(spec)
        return dest
    with atomic_path(dest) as tmp:
        h = hashlib.sha256()
        with open(path, "rb") as fin, open(tmp, "wb") as fout:
            while block := fin.read(4 * _CHUNK):
                h.update(block)
                fout.write(block)
            fout.flush()
            os.fsync(fout.fileno())
        sha = h.hexdigest()
        if expected is not None and sha != expected:
            raise WeightsError(
                f"{path}: checksum {sha[:12]}... does not match the published {src.filename} for {spec.name} "
                f"(expected {expected[:12]}...): a different or damaged file"
            )
    _write_record(spec, dest, sha)
    log.info("%s: imported %s -> %s", spec.name, path, dest)
    return dest


# ----------------------------------------------------------------------------- checkpoint files

def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.pth``/``.pt`` (``torch.load(weights_only=True)``) or ``.safetensors`` file.

    Raises :class:`WeightsError` naming the file when it is missing or not a readable checkpoint.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    obj: Any
    try:
        if ".safetensors" in path.name:
            from safetensors.torch import load_file

            obj = load_file(str(path))
        else:
            try:
                obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as exc:  # legacy (non-zip) files cannot be memory-mapped
                if "mmap" not in str(exc):
                    raise
                obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unpickling/zip/safetensors raise many types; all mean "unreadable"
        raise WeightsError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {str(exc)[:160]})") from exc
    for key in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise WeightsError(f"{path}: not a checkpoint of named tensors (holds a {type(obj).__name__})")
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise WeightsError(f"{path}: not a checkpoint of named tensors (no tensors in it)")
    return tensors


def check_vit_size(vit: nn.Module, state: dict[str, torch.Tensor], path: str | Path, name: str,
                   sizes: dict[int, str], family: str = "") -> None:
    """WeightsError naming ``path`` when ``state`` (timm ViT names) is for another width or depth
    than ``vit``; ``sizes`` names the known widths (``{768: "ViT-B/14"}``), ``family`` prefixes them."""
    dim = int(state["patch_embed.proj.weight"].shape[0])
    n_blocks = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    if dim != int(vit.patch_embed.proj.weight.shape[0]) or n_blocks != len(vit.blocks):
        other = sizes.get(dim, f"a {dim}-wide, {n_blocks}-block model")
        raise WeightsError(f"{path}: this checkpoint is for {family}{other}, not {name}")


def check_and_load(module: nn.Module, state: dict[str, torch.Tensor], path: str | Path, what: str) -> None:
    """Load ``state`` into ``module`` after checking every name and shape; errors name ``path``."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} tensors missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        raise WeightsError(f"{path}: not a {what} checkpoint: " + ", ".join(parts))
    for k, v in own.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise WeightsError(f"{path}: not a {what} checkpoint: {k} has shape {tuple(state[k].shape)}, expected {tuple(v.shape)}")
    if any(t.is_meta for t in own.values()):
        return  # a memory-free model (layout check only): names and shapes are all there is to check
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
    module.load_state_dict(state, strict=True)
