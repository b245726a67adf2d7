"""The weights store against a local HTTP server on 127.0.0.1 (with Range support)."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import json
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from efficell_app.core.cancel import CancelToken
from efficell_app.core.encoders import weights as store
from efficell_app.core.encoders.registry import EncoderSpec, WeightSource, build_backbone, get_spec
from efficell_app.core.errors import Cancelled, WeightsError


class _Files:
    """What the server serves: path -> bytes, plus behaviours and a log of requests."""

    def __init__(self) -> None:
        self.content: dict[str, bytes] = {}
        self.drop_once: set[str] = set()  # send half of the body, then close, the first time
        self.ignore_range: set[str] = set()
        self.requests: list[tuple[str, str | None]] = []


def _handler(files: _Files) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # quiet
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server API
            rng = self.headers.get("Range")
            files.requests.append((self.path, rng))
            body = files.content.get(self.path)
            if body is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            start = 0
            m = re.match(r"bytes=(\d+)-$", rng or "")
            if m and self.path not in files.ignore_range:
                start = int(m.group(1))
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            part = body[start:]
            self.send_header("Content-Length", str(len(part)))
            self.end_headers()
            if self.path in files.drop_once:
                files.drop_once.discard(self.path)
                self.wfile.write(part[: len(part) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(part)

    return Handler


@pytest.fixture()
def server() -> Iterator[tuple[str, _Files]]:
    files = _Files()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(files))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", files
    finally:
        httpd.shutdown()
        httpd.server_close()


def _spec(url: str, data: bytes | None, filename: str = "enc.pth", base: str = "sam_vit_b") -> EncoderSpec:
    """A spec like ``base`` whose weights are served locally; ``data=None``: no published checksum."""
    sha = hashlib.sha256(data).hexdigest() if data is not None else None
    orig = get_spec(base)
    return dataclasses.replace(
        orig,
        name=f"test_{base}",
        weights=WeightSource(filename=filename, url=f"{url}/{filename}", sha256=sha, size_bytes=None, licence="test"),
        builder=lambda small=False: orig.builder(small=True),  # layout checks use the small configuration
    )


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != store.RECORDS_FILE) if folder.exists() else []


def test_cache_dir_env_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EFFICELL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("EFFICELL_WEIGHTS_DIR", raising=False)
    assert store.cache_dir() == tmp_path / "home" / "weights"
    monkeypatch.setenv("EFFICELL_WEIGHTS_DIR", str(tmp_path / "w"))
    assert store.cache_dir() == tmp_path / "w"
    monkeypatch.delenv("EFFICELL_WEIGHTS_DIR")
    monkeypatch.delenv("EFFICELL_HOME")
    assert store.cache_dir().parts[-2:] == ("EffiCell", "weights")


def test_good_download(server: tuple[str, _Files]) -> None:
    url, files = server
    data = os.urandom(3 * 2**20 + 123)
    files.content["/enc.pth"] = data
    spec = _spec(url, data)
    calls: list[tuple[int, int | None]] = []
    assert not store.is_present(spec)
    path = store.download(spec, progress=lambda d, t: calls.append((d, t)))
    assert path == store.cache_dir() / "enc.pth" and path.read_bytes() == data
    assert store.is_present(spec)
    assert calls[-1] == (len(data), len(data)) and len(calls) >= 4
    assert _leftovers(store.cache_dir()) == ["enc.pth"]
    assert store.ensure_weights_file(spec) == path
    assert store.known_sha256(spec) == hashlib.sha256(data).hexdigest()
    # already present and verified: no second request
    n = len(files.requests)
    store.download(spec)
    assert len(files.requests) == n


def test_wrong_checksum_deletes_the_download(server: tuple[str, _Files]) -> None:
    url, files = server
    files.content["/enc.pth"] = b"x" * 5000
    spec = _spec(url, b"y" * 5000)
    with pytest.raises(WeightsError, match=r"enc\.pth.*checksum.*does not match"):
        store.download(spec)
    assert _leftovers(store.cache_dir()) == []


def test_dropped_connection_resumes(server: tuple[str, _Files]) -> None:
    url, files = server
    data = os.urandom(2 * 2**20 + 777)
    files.content["/enc.pth"] = data
    files.drop_once.add("/enc.pth")
    spec = _spec(url, data)
    with pytest.raises(WeightsError, match=r"interrupted after \d+ of \d+ bytes.*resume"):
        store.download(spec)
    part = store.cache_dir() / "enc.pth.part"
    half = part.stat().st_size
    assert 0 < half < len(data) and not (store.cache_dir() / "enc.pth").exists()
    path = store.download(spec)
    assert files.requests[-1] == ("/enc.pth", f"bytes={half}-")
    assert path.read_bytes() == data and not part.exists()


def test_server_ignoring_range_restarts_cleanly(server: tuple[str, _Files]) -> None:
    url, files = server
    data = os.urandom(50_000)
    files.content["/enc.pth"] = data
    files.ignore_range.add("/enc.pth")
    spec = _spec(url, data)
    store.cache_dir().mkdir(parents=True, exist_ok=True)
    (store.cache_dir() / "enc.pth.part").write_bytes(b"garbage from an older attempt")
    assert store.download(spec).read_bytes() == data


def test_complete_part_file_is_finished_on_416(server: tuple[str, _Files]) -> None:
    url, files = server
    data = os.urandom(10_000)
    files.content["/enc.pth"] = data
    spec = _spec(url, data)
    store.cache_dir().mkdir(parents=True, exist_ok=True)
    (store.cache_dir() / "enc.pth.part").write_bytes(data)
    assert store.download(spec).read_bytes() == data


def test_404_and_offline_messages(server: tuple[str, _Files]) -> None:
    url, _files = server
    spec = _spec(url, b"anything", filename="gone.pth")
    with pytest.raises(WeightsError, match=r"gone\.pth: not found on the server \(HTTP 404\).*efficell models import test_sam_vit_b FILE"):
        store.download(spec)
    assert _leftovers(store.cache_dir()) == []

    with pytest.raises(WeightsError) as err:
        store.ensure_weights_file(spec)
    msg = str(err.value)
    assert "gone.pth is not on this computer" in msg and f"{url}/gone.pth" in msg
    assert "efficell models download test_sam_vit_b" in msg and "efficell models import test_sam_vit_b FILE" in msg

    with pytest.raises(WeightsError, match=r"cannot reach 127\.0\.0\.1:1 .*efficell models import"):
        store.download(spec, url="http://127.0.0.1:1/gone.pth", timeout=5)

    with pytest.raises(WeightsError, match=r"ship with EffiCell"):
        store.download(get_spec("efficell_compact"))


def test_cancel_keeps_the_part_for_resume(server: tuple[str, _Files]) -> None:
    url, files = server
    data = os.urandom(4 * 2**20)
    files.content["/enc.pth"] = data
    spec = _spec(url, data)
    token = CancelToken()

    def progress(done: int, total: int | None) -> None:
        if done > 0:
            token.cancel()

    with pytest.raises(Cancelled):
        store.download(spec, progress=progress, cancel=token)
    part = store.cache_dir() / "enc.pth.part"
    assert 0 < part.stat().st_size < len(data)
    assert store.download(spec).read_bytes() == data


def _small_checkpoint(path: Path, base: str, seed: int) -> bytes:
    torch.manual_seed(seed)
    backbone = build_backbone(base, small=True)
    if base.startswith("sam"):
        state = {"image_encoder." + k.replace("mlp.fc", "mlp.lin"): v for k, v in backbone.vit.state_dict().items()}
    else:
        state = dict(backbone.vit.state_dict())
        state["mask_token"] = torch.zeros(1, backbone.out_channels[0])
    torch.save(state, path)
    return path.read_bytes()


def test_pin_on_first_download(server: tuple[str, _Files], tmp_path: Path) -> None:
    url, files = server
    first = _small_checkpoint(tmp_path / "a.pth", "dinov2_vit_s14", seed=0)
    files.content["/dino.pth"] = first
    spec = _spec(url, None, filename="dino.pth", base="dinov2_vit_s14")
    assert store.expected_sha256(spec) is None
    path = store.download(spec)
    pinned = hashlib.sha256(first).hexdigest()
    records = json.loads((store.cache_dir() / store.RECORDS_FILE).read_text())
    assert records["dino.pth"]["sha256"] == pinned and records["dino.pth"]["pinned"] is True
    assert store.expected_sha256(spec) == pinned

    # a later, different file fails against the pin: downloaded, imported, or swapped in place
    other = _small_checkpoint(tmp_path / "b.pth", "dinov2_vit_s14", seed=1)
    path.unlink()
    files.content["/dino.pth"] = other
    with pytest.raises(WeightsError, match="does not match"):
        store.download(spec)
    with pytest.raises(WeightsError, match=r"b\.pth: checksum .* does not match"):
        store.import_file(spec, tmp_path / "b.pth")
    path.write_bytes(other)
    with pytest.raises(WeightsError, match=r"dino\.pth: checksum .* does not match.*delete it"):
        store.ensure_weights_file(spec)


def test_unpublished_checksum_refuses_a_wrong_layout(server: tuple[str, _Files], tmp_path: Path) -> None:
    url, files = server
    files.content["/dino.pth"] = b"<html>Access denied</html>"
    spec = _spec(url, None, filename="dino.pth", base="dinov2_vit_s14")
    with pytest.raises(WeightsError, match="not a readable PyTorch checkpoint"):
        store.download(spec)
    assert _leftovers(store.cache_dir()) == [] and store.expected_sha256(spec) is None
    sam_file = tmp_path / "sam.pth"
    _small_checkpoint(sam_file, "sam_vit_b", seed=0)
    with pytest.raises(WeightsError, match=r"sam\.pth: this is a SAM checkpoint"):
        store.import_file(spec, sam_file)
    assert _leftovers(store.cache_dir()) == []


def test_import_local_file(tmp_path: Path) -> None:
    data = os.urandom(100_000)
    src = tmp_path / "from_usb_stick.pth"
    src.write_bytes(data)
    spec = _spec("http://unused.invalid", data)
    path = store.import_file(spec, src)
    assert path.read_bytes() == data and path == store.cache_dir() / "enc.pth"
    assert store.ensure_weights_file(spec) == path

    wrong = tmp_path / "other.pth"
    wrong.write_bytes(os.urandom(1000))
    path.unlink()
    with pytest.raises(WeightsError, match=r"other\.pth: checksum .* does not match the published enc\.pth"):
        store.import_file(spec, wrong)
    assert _leftovers(store.cache_dir()) == []
    with pytest.raises(WeightsError, match=r"nope\.pth: file not found"):
        store.import_file(spec, tmp_path / "nope.pth")

    # unpublished checksum: a file in the right layout is imported and pinned
    dspec = _spec("http://unused.invalid", None, filename="dino.pth", base="dinov2_vit_s14")
    ckpt = tmp_path / "dinov2_vits14_pretrain.pth"
    raw = _small_checkpoint(ckpt, "dinov2_vit_s14", seed=3)
    assert store.import_file(dspec, ckpt).read_bytes() == raw
    assert store.expected_sha256(dspec) == hashlib.sha256(raw).hexdigest()


def test_file_sha256_is_chunked(tmp_path: Path) -> None:
    data = os.urandom(300_001)
    (tmp_path / "f").write_bytes(data)
    assert store.file_sha256(tmp_path / "f", chunk_size=4096) == hashlib.sha256(data).hexdigest()
