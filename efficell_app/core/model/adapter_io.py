"""Adapter files: one safetensors file (tensors) with the EffiCell metadata as JSON in its header.

safetensors holds only tensors and strings: loading an adapter from another lab cannot run
code (no pickle). The metadata says which encoder (name and weights sha256) the adapter was
trained for; loading it with another encoder is refused.

Every adapter is checked before use (:func:`check_adapter_file`): the tensors must lie inside
the file (a truncated file is refused), every floating-point value must be finite, and the
tensors must match ``tensors_sha256``, the checksum recorded in the metadata when the file was
saved (adapters saved by older versions have none and are only checked for the first two).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import AdapterError
from ..fileio import atomic_write_bytes

FORMAT = "efficell-adapter"
FORMAT_VERSION = 1
META_KEY = "efficell"
RANDOM_WEIGHTS = "random"  # encoder identity when it has no pretrained weights (tests)


@dataclass
class AdapterMeta:
    """Everything needed to use an adapter the way it was trained."""

    encoder: str
    encoder_sha256: str
    in_channels: tuple[int, ...]
    stride: int
    config: dict[str, Any]
    target_diameter: float = 24.0  # model scale: images are rescaled so their cells have this many pixels
    cell_diameter: float | None = None  # input pixels: the cells of the images it was trained on; used when
    # segmenting without a given diameter (None: estimated per image)
    channels: tuple[int, ...] | None = None  # channel spec it was trained with (None = auto)
    normalisation: dict[str, float] = field(default_factory=lambda: {"low_percentile": 1.0, "high_percentile": 99.8})
    instance_params: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    description: str = ""
    training: dict[str, Any] = field(default_factory=dict)  # images summary, settings, time
    metrics: dict[str, Any] = field(default_factory=dict)
    licence: str = ""
    app_version: str = ""
    created: str = ""
    tensors_sha256: str = ""  # tensors_digest() of the file's tensors, recorded by save_adapter

    def to_json(self) -> str:
        d = dict(self.__dict__)
        d["in_channels"] = list(self.in_channels)
        d["channels"] = None if self.channels is None else list(self.channels)
        return json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION, **d}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, path: Path | None = None) -> AdapterMeta:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise AdapterError(path, f"adapter metadata is damaged ({exc.msg})") from exc
        if d.get("format") != FORMAT:
            raise AdapterError(path, "not an EffiCell adapter file")
        if int(d.get("format_version", 0)) > FORMAT_VERSION:
            raise AdapterError(path, f"adapter was made by a newer EffiCell (format {d['format_version']}); update EffiCell to use it")
        fields = cls.__dataclass_fields__
        kw = {k: v for k, v in d.items() if k in fields}
        try:
            kw["in_channels"] = tuple(int(c) for c in kw["in_channels"])
            kw["channels"] = None if kw.get("channels") is None else tuple(kw["channels"])
            return cls(**kw)
        except (KeyError, TypeError, ValueError) as exc:
            raise AdapterError(path, f"adapter metadata is incomplete ({exc})") from exc


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_adapter(path: str | Path, adapters, meta: AdapterMeta, half: bool = False) -> str:  # noqa: ANN001 - EffiCellAdapters
    """Write atomically (never a half-written adapter); returns the file's sha256.

    Refuses non-finite weights (a training that diverged): nothing is written then. The
    tensors' checksum goes into the metadata (``tensors_sha256``).
    """
    from safetensors.torch import save

    from ... import __version__

    meta.app_version = meta.app_version or __version__
    meta.created = meta.created or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    state = {}
    for k, v in adapters.state_dict().items():
        v = v.detach().cpu().contiguous()
        state[k] = v.half() if (half and v.is_floating_point()) else v
    path = Path(path)
    bad = next((k for k, v in state.items() if v.is_floating_point() and not bool(v.isfinite().all())), None)
    if bad is not None:
        raise AdapterError(path, f"the weights are not finite numbers (NaN or infinite values in '{bad}'); the "
                                 "training diverged: nothing was written (try a lower learning rate)")
    meta.tensors_sha256 = ""
    header, data = _split(save(state, metadata={META_KEY: meta.to_json()}), path)
    meta.tensors_sha256 = tensors_digest(header, data)
    atomic_write_bytes(path, save(state, metadata={META_KEY: meta.to_json()}))
    return file_sha256(path)


# ----------------------------------------------------------------------------- checks

# safetensors dtype -> (unsigned integer of the same width, bits of the exponent): a float is
# NaN or infinite exactly when all its exponent bits are set.
_FLOAT_BITS = {"F16": ("<u2", 0x7C00), "BF16": ("<u2", 0x7F80), "F32": ("<u4", 0x7F800000),
               "F64": ("<u8", 0x7FF0000000000000)}


def _split(raw: bytes, path: Path | None) -> tuple[dict[str, Any], bytes]:
    """A safetensors file's JSON header and its data section."""
    if len(raw) < 8:
        raise AdapterError(path, "adapter file is truncated or empty")
    n = int.from_bytes(raw[:8], "little")
    if n <= 0 or n + 8 > len(raw):
        raise AdapterError(path, "not a safetensors adapter file, or it is truncated")
    try:
        header = json.loads(raw[8:8 + n])
    except (ValueError, UnicodeDecodeError) as exc:
        raise AdapterError(path, f"adapter file is damaged ({type(exc).__name__})") from exc
    if not isinstance(header, dict):
        raise AdapterError(path, "adapter file is damaged (no safetensors header)")
    return header, raw[8 + n:]


def _tensors(header: dict[str, Any], data: bytes, path: Path | None) -> dict[str, tuple[str, list[int], bytes]]:
    """name -> (dtype, shape, raw bytes), checking that every tensor lies inside the file."""
    out: dict[str, tuple[str, list[int], bytes]] = {}
    end_max = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            start, end = (int(x) for x in info["data_offsets"])
            dtype, shape = str(info["dtype"]), [int(d) for d in info["shape"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise AdapterError(path, f"adapter file is damaged (tensor '{name}' is not described)") from exc
        if not 0 <= start <= end:
            raise AdapterError(path, f"adapter file is damaged (tensor '{name}' has bad offsets)")
        if end > len(data):
            raise AdapterError(path, f"adapter file is truncated or damaged (tensor '{name}' ends past the end of the file)")
        out[name] = (dtype, shape, data[start:end])
        end_max = max(end_max, end)
    if end_max < len(data):
        raise AdapterError(path, "adapter file is damaged (bytes after its last tensor)")
    return out


def tensors_digest(header: dict[str, Any], data: bytes) -> str:
    """SHA-256 over every tensor in name order: name, dtype, shape and raw bytes (not the metadata)."""
    h = hashlib.sha256()
    for name, (dtype, shape, raw) in sorted(_tensors(header, data, None).items()):
        h.update(json.dumps([name, dtype, shape]).encode("utf-8"))
        h.update(raw)
    return h.hexdigest()


def check_adapter_file(path: str | Path) -> dict[str, Any]:
    """Refuse an adapter file whose tensors are cut short, hold NaN/infinite values, or differ
    from the checksum recorded when it was saved; returns its safetensors header.

    Works on any safetensors file (the EffiCell metadata is optional here).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise AdapterError(path, "adapter file not found") from exc
    except PermissionError as exc:
        raise AdapterError(path, "cannot read the adapter file (permission denied)") from exc
    except OSError as exc:
        raise AdapterError(path, f"cannot read the adapter file ({exc.strerror or exc})") from exc
    header, data = _split(raw, path)
    tensors = _tensors(header, data, path)
    import numpy as np

    for name, (dtype, _, buf) in sorted(tensors.items()):
        if dtype not in _FLOAT_BITS:
            continue
        word, exponent = _FLOAT_BITS[dtype]
        bits = np.frombuffer(buf, dtype=word)
        if bits.size and bool(((bits & np.array(exponent, dtype=word)) == exponent).any()):
            raise AdapterError(path, f"the adapter's weights are not finite numbers (NaN or infinite values in "
                                     f"'{name}'): the file is damaged or comes from a training that diverged")
    text = (header.get("__metadata__") or {}).get(META_KEY) if isinstance(header.get("__metadata__"), dict) else None
    recorded = ""
    if text:
        with contextlib.suppress(ValueError, AttributeError):
            recorded = str(json.loads(text).get("tensors_sha256") or "")
    if recorded and recorded != tensors_digest(header, data):
        raise AdapterError(path, "the adapter's weights do not match the checksum recorded when it was saved "
                                 "(the file was changed or damaged); use the original file")
    return header


def read_adapter_meta(path: str | Path) -> AdapterMeta:
    """Read only the metadata (fast; no tensors loaded). Raises AdapterError for damaged files."""
    path = Path(path)
    if not path.is_file():
        raise AdapterError(path, "adapter file not found")
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise AdapterError(path, "adapter file is truncated or empty")
            n = int.from_bytes(head, "little")
            if n <= 0 or n > 100_000_000 or n + 8 > path.stat().st_size:
                raise AdapterError(path, "not a safetensors adapter file, or it is truncated")
            header = json.loads(fh.read(n))
    except AdapterError:
        raise
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise AdapterError(path, f"adapter file is damaged ({type(exc).__name__})") from exc
    text = (header.get("__metadata__") or {}).get(META_KEY)
    if text is None:
        raise AdapterError(path, "safetensors file without EffiCell metadata: not an EffiCell adapter")
    return AdapterMeta.from_json(text, path)


def load_adapter(path: str | Path, encoder_name: str | None = None, encoder_sha256: str | None = None):  # noqa: ANN201
    """Load ``(adapters module, meta, sha256)``. Refuses damaged files and adapters for another encoder."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .adapters import AdapterConfig, build_adapters

    path = Path(path)
    meta = read_adapter_meta(path)
    check_compatible(meta, path, encoder_name, encoder_sha256)
    check_adapter_file(path)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise AdapterError(path, f"adapter tensors are damaged ({str(exc)[:120]})") from exc
    adapters = build_adapters(meta.in_channels, meta.stride, AdapterConfig.from_dict(meta.config))
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    try:
        adapters.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise AdapterError(path, "adapter tensors do not match its own metadata (damaged or edited file)") from exc
    return adapters, meta, file_sha256(path)


def check_compatible(meta: AdapterMeta, path: Path | None, encoder_name: str | None, encoder_sha256: str | None) -> None:
    if encoder_name is not None and meta.encoder != encoder_name:
        raise AdapterError(path, f"adapter was trained for encoder '{meta.encoder}', not '{encoder_name}'; "
                                 f"choose '{meta.encoder}' or train an adapter for '{encoder_name}'")
    if encoder_sha256 is not None and meta.encoder_sha256 != encoder_sha256:
        raise AdapterError(path, f"adapter was trained for other weights of encoder '{meta.encoder}' "
                                 f"(sha256 {meta.encoder_sha256[:12]}…, these are {encoder_sha256[:12]}…)")
