"""Faults: cancel at any point of segmentation, training and export, a writer killed in the
middle of an annotation save, and a full disk. Each leaves the project consistent and loses at
most the work in flight.

Export on cancel keeps only *complete* files: the per-image files of images finished before the
cancel stay (each written atomically), tables are written only after every image was measured
(so a cancelled export has none unless the cancel came after a table was written), and no
temporary file is left.
"""

from __future__ import annotations

import builtins
import errno
import gc
import io
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

from efficell_app.core.cancel import CancelToken
from efficell_app.core.errors import Cancelled, OutputError
from efficell_app.project import Project
from efficell_app.tasks.segment import segment_project
from efficell_app.tasks.export import (
    FILE_FORMATS,
    ExportProgress,
    ExportWouldReplace,
    export_events,
    export_project,
)

DIAMETER = 12.0  # with 128-px tiles, a 96x128 image is segmented in 6 tiles: room to cancel mid-image


# ----------------------------------------------------------------------------- helpers


def _blob_image(seed: int, shape: tuple[int, int] = (96, 128)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    img = rng.normal(20, 4, shape)
    for _ in range(8):
        cy, cx = rng.integers(8, shape[0] - 8), rng.integers(8, shape[1] - 8)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < 36] += 150
    return np.clip(img, 0, 255).astype(np.uint8)


def _image_folder(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        tifffile.imwrite(folder / f"img{i}.tif", _blob_image(i))
    return folder


def _project_with_images(tmp_path: Path, n: int = 3) -> tuple[Project, list[int]]:
    p = Project.create(tmp_path / "proj")
    ids = p.add_folder(_image_folder(tmp_path / "imgs", n), "s").added
    assert len(ids) == n
    return p, sorted(ids)


def _parts(root: Path) -> list[Path]:
    return sorted(root.rglob("*.part"))


def assert_consistent(p: Project) -> None:
    """The index and the files agree: every row's file exists, every label file has a row, no temp files."""
    store = p._store
    assert store.query("PRAGMA integrity_check")[0][0] == "ok"
    referenced: set[Path] = set()
    for table in ("results", "annotations", "adapters"):
        for r in store.query(f"SELECT path FROM {table}"):
            path = store.from_stored(r["path"])
            assert path.is_file(), f"{table} row points at a missing file {path}"
            referenced.add(path)
    for sub in ("results", "annotations", "adapters"):
        on_disk = {f for f in (p.root / sub).rglob("*") if f.is_file()}
        assert on_disk <= referenced, f"files in {sub}/ no row refers to: {sorted(on_disk - referenced)}"
    for rec in p.list_images():
        for res in p.list_results(rec.id):
            assert p.load_labels(res).shape == (rec.height, rec.width)
        assert (rec.status == "new") == (not p.list_results(rec.id) and not p.annotation_history(rec.id))
    assert _parts(p.root) == []


def _snapshot(p: Project) -> tuple[list[str], dict[str, tuple[int, int]]]:
    """Everything the project holds: the index's SQL dump and every file (size, mtime)."""
    with p._store.mutex:
        dump = list(p._store.conn.iterdump())
    files = {str(f.relative_to(p.root)): (f.stat().st_size, f.stat().st_mtime_ns)
             for f in p.root.rglob("*") if f.is_file() and not f.name.startswith("project.efficell")}
    return dump, files


# ----------------------------------------------------------------------------- 1. cancel segmentation


class _CancellingSegmenter:
    """Wraps a Segmenter; cancels ``token`` while image ``at`` is being segmented (progress >= 0.3)."""

    def __init__(self, inner: Any, token: CancelToken, at: int) -> None:
        self.inner, self.token, self.at = inner, token, at
        self.calls = 0
        self.fractions: dict[int, list[float]] = {}

    @property
    def identity(self) -> dict[str, Any]:
        return self.inner.identity

    def segment(self, img: Any, diameter: float | None = None, channels: Any = None, cancel: Any = None,
                progress: Any = None) -> Any:
        k = self.calls
        self.calls += 1

        def report(f: float) -> None:
            self.fractions.setdefault(k, []).append(f)
            if k == self.at and 0.3 <= f < 1.0:
                self.token.cancel()

        return self.inner.segment(img, diameter=diameter, channels=channels, cancel=cancel, progress=report)


@pytest.fixture()
def fast_segmenter(random_segmenter: Any) -> Any:
    import torch

    torch.set_num_threads(1)
    random_segmenter.predictor.tile = 128
    random_segmenter.predictor.overlap = 32
    return random_segmenter


@pytest.mark.parametrize("point", ["before", "after:0", "after:1", "mid:0", "mid:1", "mid:2"])
def test_cancel_segmentation_keeps_project_consistent(tmp_path: Path, fast_segmenter: Any, point: str) -> None:
    p, ids = _project_with_images(tmp_path, 3)
    token = CancelToken()
    kind, _, k = point.partition(":")
    at = int(k) if k else -1
    seg = _CancellingSegmenter(fast_segmenter, token, at if kind == "mid" else -1)
    if kind == "before":
        token.cancel()
    seen: list[int] = []
    with pytest.raises(Cancelled):
        for ev in segment_project(p, seg, "s", token, diameter=DIAMETER):
            assert ev.ok, ev.error
            seen.append(ev.image_id)
            if kind == "after" and len(seen) == at + 1:
                token.cancel()
    n_done = {"before": 0, "after": at + 1, "mid": at}[kind]
    assert seen == ids[:n_done]
    if kind == "mid":  # the cancel really came in the middle of image `at`
        assert seg.calls == at + 1 and max(seg.fractions[at]) < 1.0
    kept = {i: p.latest_result(i) for i in ids[:n_done]}
    p.close()

    with Project.open(p.root) as q:  # a clean close: opens without tidying
        assert_consistent(q)
        for i in ids:
            results = q.list_results(i)
            if i in kept:  # done before the cancel: kept
                assert [r.id for r in results] == [kept[i].id]
                assert q.get_image(i).status == "segmented"
            else:  # in flight or not started: nothing
                assert results == [] and q.get_image(i).status == "new"
        runs = q.list_runs()
        assert all(r.n_results > 0 for r in runs), "a cancelled run that recorded nothing left a run record"
        assert len(runs) == (1 if n_done else 0)
        # running again completes the rest
        events = list(segment_project(q, fast_segmenter, "s", only_new=True, diameter=DIAMETER))
        assert [e.image_id for e in events] == ids[n_done:] and all(e.ok for e in events)
        assert_consistent(q)
        assert all(len(q.list_results(i)) == 1 for i in ids)
        for i, res in kept.items():
            assert q.latest_result(i).id == res.id


# ----------------------------------------------------------------------------- 2. cancel training


def _train_config(out: Path, pairs: list[tuple[Any, np.ndarray]], **kw: Any) -> Any:
    import torch

    from efficell_app.core.encoders import build_encoder
    from efficell_app.core.training import TrainConfig

    torch.set_num_threads(1)
    torch.manual_seed(0)
    enc = build_encoder("efficell_compact", weights=None, small=True)
    base: dict[str, Any] = {"train": pairs, "out": out, "encoder": enc, "init_adapter": None, "epochs": 1,
                            "batch_size": 2, "crop": 64, "target_diameter": 12.0, "device": "cpu"}
    base.update(kw)
    return TrainConfig(**base)


def _training_pairs(p: Project, ids: list[int]) -> list[tuple[Any, np.ndarray]]:
    from skimage.measure import label

    pairs = []
    for i in ids:
        img = p.read_image(i)
        lab = label(img.data[0] > 100).astype(np.int32)
        p.save_annotation(i, lab)
        pairs.append((img, p.load_annotation(i)))
    return pairs


def _train_into_library(p: Project, cfg: Any, cancel: CancelToken, cancel_on: str | None) -> Any:
    """What the GUI's training dialog does: train to a file, then add it to the project's library."""
    from efficell_app.core.training import train_adapter

    last = None
    for ev in train_adapter(cfg, cancel):
        if ev.phase == cancel_on:
            cancel.cancel()
        last = ev
    assert last is not None and last.phase == "done"
    return p.add_adapter(last.adapter_path, name="trained", metrics=last.metrics)


@pytest.mark.parametrize("phase", ["preparing", "caching features", "training", "validating", "saving"])
def test_cancel_training_saves_no_adapter(tmp_path: Path, phase: str) -> None:
    p, ids = _project_with_images(tmp_path, 2)
    pairs = _training_pairs(p, ids)
    # the worst case: the adapter file is written straight into the project's adapters/ folder
    out = p.root / "adapters" / "new.safetensors"
    cfg = _train_config(out, pairs, epochs=1, val_fraction=0.2 if phase == "validating" else 0.0,
                        tune_thresholds=False)
    cancel = CancelToken()
    before = _snapshot(p)
    with pytest.raises(Cancelled):
        _train_into_library(p, cfg, cancel, phase)
    assert p.list_adapters() == []
    assert list((p.root / "adapters").iterdir()) == []  # no adapter file, no temp file
    assert _snapshot(p) == before
    assert_consistent(p)
    p.close()
    with Project.open(p.root) as q:
        assert q.list_adapters() == []
        # a later training saves normally
        out2 = tmp_path / "train" / "again.safetensors"
        out2.parent.mkdir()
        info = _train_into_library(q, _train_config(out2, pairs, val_fraction=0.0, tune_thresholds=False),
                                   CancelToken(), None)
        assert [a.name for a in q.list_adapters()] == ["trained"] and info.path.is_file()
        assert info.path.parent == q.root / "adapters"
        assert_consistent(q)


# ----------------------------------------------------------------------------- 3. cancel export


@pytest.fixture()
def labelled_project(tmp_path: Path) -> Iterator[tuple[Project, list[int]]]:
    """Three images with stored results (a threshold + connected components: fast and real)."""
    from skimage.measure import label

    p, ids = _project_with_images(tmp_path, 3)
    run = p.start_run({"method": "threshold"}, {"encoder": "test"}, "s")
    for i in ids:
        lab = label(p.read_image(i).data[0] > 100).astype(np.int32)
        p.record_result(i, lab, {"method": "threshold"}, {"encoder": "test"}, run_id=run)
    yield p, ids
    p.close()


def _check_complete(path: Path) -> None:
    """``path`` is a whole, readable export file."""
    name = path.name
    if name.endswith(".tif"):
        assert tifffile.imread(path).ndim == 2
    elif name.endswith(".png"):
        from PIL import Image

        with Image.open(path) as im:
            im.load()
    elif name.endswith(".zip"):
        with zipfile.ZipFile(path) as zf:
            assert zf.testzip() is None and zf.namelist()
    elif name.endswith(".geojson"):
        assert json.loads(path.read_text(encoding="utf-8"))["type"] == "FeatureCollection"
    elif name.endswith(".xlsx"):
        from openpyxl import load_workbook

        assert {"Cells", "Images", "Settings"} <= set(load_workbook(path, read_only=True).sheetnames)
    elif name.endswith(".csv"):
        import pandas as pd

        assert len(pd.read_csv(path, comment="#")) > 0
    else:
        raise AssertionError(f"unexpected file {path}")


def _per_image(k: int) -> set[str]:
    return {f"img{k}{suffix}" for suffix in FILE_FORMATS.values()}


@pytest.mark.parametrize("stop", [0, 3, 5, 10, 16])
def test_cancel_export_leaves_only_complete_files(labelled_project: tuple[Project, list[int]], tmp_path: Path,
                                                  stop: int) -> None:
    """Cancel after the ``stop``-th progress event (0 = before the start; 16 = after the first table)."""
    p, _ = labelled_project
    out = tmp_path / "out"
    out.mkdir()
    tables = [out / "m.xlsx", out / "m.csv"]
    before = _snapshot(p)
    cancel = CancelToken()
    if stop == 0:
        cancel.cancel()
    n = 0
    written: list[Path] = []
    measured = 0
    with pytest.raises(Cancelled):
        for ev in export_events(p, tables, list(FILE_FORMATS), out, set_name="s", cancel=cancel):
            assert isinstance(ev, ExportProgress), ev
            n += 1
            if ev.path is not None:
                written.append(ev.path)
            elif ev.message.startswith("Measured"):
                measured += 1
            if n == stop:
                cancel.cancel()
    assert _parts(out) == []
    present = sorted(out.iterdir())
    assert present == sorted(written)  # exactly the files announced, nothing else
    for f in present:
        _check_complete(f)
    # the image in progress when the cancel came is finished (the cancel is seen between images)
    expected = set().union(*(_per_image(k) for k in range(measured)))
    assert measured == {0: 0, 3: 1, 5: 1, 10: 2, 16: 3}[stop]
    if stop == 16:  # all images and the first table done; the second table not written
        expected |= {"m.xlsx"}
    assert {f.name for f in present} == expected
    assert _snapshot(p) == before
    assert_consistent(p)


def test_cancel_export_project_from_progress(labelled_project: tuple[Project, list[int]], tmp_path: Path) -> None:
    p, _ = labelled_project
    out = tmp_path / "exp" / "all.xlsx"
    out.parent.mkdir()
    before = _snapshot(p)
    cancel = CancelToken()
    calls: list[tuple[int, int]] = []

    def progress(done: int, total: int) -> None:
        calls.append((done, total))
        if done == 2:  # two images measured
            cancel.cancel()

    with pytest.raises(Cancelled):
        export_project(p, out, "s", progress=progress, cancel=cancel, files=["tiff", "geojson"])
    names = sorted(f.name for f in out.parent.iterdir())
    assert names == sorted(f"img{k}{FILE_FORMATS[f]}" for k in (0, 1) for f in ("tiff", "geojson"))
    for f in out.parent.iterdir():
        _check_complete(f)
    assert not out.exists() and _snapshot(p) == before
    # exporting again asks before it replaces the files the cancelled export completed, then completes
    with pytest.raises(ExportWouldReplace) as again:
        export_project(p, out, "s", files=["tiff", "geojson"])
    assert sorted(f.name for f in again.value.paths) == names
    report = export_project(p, out, "s", files=["tiff", "geojson"], overwrite=True)
    assert report.n_images == 3 and not report.errors
    _check_complete(out)


# ----------------------------------------------------------------------------- 5. disk full


class DiskFull:
    """Simulates a disk that fills up: writes to files under ``folder`` fail with ENOSPC once
    ``free`` bytes have been written (the failing write puts what still fits on disk first)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, folder: Path, free: int = 1 << 40) -> None:
        self.folder = folder.resolve()
        self.free = free
        self.failed: list[str] = []
        real_open = io.open
        disk = self

        def check(f: Any, b: Any) -> int | None:
            n = memoryview(b).nbytes
            if n <= disk.free:
                disk.free -= n
                return None
            disk.failed.append(str(f.name))
            fits = max(disk.free, 0)
            disk.free = 0
            return fits

        class FullDisk:  # mixin: the write that overflows writes what fits, then fails as a full disk does
            def write(self, b: Any) -> int:
                fits = check(self.raw, b)
                if fits is not None:
                    super().write(memoryview(b).cast("B")[:fits])
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                return super().write(b)

        class Writer(FullDisk, io.BufferedWriter):
            pass

        class Random(FullDisk, io.BufferedRandom):
            pass

        def fake_open(file: Any, mode: str = "r", buffering: int = -1, encoding: str | None = None,
                      errors: str | None = None, newline: str | None = None, closefd: bool = True,
                      opener: Any = None) -> Any:
            writing = isinstance(file, (str, os.PathLike)) and any(c in mode for c in "wax+")
            if writing and disk.folder in Path(os.fspath(file)).resolve().parents:
                raw = io.FileIO(file, mode.replace("t", "").replace("b", ""), closefd, opener)
                buf = (Random if "+" in mode else Writer)(raw)
                if "b" in mode:
                    return buf
                return io.TextIOWrapper(buf, encoding=encoding or "utf-8", errors=errors, newline=newline)
            return real_open(file, mode, buffering, encoding, errors, newline, closefd, opener)

        monkeypatch.setattr(builtins, "open", fake_open)
        monkeypatch.setattr(io, "open", fake_open)


# openpyxl's write-only sheets left unfinished by the failed save complain when garbage-collected
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_disk_full_during_export(labelled_project: tuple[Project, list[int]], tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    p, _ = labelled_project
    out = tmp_path / "out"
    out.mkdir()
    xlsx = out / "m.xlsx"
    first = export_project(p, xlsx, "s")  # an earlier export, to be kept intact
    assert first.n_images == 3
    old = xlsx.read_bytes()
    before = _snapshot(p)

    with monkeypatch.context() as mp:
        disk = DiskFull(mp, out)

        def progress(done: int, total: int) -> None:
            if done == 1:  # the first image's files are written; then the disk is full
                disk.free = 0

        with pytest.raises(OutputError) as err:
            export_project(p, xlsx, "s", progress=progress, files=list(FILE_FORMATS), overwrite=True)
    gc.collect()  # (see the mark above)
    assert str(err.value) == f"{xlsx}: the disk is full"
    assert disk.failed  # the simulated disk really filled up
    assert xlsx.read_bytes() == old  # the earlier workbook is intact
    assert _parts(out) == []
    names = {f.name for f in out.iterdir()}
    assert names == {"m.xlsx"} | _per_image(0)  # nothing of images 1 and 2, nothing partial
    for f in out.iterdir():
        _check_complete(f)
    assert _snapshot(p) == before


def test_disk_full_reports_each_image_and_goes_on(labelled_project: tuple[Project, list[int]], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    p, _ = labelled_project
    out = tmp_path / "out"
    out.mkdir()
    failures = []
    with monkeypatch.context() as mp:
        disk = DiskFull(mp, out)
        for ev in export_events(p, [], ["tiff"], out, set_name="s"):
            if isinstance(ev, ExportProgress) and ev.path is not None and ev.path.name == "img0_labels.tif":
                disk.free = 0
            elif not isinstance(ev, ExportProgress):
                failures.append(ev.message)
    assert failures == [f"{out / f'img{k}_labels.tif'}: the disk is full" for k in (1, 2)]
    assert sorted(f.name for f in out.iterdir()) == ["img0_labels.tif"]


def test_disk_full_during_results_save(tmp_path: Path, fast_segmenter: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    p, ids = _project_with_images(tmp_path, 3)
    events = []
    with monkeypatch.context() as mp:
        disk = DiskFull(mp, p.root / "results")
        for ev in segment_project(p, fast_segmenter, "s", diameter=DIAMETER):
            events.append(ev)
            if ev.index == 1:
                disk.free = 0
    assert [e.ok for e in events] == [True, False, False]
    for e in events[1:]:
        # one line naming the image and the file that could not be written, and why
        assert e.error.startswith(f"{e.path}: ") and "the disk is full" in e.message
        assert "results" in e.message and ".tif" in e.message and "\n" not in e.error
    assert_consistent(p)
    first = p.latest_result(ids[0])
    assert first is not None and p.load_labels(first).shape == (96, 128)  # the earlier result is intact
    assert p.list_results(ids[1]) == [] == p.list_results(ids[2])
    # an annotation save on a full disk: the earlier version stays, the message names the file
    lab = np.zeros((96, 128), np.int32)
    lab[10:20, 10:20] = 1
    p.save_annotation(ids[0], lab)
    with monkeypatch.context() as mp, pytest.raises(OutputError, match=r"annotations.+v000002\.tif: the disk is full"):
        DiskFull(mp, p.root / "annotations", free=0)
        p.save_annotation(ids[0], lab * 2)
    assert [h.version for h in p.annotation_history(ids[0])] == [1]
    assert np.array_equal(p.load_annotation(ids[0]), lab)
    assert_consistent(p)
    p.close()


# ----------------------------------------------------------------------------- 4. killed during a save

_STROKER = textwrap.dedent("""
    import io, sys, time
    import numpy as np
    import tifffile
    from efficell_app.project import Project
    from efficell_app.project import annotations as an

    root, image_id, mode, hang_at = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    exec(sys.argv[5])  # defines stroke(labels, k)
    current = [0]

    def hang(what):
        print(f"{what} {current[0]}", flush=True)
        time.sleep(120)

    if mode == "temp":  # hang with half of the new file in its temporary file
        real_imwrite = tifffile.imwrite
        def imwrite(fh, data, **kw):
            if current[0] == hang_at:
                buf = io.BytesIO()
                real_imwrite(buf, data, **kw)
                fh.write(buf.getvalue()[: len(buf.getvalue()) // 2])
                fh.flush()
                hang("writing")
            return real_imwrite(fh, data, **kw)
        tifffile.imwrite = imwrite
    elif mode == "index":  # hang after the file is in place, before the index records it
        real_write = an.write_labels
        def write_labels(path, labels, *args):
            real_write(path, labels, *args)
            if current[0] == hang_at:
                hang("written")
        an.write_labels = write_labels
    elif mode == "prune":  # hang after the commit, before old versions are deleted
        real_remove = an.remove_files
        def remove_files(paths):
            if current[0] == hang_at:
                hang("committed")
            real_remove(paths)
        an.remove_files = remove_files

    p = Project.open(root)
    hist = p.annotation_history(image_id)
    k = hist[0].version if hist else 0
    labels = p.load_annotation(image_id)
    labels = np.zeros((p.get_image(image_id).height, p.get_image(image_id).width), np.int32) if labels is None else labels
    while True:
        k += 1
        current[0] = k
        labels = stroke(labels, k)
        p.save_annotation(image_id, labels, note=f"stroke {k}")
        print(f"saved {k}", flush=True)
""")

_STROKE = textwrap.dedent("""
    def stroke(labels, k):
        import numpy as np
        rng = np.random.default_rng(k)
        h, w = labels.shape
        cy, cx = int(rng.integers(0, h)), int(rng.integers(0, w))
        yy, xx = np.ogrid[:h, :w]
        out = labels.copy()
        out[(yy - cy) ** 2 + (xx - cx) ** 2 < int(rng.integers(9, 100))] = 0 if k % 5 == 0 else k
        return out
""")
_ns: dict[str, Any] = {}
exec(_STROKE, _ns)  # noqa: S102 - the same code the child runs


def _state(k: int, shape: tuple[int, int]) -> np.ndarray:
    labels = np.zeros(shape, np.int32)
    for j in range(1, k + 1):
        labels = _ns["stroke"](labels, j)
    return labels


@pytest.fixture()
def stroke_project(tmp_path: Path) -> tuple[Path, int, tuple[int, int]]:
    folder = tmp_path / "imgs"
    folder.mkdir()
    tifffile.imwrite(folder / "cells.tif", _blob_image(0, (256, 256)))
    with Project.create(tmp_path / "proj") as p:
        image_id = p.add_folder(folder, "s").added[0]
    return tmp_path / "proj", image_id, (256, 256)


def _stroker(root: Path, image_id: int, mode: str, hang_at: int = 0) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", _STROKER, str(root), str(image_id), mode, str(hang_at), _STROKE],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _kill(proc: subprocess.Popen[str]) -> list[str]:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    return [line.strip() for line in proc.stdout or []]


def _check_after_crash(root: Path, image_id: int, shape: tuple[int, int], last_saved: int,
                       allowed: tuple[int, ...]) -> int:
    """Reopen after a kill: the annotation is one of ``allowed`` saves and its history intact."""
    with Project.open(root) as p:
        assert p._store.query("PRAGMA integrity_check")[0][0] == "ok"
        assert _parts(root) == []  # the unclean shutdown was tidied
        hist = p.annotation_history(image_id)
        newest = hist[0].version
        assert newest in allowed, (newest, last_saved)
        assert newest >= last_saved  # nothing that was reported saved is lost
        assert [h.version for h in hist] == list(range(newest, max(0, newest - 10), -1))
        for h in hist:
            assert h.path.is_file() and h.note == f"stroke {h.version}"
            assert np.array_equal(p.load_annotation(image_id, h.version), _state(h.version, shape))
        assert np.array_equal(p.load_annotation(image_id), _state(newest, shape))
        # the project is writable again and the next save follows the last complete one
        v = p.save_annotation(image_id, _state(newest + 1, shape), note=f"stroke {newest + 1}")
        assert v.version == newest + 1
        assert np.array_equal(p.load_annotation(image_id), _state(newest + 1, shape))
        assert_consistent(p)
    return newest


@pytest.mark.skipif(sys.platform == "win32", reason="uses SIGKILL")
@pytest.mark.parametrize(("mode", "signal_word", "lost"), [("temp", "writing", 1), ("index", "written", 1),
                                                            ("prune", "committed", 0)])
def test_killed_in_the_middle_of_an_annotation_save(stroke_project: tuple[Path, int, tuple[int, int]],
                                                     mode: str, signal_word: str, lost: int) -> None:
    root, image_id, shape = stroke_project
    hang_at = 12  # past the 10 kept versions: the save also forgets the oldest one
    proc = _stroker(root, image_id, mode, hang_at)
    last = 0
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            word, k = line.split()
            if word == "saved":
                last = int(k)
                continue
            assert (word, int(k)) == (signal_word, hang_at)
            if mode == "temp":
                assert len(_parts(root)) == 1  # the kill lands with a half-written file
            break
        else:
            raise AssertionError(f"the writer ended: {proc.stderr.read() if proc.stderr else ''}")
    finally:
        _kill(proc)
    assert last == hang_at - 1
    newest = _check_after_crash(root, image_id, shape, last, (hang_at - lost,))
    assert newest == hang_at - lost  # at most the last stroke lost


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="uses SIGKILL")
def test_killed_at_random_moments_loses_at_most_the_last_stroke(
        stroke_project: tuple[Path, int, tuple[int, int]]) -> None:
    root, image_id, shape = stroke_project
    rnd = random.Random(7)
    import time

    for _ in range(5):
        proc = _stroker(root, image_id, "free")
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.startswith("saved"), proc.stderr.read() if proc.stderr else ""
            time.sleep(rnd.uniform(0.0, 0.3))
        finally:
            lines = [line.strip()] + _kill(proc)
        last = max(int(s.split()[1]) for s in lines if s.startswith("saved"))
        _check_after_crash(root, image_id, shape, last, (last, last + 1))


def test_tidy_removes_only_what_the_index_journaled(labelled_project: tuple[Project, list[int]]) -> None:
    """After a crash, tidy removes temporary files and the label files the index itself journaled
    as in flight; a label file the index does not know is kept (it may be a lost index's)."""
    p, ids = labelled_project
    lab = np.zeros((96, 128), np.int32)
    lab[5:9, 5:9] = 1
    v1 = p.save_annotation(ids[0], lab)
    res = p.latest_result(ids[0])
    folder_a, folder_r = v1.path.parent, res.path.parent
    in_flight = [folder_a / "v000002.tif", folder_r / "r000099.tif", p.root / "results" / "77" / "r000100.tif"]
    for f in in_flight:  # what a writer killed between writing the file and recording it leaves
        p._store.intend_write(p._store.to_stored(f))
        f.parent.mkdir(exist_ok=True)
        f.write_bytes(b"written before the crash, never recorded")
    keep = [folder_a / "notes.txt", folder_a / "v1.tif", p.root / "adapters" / "mine.safetensors",
            folder_a / "v000003.tif", folder_r / "r000200.tif"]  # the last two: files the index does not know
    for f in keep:
        f.write_text("a user's file")
    temp = folder_r / ".r000101.abc.tif.part"
    temp.write_bytes(b"half")
    assert p.tidy() == 4
    assert not any(f.exists() for f in [*in_flight, temp])
    assert all(f.exists() for f in keep)
    assert not (p.root / "results" / "77").exists()
    assert p.unindexed_label_files() == [folder_a / "v000003.tif", folder_r / "r000200.tif"]
    assert np.array_equal(p.load_annotation(ids[0]), lab) and p.load_labels(res).shape == (96, 128)
    assert p.save_annotation(ids[0], lab).version == 2
    assert p.save_annotation(ids[0], lab).version == 4  # v000003.tif is not ours to overwrite
