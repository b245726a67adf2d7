"""Segmentation on a real Dask ``LocalCluster`` of 2 worker processes (``tasks.cluster_segment``):
the same labels as a local run, a worker killed mid-image, cancelling, resuming (also a batch
begun by the other route), multi-scene files, a project."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import tifffile

pytest.importorskip("distributed", reason="the cluster extra is not installed: pip install 'efficell[cluster]'")

from efficell_app.core.batch import BATCH_KEY, RUN_FILE, BatchOptions, segment_files  # noqa: E402
from efficell_app.core.cancel import CancelToken  # noqa: E402
from efficell_app.core.export import read_label_settings  # noqa: E402
from efficell_app.tasks.cluster_segment import segment_files_on_cluster  # noqa: E402

pytestmark = pytest.mark.slow
OPTIONS = BatchOptions(diameter=20.0)  # a given diameter: the built-in model without the size probes (fast)


@pytest.fixture(scope="module")
def builtin():  # noqa: ANN201
    from efficell_app.tasks import load_segmenter

    return load_segmenter(None, "cpu")


def _copies(src: Path, folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        out.append(folder / f"copy{i:02d}.tif")
        shutil.copy(src, out[-1])
    return out


def _run(paths: list[Path], out: Path, client, options: BatchOptions = OPTIONS, **kw):  # noqa: ANN001, ANN201
    return segment_files_on_cluster(paths, out, client, options, device="cpu", **kw)


def _stamp(p: Path) -> tuple[int, int]:
    st = p.stat()
    return st.st_ino, st.st_mtime_ns


def _complete(mask: Path) -> bool:
    record = read_label_settings(mask) or {}
    return isinstance(record.get(BATCH_KEY), dict) and tifffile.imread(mask).ndim == 2


def test_the_cluster_makes_the_local_labels_and_measurements(tmp_path: Path, dask_client, builtin, test_data) -> None:
    import pandas as pd

    images = [*sorted(test_data.glob("dsb2018_fluo/images/*.tif")), min(test_data.glob("usiigaci_phase/images/*.tif"))]
    broken = tmp_path / "in" / "broken.tif"
    broken.parent.mkdir()
    broken.write_text("not an image\n", encoding="utf-8")
    paths = [*images, broken]
    local = {e.path: e for e in segment_files(paths, tmp_path / "local", builtin, OPTIONS)}
    events = list(_run(paths, tmp_path / "cluster", dask_client))

    assert [e.index for e in events] == list(range(1, len(paths) + 1))  # progress counts the images as they finish
    assert Counter(e.path for e in events) == Counter(paths)
    for ev in events:
        assert (ev.ok, ev.n_cells) == (local[ev.path].ok, local[ev.path].n_cells), ev.path
    failed = [e for e in events if not e.ok]
    assert [(e.path, e.message) for e in failed] == [(broken, local[broken].message)]  # reported as a local run does
    for p in images:
        a = tifffile.imread(tmp_path / "local" / local[p].output.name)
        b = tifffile.imread(tmp_path / "cluster" / local[p].output.name)
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes(), p.name
    tables = [pd.read_excel(tmp_path / where / "measurements.xlsx", sheet_name=None) for where in ("local", "cluster")]
    for sheet in ("Cells", "Images"):
        pd.testing.assert_frame_equal(tables[0][sheet], tables[1][sheet])  # in input order, not finishing order
    import json

    record = json.loads((tmp_path / "cluster" / RUN_FILE).read_text())
    assert [f["input"] for f in record["files"]] == [str(p) for p in paths]
    assert record["settings"]["adapter_sha256"] == builtin.identity["adapter_sha256"]
    assert record["settings"]["run_key"] and record["settings"]["cluster"].startswith("tcp://")
    local_record = json.loads((tmp_path / "local" / RUN_FILE).read_text())
    assert record["settings"]["run_key"] == local_record["settings"]["run_key"]
    here, there = local_record["settings"]["device_info"], record["settings"]["device_info"]  # the device, as locally
    assert {k: there[k] for k in ("device", "type", "name")} == {k: here[k] for k in ("device", "type", "name")}
    for f in record["files"]:  # each entry as a local run writes it (but the seconds)
        same = next(g for g in local_record["files"] if g["input"] == f["input"])
        assert {k: v for k, v in f.items() if k != "seconds"} == {k: v for k, v in same.items() if k != "seconds"}


def test_a_worker_killed_mid_image_is_replaced_and_every_image_done_once(tmp_path: Path, dask_client,
                                                                         phase_pairs) -> None:
    paths = _copies(phase_pairs[0][0], tmp_path / "in", 4)
    killed: dict[str, object] = {}

    def kill_a_busy_worker() -> None:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            busy = dask_client.run(lambda dask_worker: [str(ts.key) for ts in dask_worker.state.executing])
            for addr, keys in busy.items():
                if any(k.startswith("efficell-segment-") for k in keys):
                    time.sleep(0.5)  # well inside the image (a few seconds each)
                    pid = dask_client.run(os.getpid, workers=[addr])[addr]
                    os.kill(pid, signal.SIGKILL)
                    killed.update(worker=addr, keys=keys)
                    return
            time.sleep(0.1)

    killer = threading.Thread(target=kill_a_busy_worker, daemon=True)
    killer.start()
    out = tmp_path / "out"
    stamps = {}
    events = []
    for ev in _run(paths, out, dask_client):
        events.append(ev)
        if ev.ok:
            stamps[ev.output] = _stamp(ev.output)
    killer.join(timeout=5)

    assert killed, "no worker was killed"
    assert Counter(e.path for e in events) == Counter(paths) and all(e.ok for e in events), events
    masks = sorted(out.glob("*_masks.tif"))
    assert len(masks) == len(paths) and not list(out.glob(".*.part"))
    assert {m: _stamp(m) for m in masks} == stamps  # none written twice (a rewrite renames a new file in)
    first = tifffile.imread(masks[0])
    assert all(np.array_equal(tifffile.imread(m), first) for m in masks)  # the redone image too: same input, same mask
    dask_client.wait_for_workers(2, timeout=120)  # the nanny replaced the dead worker


def test_cancel_stops_every_image_in_flight_and_leaves_complete_masks_only(tmp_path: Path, dask_client,
                                                                           phase_pairs) -> None:
    paths = _copies(phase_pairs[1][0], tmp_path / "in", 4)
    out = tmp_path / "out"
    cancel = CancelToken()
    events = []
    t0 = 0.0
    for ev in _run(paths, out, dask_client, cancel=cancel):
        events.append(ev)
        if len(events) == 1:
            cancel.cancel()
            t0 = time.monotonic()
    stopped_after = time.monotonic() - t0

    assert len(events) == 1 and stopped_after < 60
    masks = sorted(out.glob("*_masks.tif"))
    assert 1 <= len(masks) < len(paths) and all(_complete(m) for m in masks)
    assert not list(out.glob(".*.part"))
    assert (out / RUN_FILE).is_file()  # what was done is recorded, as a local run records it
    deadline = time.monotonic() + 3  # the image in flight stopped at its next check, before the generator returned
    while any(dask_client.run(lambda dask_worker: len(dask_worker.state.executing)).values()):
        assert time.monotonic() < deadline, "a worker still segments an image of the cancelled run"
        time.sleep(0.1)
    time.sleep(1.0)
    assert sorted(out.glob("*_masks.tif")) == masks  # nothing of the cancelled run is written later


def test_a_rerun_keeps_the_complete_masks_and_segments_the_rest(tmp_path: Path, dask_client, dsb_pairs) -> None:
    import pandas as pd

    paths = [p for p, _ in dsb_pairs]
    out = tmp_path / "out"
    first = list(_run(paths[:2], out, dask_client))
    assert all(e.ok and not e.kept for e in first)
    before = {e.path: _stamp(e.output) for e in first}

    again = {e.path: e for e in _run(paths, out, dask_client)}
    assert {p for p, e in again.items() if e.kept} == set(paths[:2])
    assert all(e.ok for e in again.values())
    assert {p: _stamp(again[p].output) for p in paths[:2]} == before  # kept, not written again
    assert len(pd.read_excel(out / "measurements.xlsx", sheet_name="Images")) == len(paths)  # the table covers all

    other = list(_run(paths, out, dask_client, BatchOptions(diameter=25.0)))
    assert all(not e.ok and "other settings" in e.message for e in other)  # never overwritten unasked
    redone = list(_run(paths, out, dask_client, BatchOptions(diameter=25.0, overwrite=True)))
    assert all(e.ok and not e.kept for e in redone)


@pytest.mark.parametrize("first", ["local", "cluster"])
def test_a_batch_begun_on_one_route_is_finished_on_the_other(tmp_path: Path, dask_client, builtin, dsb_pairs,
                                                               first: str) -> None:
    """One resume rule (``core.batch.resume_decision``): the masks a local run completed are kept by a
    cluster run with the same settings, and the other way round; only the rest is segmented."""
    import json

    paths = [p for p, _ in dsb_pairs]
    out = tmp_path / "out"

    def local(ps: list[Path]) -> list:
        return list(segment_files(ps, out, builtin, OPTIONS))

    def cluster(ps: list[Path]) -> list:
        return list(_run(ps, out, dask_client))

    begin, finish = (local, cluster) if first == "local" else (cluster, local)
    done = begin(paths[:2])
    assert all(e.ok and not e.kept for e in done)
    before = {e.path: _stamp(e.output) for e in done}
    key = json.loads((out / RUN_FILE).read_text())["settings"]["run_key"]

    again = {e.path: e for e in finish(paths)}
    assert all(e.ok for e in again.values()), [e.message for e in again.values()]
    assert {p for p, e in again.items() if e.kept} == set(paths[:2])  # kept, not segmented again ...
    assert {p: _stamp(again[p].output) for p in paths[:2]} == before  # ... nor rewritten
    assert json.loads((out / RUN_FILE).read_text())["settings"]["run_key"] == key
    assert all(_complete(m) for m in out.glob("*_masks.tif")) and len(list(out.glob("*_masks.tif"))) == len(paths)


def test_a_multi_scene_file_gives_the_local_masks_per_scene(tmp_path: Path, dask_client, builtin, phase_pairs,
                                                           formats_dir: Path) -> None:
    """Each scene of a multi-scene CZI is a task of its own: the same ``<stem>_s<k>_masks.tif``,
    labels, table rows and run-record entries as a local run."""
    import json

    import pandas as pd

    folder = tmp_path / "in"
    folder.mkdir()
    paths = [folder / "plate.czi", folder / phase_pairs[0][0].name]
    shutil.copy(formats_dir / "czi/S3_1Pos_2Mosaic_T1_Z1_CH1.czi", paths[0])  # 3 small scenes: TR1, P1, TR2
    shutil.copy(phase_pairs[0][0], paths[1])
    local = list(segment_files(paths, tmp_path / "local", builtin, OPTIONS))
    events = list(_run(paths, tmp_path / "cluster", dask_client))

    assert len(local) == len(events) == 4 and all(e.ok for e in local), [e.message for e in local]
    assert sorted((e.name, e.ok, e.output.name if e.output else None, e.n_cells) for e in events) == \
        sorted((e.name, e.ok, e.output.name, e.n_cells) for e in local)
    assert {"plate_s0_masks.tif", "plate_s1_masks.tif", "plate_s2_masks.tif"} <= {e.output.name for e in local}
    for ev in local:
        theirs = tmp_path / "cluster" / ev.output.name
        assert tifffile.imread(ev.output).tobytes() == tifffile.imread(theirs).tobytes(), ev.name
        assert (read_label_settings(theirs) or {}).get("scene") == ev.scene
    records = [json.loads((tmp_path / where / RUN_FILE).read_text())["files"] for where in ("local", "cluster")]
    timeless = [[{k: v for k, v in f.items() if k != "seconds"} for f in r] for r in records]
    assert timeless[0] == timeless[1]  # the same entries, in input order
    assert [(f.get("scene"), f.get("scene_index")) for f in records[1]] == [("TR1", 0), ("P1", 1), ("TR2", 2),
                                                                            (None, None)]
    tables = [pd.read_excel(tmp_path / where / "measurements.xlsx", sheet_name=None) for where in ("local", "cluster")]
    for sheet in ("Cells", "Images"):
        pd.testing.assert_frame_equal(tables[0][sheet], tables[1][sheet])
    assert "plate.czi [P1]" in tables[1]["Images"].astype(str).to_numpy().ravel()


def test_a_project_on_the_cluster_records_the_local_results(tmp_path: Path, dask_client, builtin, dsb_pairs) -> None:
    from efficell_app.project import MeasureSettings, Project
    from efficell_app.tasks import (
        ImageFailed,
        ImageSegmented,
        ImageStarted,
        RunStarted,
        SegmentSettings,
        Status,
        segment_images,
        segment_images_on_cluster,
    )

    settings = SegmentSettings(diameter=20.0, device="cpu", measure=MeasureSettings(pixel_size_um=0.5))
    with Project.create(tmp_path / "proj") as p:
        ids = p.add_files([x for x, _ in dsb_pairs[:3]], "plate").added
        events = list(segment_images_on_cluster(p, [*ids, 999], settings, cluster=dask_client, cancel=CancelToken()))
        kinds = Counter(type(e) for e in events)
        assert kinds[RunStarted] == 1 and kinds[ImageStarted] == 3 and kinds[ImageSegmented] == 3
        assert [e.image_id for e in events if isinstance(e, ImageFailed)] == [999]
        assert any(isinstance(e, Status) and "Loading the model" in e.message for e in events)
        there = {e.image_id: e for e in events if isinstance(e, ImageSegmented)}
        run = p.list_runs()[-1]
        local = {e.image_id: e for e in segment_images(p, ids, settings, segmenter=builtin)
                 if isinstance(e, ImageSegmented)}
        for i in ids:
            assert there[i].labels.tobytes() == local[i].labels.tobytes()
            assert there[i].measured.cells.equals(local[i].measured.cells)
            assert there[i].measured.origin != local[i].measured.origin  # each names its own recorded result
            assert len(p.list_results(i)) == 2  # one per run: recorded once by the cluster run
        assert "tcp://" in str(run.settings.get("cluster")) and run.n_results == len(ids)
        assert run.settings.get("device_info", {}).get("device") == "cpu"  # as a local run records it


def test_workers_reuse_freed_memory_despite_the_nannys_trim_setting(dask_client) -> None:
    """Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_, which turns off glibc's adaptive mmap
    threshold: each large array is then mapped afresh (a page fault per 4 KiB written) and
    segmentation ran 1.7x slower. The worker plugin gives glibc its thresholds back."""
    if not sys.platform.startswith("linux"):
        pytest.skip("glibc's allocator")
    from efficell_app.tasks.cluster import Connection
    from efficell_app.tasks.cluster_segment import prepare_workers
    from efficell_app.tasks.segment import SegmentSettings

    prepare_workers(Connection.of(dask_client), SegmentSettings(diameter=20.0, device="cpu"))

    def faults_per_2mib_array() -> tuple[str | None, float]:
        import os
        import resource

        import numpy as np

        a = np.ones(2**18)  # 2 MiB: the heap grows once
        del a
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(50):
            a = np.ones(2**18)
            del a
        return os.environ.get("MALLOC_TRIM_THRESHOLD_"), (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 50

    seen = dask_client.run(faults_per_2mib_array)
    assert all(trim is not None for trim, _ in seen.values())  # the nanny's setting is there ...
    assert all(faults < 50 for _, faults in seen.values()), seen  # ... and yet no fresh mapping (512 pages) per array


def test_a_task_stopped_by_the_cancel_flag_is_not_logged_as_a_failure() -> None:
    import logging

    from efficell_app.tasks.cluster_worker import _CancelledIsNoFailure

    def record(exc_text: str) -> logging.LogRecord:
        return logging.LogRecord("distributed.worker", logging.ERROR, __file__, 1,
                                 "Compute Failed\nKey:       %s\nState:     %s\nTask:  %s\nException: %r\nTraceback: %r\n",
                                 ("k", "executing", "task", exc_text, "  File ..."), None)

    quiet = _CancelledIsNoFailure()
    assert not quiet.filter(record("Cancelled('cancelled by the user')"))
    assert quiet.filter(record("ValueError('a real failure')"))  # other failures are still logged
    assert quiet.filter(logging.LogRecord("distributed.worker", logging.ERROR, __file__, 1, "Cancelled( elsewhere", (), None))
