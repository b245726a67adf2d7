"""The project's adapter library: trained adapters with name, encoder, training images, metrics.

Adapter files are safetensors files written by ``efficell_app.core``; this module copies them
into ``adapters/`` unchanged and keeps the library entry (name, encoder, ...) in the index.
Only the safetensors *header* is read or rewritten (for export/import as one file: the entry
travels in the header's ``__metadata__`` under ``efficell.library``); tensor bytes are copied
as they are.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import AdapterError
from ..core.fileio import atomic_path
from .errors import NotFoundError, ProjectError
from .images import clean_name, sha256_file
from .labelfile import remove_files
from .store import Store, from_json, now_iso, to_json

LIBRARY_KEY = "efficell.library"
CORE_KEY = "efficell"  # efficell_app.core.model.adapter_io.META_KEY
_MAX_HEADER = 100 << 20
_ENCODER_KEYS = ("encoder", "encoder_name")


@dataclass(frozen=True)
class AdapterInfo:
    id: int
    name: str
    encoder: str
    path: Path
    sha256: str
    size: int
    training_images: tuple[str, ...]
    metrics: dict[str, Any]
    metadata: dict[str, Any]
    created: str


def read_safetensors_header(path: str | Path) -> tuple[dict[str, Any], int]:
    """The JSON header of a safetensors file and the offset where tensor data starts."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            raw = fh.read(8)
            if len(raw) < 8:
                raise AdapterError(path, "not an adapter file (too short to be safetensors)")
            n = int.from_bytes(raw, "little")
            if n < 2 or n > _MAX_HEADER or 8 + n > size:
                raise AdapterError(path, "not an adapter file (no valid safetensors header)")
            header = json.loads(fh.read(n).decode("utf-8"))
    except FileNotFoundError as exc:
        raise AdapterError(path, "file not found") from exc
    except OSError as exc:
        raise AdapterError(path, f"cannot be read ({exc.strerror or exc})") from exc
    except (UnicodeDecodeError, ValueError) as exc:
        raise AdapterError(path, "not an adapter file (damaged safetensors header)") from exc
    if not isinstance(header, dict):
        raise AdapterError(path, "not an adapter file (damaged safetensors header)")
    return header, 8 + n


def _info(store: Store, r: Any) -> AdapterInfo:
    return AdapterInfo(
        id=int(r["id"]), name=str(r["name"]), encoder=str(r["encoder"]), path=store.from_stored(r["path"]),
        sha256=str(r["sha256"]), size=int(r["size"]), training_images=tuple(from_json(r["training_images"], []) or ()),
        metrics=from_json(r["metrics"], {}) or {}, metadata=from_json(r["metadata"], {}) or {},
        created=str(r["created"]),
    )


def list_adapters(store: Store) -> list[AdapterInfo]:
    return [_info(store, r) for r in store.query("SELECT * FROM adapters ORDER BY name COLLATE NOCASE")]


def get_adapter(store: Store, key: str | int) -> AdapterInfo:
    if isinstance(key, int):
        r = store.one("SELECT * FROM adapters WHERE id = ?", (key,))
    else:
        r = store.one("SELECT * FROM adapters WHERE name = ?", (key,))
    if r is None:
        raise NotFoundError(f"no adapter '{key}' in the project")
    return _info(store, r)


def _name_taken(store: Store, name: str, except_id: int | None = None) -> bool:
    return store.one("SELECT id FROM adapters WHERE name = ? AND id != ?", (name, -1 if except_id is None else except_id)) is not None


def core_metadata(header: dict[str, Any]) -> dict[str, Any]:
    """The metadata ``efficell_app.core`` writes into an adapter file (``{}`` when absent)."""
    meta = header.get("__metadata__") or {}
    entry = from_json(meta.get(CORE_KEY), {}) if isinstance(meta, dict) else {}
    return entry if isinstance(entry, dict) else {}


def _core_training_images(core: dict[str, Any]) -> tuple[str, ...]:
    images = (core.get("training") or {}).get("images") if isinstance(core.get("training"), dict) else None
    return tuple(str(x) for x in images) if isinstance(images, list) else ()


def add_adapter(store: Store, file: str | Path, name: str | None = None, encoder: str | None = None,
                training_images: tuple[str, ...] | list[str] | None = None, metrics: dict[str, Any] | None = None,
                metadata: dict[str, Any] | None = None) -> AdapterInfo:
    """Copy an adapter file into the library under ``name`` (which must be new).

    Name, encoder, training images and metrics default to what the file's own EffiCell
    metadata says; an encoder must be known one way or the other.
    """
    from ..core.model.adapter_io import check_adapter_file

    file = Path(file)
    header, _ = read_safetensors_header(file)  # refuse anything that is not a safetensors file
    check_adapter_file(file)  # ... and one that is cut short, holds NaN, or fails its checksum
    core = core_metadata(header)
    name = clean_name(name or str(core.get("name") or "") or file.stem, "adapter")
    encoder = encoder or core.get("encoder")
    if not encoder:
        raise AdapterError(file, "the adapter file does not say which encoder it was trained for")
    if training_images is None:
        training_images = _core_training_images(core)
    if metrics is None:
        metrics = core.get("metrics") if isinstance(core.get("metrics"), dict) else {}
    with store.write_lock:
        if _name_taken(store, name):
            raise ProjectError(f"an adapter named '{name}' already exists in the project; choose another name")
        digest = sha256_file(file)
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._")[:60] or "adapter"
        dest = store.root / "adapters" / f"{stem}-{digest[:12]}.safetensors"
        dest.parent.mkdir(parents=True, exist_ok=True)
        stored = store.to_stored(dest)
        if not (dest.is_file() and sha256_file(dest) == digest):
            store.intend_write(stored)
            with atomic_path(dest) as tmp:
                shutil.copyfile(file, tmp)
        with store.tx() as conn:
            cur = conn.execute(
                "INSERT INTO adapters(name, encoder, path, sha256, size, training_images, metrics, metadata, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (name, str(encoder), stored, digest, dest.stat().st_size,
                 to_json(list(training_images)), to_json(metrics or {}), to_json(metadata or {}), now_iso()))
            aid = int(cur.lastrowid)
            store.settle(conn, [stored])
    return get_adapter(store, aid)


def rename_adapter(store: Store, key: str | int, new_name: str) -> AdapterInfo:
    info = get_adapter(store, key)
    new_name = clean_name(new_name, "adapter")
    with store.write_lock:
        if _name_taken(store, new_name, except_id=info.id):
            raise ProjectError(f"an adapter named '{new_name}' already exists in the project")
        with store.tx() as conn:
            conn.execute("UPDATE adapters SET name = ? WHERE id = ?", (new_name, info.id))
    return get_adapter(store, info.id)


def delete_adapter(store: Store, key: str | int) -> None:
    info = get_adapter(store, key)
    with store.write_lock:
        stored = store.to_stored(info.path)
        with store.tx() as conn:
            conn.execute("DELETE FROM adapters WHERE id = ?", (info.id,))
            shared = conn.execute("SELECT count(*) FROM adapters WHERE path = ?", (stored,)).fetchone()[0]
            if not shared:
                store.journal(conn, [stored], "delete")
        if not shared:
            remove_files([info.path])
            info.path.parent.mkdir(exist_ok=True)  # keep adapters/ even when it became empty
            store.settled([stored])


def _library_entry(info: AdapterInfo) -> dict[str, Any]:
    return {"name": info.name, "encoder": info.encoder, "training_images": list(info.training_images),
            "metrics": info.metrics, "metadata": info.metadata, "created": info.created}


def export_adapter(store: Store, key: str | int, dest: str | Path) -> Path:
    """Write the adapter as one safetensors file that carries its library entry.

    When the file's own metadata already holds the entry it is copied byte for byte (its
    SHA-256, recorded with every result, stays the same); otherwise (renamed, extra metrics)
    the entry is added to the header under ``efficell.library`` and the tensors are copied
    unchanged.
    """
    info = get_adapter(store, key)
    dest = Path(dest)
    if dest.is_dir():
        dest = dest / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', info.name).strip('._') or 'adapter'}.safetensors"
    header, data_start = read_safetensors_header(info.path)
    core = core_metadata(header)
    if (core.get("name") == info.name and core.get("encoder") == info.encoder and not info.metadata
            and (core.get("metrics") or {}) == info.metrics and _core_training_images(core) == info.training_images):
        # The file already carries the whole entry: export it byte for byte (same SHA-256).
        with atomic_path(dest) as tmp:
            shutil.copyfile(info.path, tmp)
        return dest
    meta = dict(header.get("__metadata__") or {})
    meta[LIBRARY_KEY] = to_json(_library_entry(info))
    new_header = dict(header)
    new_header["__metadata__"] = {str(k): str(v) for k, v in meta.items()}
    raw = json.dumps(new_header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # safetensors pads the header to 8 bytes
    with atomic_path(dest) as tmp:
        with open(info.path, "rb") as src, open(tmp, "wb") as out:
            out.write(len(raw).to_bytes(8, "little"))
            out.write(raw)
            src.seek(data_start)
            shutil.copyfileobj(src, out, 1 << 22)
    return dest


def import_adapter(store: Store, file: str | Path, name: str | None = None) -> AdapterInfo:
    """Add an adapter file to the library; its entry comes from the header (library entry,
    else the core's metadata). A name already in use gets " (2)", " (3)", ... appended."""
    file = Path(file)
    header, _ = read_safetensors_header(file)
    meta = header.get("__metadata__") or {}
    entry = from_json(meta.get(LIBRARY_KEY), {}) if isinstance(meta, dict) else {}
    entry = entry if isinstance(entry, dict) else {}
    core = core_metadata(header)
    encoder = entry.get("encoder") or core.get("encoder") or next((meta.get(k) for k in _ENCODER_KEYS if meta.get(k)), None)
    if not encoder:
        raise AdapterError(file, "the adapter file does not say which encoder it was trained for")
    base = clean_name(name or entry.get("name") or core.get("name") or meta.get("name") or file.stem, "adapter")
    final, n = base, 2
    while _name_taken(store, final):
        final, n = f"{base} ({n})", n + 1
    images = entry.get("training_images")
    return add_adapter(store, file, final, str(encoder), tuple(images) if isinstance(images, list) else None,
                       entry.get("metrics") if isinstance(entry.get("metrics"), dict) else None,
                       entry.get("metadata") or {})
