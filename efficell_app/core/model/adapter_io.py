"""Adapter files: one safetensors file (tensors) with the EffiCell metadata as JSON in its header.

safetensors holds only tensors and strings: loading an adapter from another lab cannot run
code (no pickle). The metadata says which encoder (name and weights sha256) the adapter was
trained for; loading it with another encoder is refused.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import AdapterError
from ..fileio import atomic_path

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
    """Write atomically (never a half-written adapter); returns the file's sha256."""
    from safetensors.torch import save_file

    from ... import __version__

    meta.app_version = meta.app_version or __version__
    meta.created = meta.created or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    state = {}
    for k, v in adapters.state_dict().items():
        v = v.detach().cpu().contiguous()
        state[k] = v.half() if (half and v.is_floating_point()) else v
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={META_KEY: meta.to_json()})
    return file_sha256(path)


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
