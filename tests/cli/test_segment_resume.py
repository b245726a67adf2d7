"""Issue 18, case 6: ``efficell segment`` run again finishes an interrupted batch.

Killed (SIGKILL) or stopped by a full disk, the same command run again keeps the masks an
earlier run with the same settings completed, segments the rest, and writes the measurement
table for every image of the batch. Outputs made with other settings, or of an input that
changed since, are not overwritten unless ``--overwrite`` is given. A full disk never shows
openpyxl's "Exception ignored" tracebacks, and ``efficell_run.json`` is still written.

The commands run in real processes (``efficell_app.cli.main``) with the small random-weight
encoder standing in for the built-in model, so a batch takes seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tifffile
from openpyxl import load_workbook

from efficell_app.core.batch import MASK_SUFFIX, RUN_FILE, resume_decision

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL, tmpfs")

RUNNER = """
import sys
import torch
from efficell_app.core.encoders import build_encoder
from efficell_app.core.model import EffiCellModel
from efficell_app.core.model.adapter_io import load_adapter
from efficell_app.core.pipeline import Segmenter
from efficell_app.cli import main

torch.set_num_threads(1)

def load(cls, *a, **k):
    torch.manual_seed(0)
    enc = build_encoder("efficell_compact", weights=None, small=True)
    ad, meta, sha = load_adapter(sys.argv[1], "efficell_compact", "random")
    seg = Segmenter(EffiCellModel(enc, ad), meta, sha, None, "cpu")
    seg.predictor.tile, seg.predictor.overlap = 128, 32
    return seg

Segmenter.load = classmethod(load)
raise SystemExit(main(sys.argv[2:]))
"""
N = 12


def _blobs(seed: int, shape: tuple[int, int] = (96, 96)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    img = rng.normal(20, 4, shape)
    for _ in range(25):
        cy, cx = rng.integers(6, shape[0] - 6), rng.integers(6, shape[1] - 6)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < 16] += 150
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture()
def batch(tmp_path: Path, random_adapter_file: Path) -> tuple[Path, list[str]]:
    src = tmp_path / "in"
    src.mkdir()
    for i in range(N):
        tifffile.imwrite(src / f"img{i:02d}.tif", _blobs(i))
    runner = tmp_path / "runner.py"
    runner.write_text(RUNNER, encoding="utf-8")
    return src, [sys.executable, str(runner), str(random_adapter_file)]


def _segment(cmd: list[str], src: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*cmd, "segment", str(src), "--out", str(out), "--diameter", "8", *extra],
                          capture_output=True, text=True, timeout=600)


def _images_sheet(xlsx: Path) -> list[str]:
    ws = load_workbook(xlsx)["Images"]
    rows = list(ws.iter_rows(values_only=True))
    col = rows[0].index("image")
    return sorted(r[col] for r in rows[1:])


def _masks(out: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in sorted(out.glob(f"*{MASK_SUFFIX}"))}


def test_rerun_after_sigkill_finishes_the_batch(batch: tuple[Path, list[str]], tmp_path: Path) -> None:
    src, cmd = batch
    out = tmp_path / "out"
    proc = subprocess.Popen([*cmd, "segment", str(src), "--out", str(out), "--diameter", "8"],
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        done = 0
        for line in proc.stderr:
            done += f"/{N} " in line and "cells" in line
            if done == 5:
                break
        assert done == 5, "the batch ended before it could be killed"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    before = _masks(out)
    assert 5 <= len(before) < N and not (out / "measurements.xlsx").exists() and not (out / RUN_FILE).exists()

    again = _segment(cmd, src, out)
    assert again.returncode == 0, again.stderr
    assert "already exists" not in again.stderr and "Traceback" not in again.stderr
    assert f"{len(before)} kept from an earlier run" in again.stderr
    after = _masks(out)
    assert len(after) == N and all(after[k] == v for k, v in before.items())  # kept as they were
    assert _images_sheet(out / "measurements.xlsx") == [f"img{i:02d}.tif" for i in range(N)]
    run = json.loads((out / RUN_FILE).read_text())
    assert len(run["files"]) == N and sum(f.get("kept", False) for f in run["files"]) == len(before)
    assert not list(out.glob(".*.part"))  # what the killed run was writing is gone


def test_rerun_with_other_settings_or_changed_input_asks_for_overwrite(batch: tuple[Path, list[str]], tmp_path: Path,
                                                                         random_segmenter, monkeypatch, capsys, request) -> None:  # noqa: ANN001
    """In this process (the same command code, without a process start per run)."""
    import torch

    from efficell_app.cli import main
    from efficell_app.core.pipeline import Segmenter

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the machine is shared; these images are tiny
    request.addfinalizer(lambda: torch.set_num_threads(threads))
    random_segmenter.predictor.tile, random_segmenter.predictor.overlap = 128, 32
    monkeypatch.setattr(Segmenter, "load", classmethod(lambda cls, *a, **k: random_segmenter))
    src, _ = batch
    out = tmp_path / "out"

    def segment(*extra: str) -> tuple[int, str]:
        rc = main(["segment", str(src), "--out", str(out), "--diameter", "8", *extra])
        return rc, capsys.readouterr().err

    assert segment()[0] == 0
    first = _masks(out)
    rc, err = segment()  # the same run again: nothing to do, the table still complete
    assert rc == 0 and f"{N} kept from an earlier run" in err
    assert _masks(out) == first and len(_images_sheet(out / "measurements.xlsx")) == N

    rc, err = segment("--diameter", "12")
    assert rc == 1 and "Traceback" not in err
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == N and all("other settings" in e and "--overwrite" in e for e in errors), err
    assert _masks(out) == first

    tifffile.imwrite(src / "img03.tif", _blobs(99))  # the user replaced an input image
    rc, err = segment()
    assert rc == 1
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "img03" in errors[0] and "changed" in errors[0] and "--overwrite" in errors[0]

    rc, err = segment("--diameter", "12", "--overwrite")
    assert rc == 0, err
    assert "kept" not in err and _masks(out) != first


def test_resume_decision_is_a_plain_function(tmp_path: Path) -> None:
    """What the window, the CLI and a cluster runner share: segment, keep or refuse one output."""
    src = tmp_path / "a.tif"
    tifffile.imwrite(src, _blobs(0))
    target = tmp_path / f"a{MASK_SUFFIX}"
    assert resume_decision(target, src, {"diameter_px": 8}, overwrite=False).action == "segment"
    target.write_bytes(b"the user's own file")
    d = resume_decision(target, src, {"diameter_px": 8}, overwrite=False)
    assert d.action == "refuse" and "not written by EffiCell" in d.reason
    assert resume_decision(target, src, {"diameter_px": 8}, overwrite=True).action == "segment"


# ----------------------------------------------------------------------------- a real full disk


@contextlib.contextmanager
def _small_disk(folder: Path, size: int) -> Iterator[Path]:
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.strip()})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _page(n: int) -> int:
    return -(-n // 4096) * 4096


def test_full_disk_then_rerun(batch: tuple[Path, list[str]], tmp_path: Path) -> None:
    src, cmd = batch
    for i in range(N):  # larger images: the table (objects of at least MIN_OBJECT_PX) outweighs the run record
        tifffile.imwrite(src / f"img{i:02d}.tif", _blobs(i, (160, 160)))
    probe = tmp_path / "probe"
    assert _segment(cmd, src, probe).returncode == 0
    masks = sum(_page(f.stat().st_size) for f in probe.glob(f"*{MASK_SUFFIX}"))
    table = (probe / "measurements.xlsx").stat().st_size
    run = _page((probe / RUN_FILE).stat().st_size)
    assert table > 3 * run, ("the table must be the file that does not fit", table, run)
    with _small_disk(tmp_path / "disk", 8 << 20) as disk:
        out = disk / "out"
        out.mkdir()
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        filler = disk / "filler.bin"
        filler.write_bytes(b"\0" * (free - masks - 2 * run))  # room for the masks and the run record only
        full = _segment(cmd, src, out)
        assert full.returncode == 1
        assert "Exception ignored" not in full.stderr and "Traceback" not in full.stderr, full.stderr
        errors = [ln for ln in full.stderr.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1 and "measurements.xlsx" in errors[0] and "disk is full" in errors[0], full.stderr
        assert len(_masks(out)) == N and not (out / "measurements.xlsx").exists()
        record = json.loads((out / RUN_FILE).read_text())
        assert "disk is full" in json.dumps(record["errors"])
        assert not list(out.glob(".*.part"))

        filler.unlink()  # the user frees space and runs the same command again
        again = _segment(cmd, src, out)
        assert again.returncode == 0, again.stderr
        assert f"{N} kept from an earlier run" in again.stderr
        assert _images_sheet(out / "measurements.xlsx") == [f"img{i:02d}.tif" for i in range(N)]
        shutil.rmtree(out)
