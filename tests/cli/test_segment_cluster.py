"""``efficell segment --cluster SPEC``: a spec that is not one is refused; a real local cluster
segments a batch, prints its dashboard, stops cleanly on Ctrl-C (complete masks only, no worker
left) and a re-run finishes the batch."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from efficell_app.cli import main


@pytest.mark.parametrize("spec", ["condor", "local:0", "local:two", "slurm:-1", "http//host"])
def test_a_spec_that_is_not_a_cluster_is_refused(spec: str, tmp_path: Path, dsb_pairs, capsys) -> None:
    rc = main(["segment", str(dsb_pairs[0][0]), "--out", str(tmp_path / "out"), "--cluster", spec])
    err = capsys.readouterr().err
    assert rc == 2 and f"cluster '{spec}'" in err and ("tcp://host:port" in err or "positive whole number" in err)
    assert not (tmp_path / "out").exists()


def _group_alive(pgid: int) -> list[str]:
    """Processes of a process group that are still running (zombies do not count)."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(text[:80])
    return alive


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find the workers left")
def test_ctrl_c_leaves_complete_masks_and_a_rerun_finishes(tmp_path: Path, phase_pairs) -> None:
    pytest.importorskip("distributed", reason="the cluster extra is not installed: pip install 'efficell[cluster]'")
    src = tmp_path / "in"
    src.mkdir()
    for i in range(4):
        shutil.copy(phase_pairs[0][0], src / f"well{i}.tif")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "efficell_app", "segment", str(src), "--out", str(out), "--cluster", "local:2",
           "--diameter", "20", "--device", "cpu"]
    log = tmp_path / "first.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.monotonic() + 600
        while "1/4" not in log.read_text() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal reaches the whole process group
        rc = proc.wait(timeout=120)
    text = log.read_text()
    assert rc == 130, text
    assert "dashboard: http://" in text and "cluster: local:2" in text and "cancelled" in text
    assert "Traceback" not in text  # the workers leave Ctrl-C to the client
    masks = sorted(out.glob("*_masks.tif"))
    assert 1 <= len(masks) < 4 and not list(out.glob(".*.part")), text
    time.sleep(1.0)
    assert _group_alive(proc.pid) == []  # no worker process left behind

    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert f"4 of 4 image(s) segmented into {out} ({len(masks)} kept from an earlier run" in done.stderr
    assert len(list(out.glob("*_masks.tif"))) == 4
    record = json.loads((out / "efficell_run.json").read_text())
    assert record["settings"]["cluster"] == "local:2" and sum(f["kept"] for f in record["files"]) == len(masks)
