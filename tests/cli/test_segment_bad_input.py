"""``efficell segment`` on bad input: every bad file is named with a one-line reason, the rest
of the batch is written, nothing partial is left behind, and nothing is overwritten unasked."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from efficell_app.cli import main
from efficell_app.core.batch import BatchOptions, segment_files
from efficell_app.core.cancel import CancelToken
from efficell_app.core.pipeline import Segmenter

BAD = {  # file name -> words expected in its one-line reason
    "truncated.tif": "damaged",
    "empty.tif": "0 bytes",
    "text.tif": "cannot be read",
    "tiny.tif": "1x1",
    "stack5d.tif": "cannot be interpreted",
    "allnan.tif": "NaN",
}
GOOD = ("good1.tif", "good2.tif", "somenan.tif", "zeros.tif")  # the last two with a warning


@pytest.fixture()
def batch_dir(tmp_path: Path, dsb_pairs) -> Path:
    d = tmp_path / "in"
    d.mkdir()
    shutil.copy(dsb_pairs[0][0], d / "good1.tif")
    shutil.copy(dsb_pairs[1][0], d / "good2.tif")
    good = tifffile.imread(dsb_pairs[0][0])
    raw = (d / "good1.tif").read_bytes()
    tifffile.imwrite(d / "big.tif", np.tile(good, (2, 2)) if good.ndim == 2 else good)
    (d / "truncated.tif").write_bytes((d / "big.tif").read_bytes()[: len(raw) // 3])
    (d / "big.tif").unlink()
    (d / "empty.tif").write_bytes(b"")
    (d / "text.tif").write_text("this is not an image\n", encoding="utf-8")
    tifffile.imwrite(d / "tiny.tif", np.array([[7]], np.uint16))
    tifffile.imwrite(d / "stack5d.tif", np.zeros((2, 3, 2, 16, 16), np.uint16))
    f = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    f[3, 3], f[10, 20], f[30, 31] = np.nan, np.inf, -np.inf
    tifffile.imwrite(d / "somenan.tif", f)
    tifffile.imwrite(d / "allnan.tif", np.full((32, 32), np.nan, np.float32))
    tifffile.imwrite(d / "zeros.tif", np.zeros((48, 48), np.uint8))
    return d


@pytest.fixture()
def patched_load(monkeypatch: pytest.MonkeyPatch, random_segmenter) -> Segmenter:  # noqa: ANN001
    monkeypatch.setattr(Segmenter, "load", classmethod(lambda cls, *a, **k: random_segmenter))
    return random_segmenter


def _check_report(err: str, in_dir: Path, out: Path) -> None:
    assert "Traceback" not in err
    lines = err.splitlines()
    for name, words in BAD.items():
        mine = [ln for ln in lines if ln.startswith(f"error: {in_dir / name}: ")]
        assert len(mine) == 1, (name, err)
        reason = mine[0].split(f"{in_dir / name}: ", 1)[1]
        assert words.lower() in reason.lower(), (name, reason)
        assert not (out / f"{Path(name).stem}_masks.tif").exists()
    for name in GOOD:
        mask = tifffile.imread(out / f"{Path(name).stem}_masks.tif")
        assert mask.shape == tifffile.imread(in_dir / name).shape[-2:]
    assert tifffile.imread(out / "zeros_masks.tif").max() == 0
    assert any(ln.startswith(f"warning: {in_dir / 'somenan.tif'}:") and "NaN" in ln for ln in lines)
    assert f"{len(GOOD)} of {len(GOOD) + len(BAD)} image(s) segmented" in err
    assert not list(out.rglob("*.part"))


def test_bad_files_named_rest_written(batch_dir: Path, tmp_path: Path, patched_load, capsys) -> None:  # noqa: ANN001
    out = tmp_path / "out"
    rc = main(["segment", str(batch_dir), "--out", str(out), "--diameter", "24"])
    err = capsys.readouterr().err
    assert rc == 1
    _check_report(err, batch_dir, out)
    assert (out / "measurements.xlsx").exists() and (out / "efficell_run.json").exists()


RUNNER = """
import sys
import torch
from efficell_app.core.encoders import build_encoder
from efficell_app.core.model import EffiCellModel
from efficell_app.core.model.adapter_io import load_adapter
from efficell_app.core.pipeline import Segmenter
from efficell_app.cli import main

def load(cls, *a, **k):
    torch.manual_seed(0)
    enc = build_encoder("efficell_compact", weights=None, small=True)
    ad, meta, sha = load_adapter(sys.argv[1], "efficell_compact", "random")
    return Segmenter(EffiCellModel(enc, ad), meta, sha, None, "cpu")

Segmenter.load = classmethod(load)
raise SystemExit(main(sys.argv[2:]))
"""


@pytest.mark.slow
def test_bad_files_in_a_subprocess(batch_dir: Path, tmp_path: Path, random_adapter_file: Path) -> None:
    """A real process: exit status 1, one line per bad file, no traceback."""
    runner = tmp_path / "runner.py"
    runner.write_text(RUNNER, encoding="utf-8")
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    p = subprocess.run([sys.executable, str(runner), str(random_adapter_file), "segment", str(batch_dir), "--out", str(out),
                        "--diameter", "24", "--no-measure"], capture_output=True, text=True, env=env, timeout=300, check=False)
    assert p.returncode == 1, p.stderr
    _check_report(p.stderr, batch_dir, out)


@pytest.mark.parametrize("code,words", [(errno.ENOSPC, "disk is full"), (errno.EROFS, "read-only"), (errno.EACCES, "permission")])
def test_unwritable_output_leaves_nothing_partial(code: int, words: str, dsb_pairs, tmp_path: Path, patched_load,  # noqa: ANN001
                                                  monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # noqa: ANN001
    d = tmp_path / "in"
    d.mkdir()
    for img, _ in dsb_pairs[:2]:
        shutil.copy(img, d / img.name)
    out = tmp_path / "out"

    def refuse(src, dst):  # noqa: ANN001, ANN202
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "replace", refuse)
    rc = main(["segment", str(d), "--out", str(out), "--diameter", "24"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "Traceback" not in err
    for img, _ in dsb_pairs[:2]:
        line = [ln for ln in err.splitlines() if ln.startswith(f"error: {d / img.name}: ")]
        assert len(line) == 1 and words in line[0]
    assert sorted(p.name for p in out.iterdir()) == []  # no masks, no *.part, no half workbook


def test_output_path_that_is_a_file(dsb_pairs, tmp_path: Path, patched_load, capsys) -> None:  # noqa: ANN001
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    rc = main(["segment", str(dsb_pairs[0][0]), "--out", str(blocker), "--diameter", "24"])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    assert f"error: {blocker}:" in err and len([ln for ln in err.splitlines() if ln.startswith("error:")]) == 1


def test_unicode_and_very_long_paths(dsb_pairs, tmp_path: Path, patched_load, capsys) -> None:  # noqa: ANN001
    deep = tmp_path / "données_画像 ü"
    for i in range(6):
        deep = deep / (f"niveau_{i}_" + "x" * 30)
    deep.mkdir(parents=True)
    src = deep / "cellules é 細胞 (1).tif"
    shutil.copy(dsb_pairs[0][0], src)
    assert len(str(src)) > 250
    out = deep / "sortie ü"
    rc = main(["segment", str(deep), "--out", str(out), "--diameter", "24"])
    err = capsys.readouterr().err
    assert rc == 0, err
    mask = tifffile.imread(out / "cellules é 細胞 (1)_masks.tif")
    assert mask.shape == tifffile.imread(src).shape[-2:]


def test_existing_output_is_not_overwritten(dsb_pairs, tmp_path: Path, patched_load, capsys) -> None:  # noqa: ANN001
    src = dsb_pairs[0][0]
    out = tmp_path / "out"
    out.mkdir()
    target = out / f"{src.stem}_masks.tif"
    target.write_bytes(b"the user's own file")
    rc = main(["segment", str(src), "--out", str(out), "--diameter", "24"])
    err = capsys.readouterr().err
    assert rc == 1 and "already exists" in err and "--overwrite" in err
    assert target.read_bytes() == b"the user's own file"
    rc = main(["segment", str(src), "--out", str(out), "--diameter", "24", "--overwrite"])
    assert rc == 0
    assert tifffile.imread(target).shape == tifffile.imread(src).shape[-2:]


def test_cancel_mid_batch_leaves_no_partial_outputs(dsb_pairs, tmp_path: Path, random_segmenter) -> None:  # noqa: ANN001
    """Cancelled while the second image is being segmented: the first is complete, nothing else exists."""
    paths = [img for img, _ in dsb_pairs[:3]]
    token = CancelToken()
    real = random_segmenter.segment
    calls = []

    def segment(img, **kw):  # noqa: ANN001, ANN202
        calls.append(img.path)
        if len(calls) == 2:
            kw["progress"] = lambda f: token.cancel() if f > 0 else None
            kw["cancel"] = token
            token.cancel()
        return real(img, **kw)

    random_segmenter.segment = segment
    out = tmp_path / "out"
    events = list(segment_files(paths, out, random_segmenter, BatchOptions(diameter=24.0, measure=False), cancel=token))
    assert [e.ok for e in events] == [True]
    masks = sorted(p.name for p in out.glob("*_masks.tif"))
    assert masks == [f"{paths[0].stem}_masks.tif"]
    assert not list(out.rglob("*.part")) and not list(out.rglob(".*"))


def _keyboard_interrupt() -> None:
    raise KeyboardInterrupt


def _ctrl_c() -> None:
    """As a terminal's Ctrl-C: SIGINT to this process (Python's handler, or the command's)."""
    import signal

    signal.raise_signal(signal.SIGINT)


def _interrupt_second_image(seg, interrupt, at: int = 2):  # noqa: ANN001, ANN202
    """Make ``seg`` call ``interrupt()`` as it starts its ``at``-th image; returns its own ``segment``."""
    real = seg.segment
    n = []

    def segment(img, **kw):  # noqa: ANN001, ANN202
        n.append(1)
        if len(n) == at:
            interrupt()
        return real(img, **kw)

    seg.segment = segment
    return real


def _three_images(dsb_pairs, tmp_path: Path) -> Path:  # noqa: ANN001
    d = tmp_path / "in"
    d.mkdir()
    for img, _ in dsb_pairs[:3]:
        shutil.copy(img, d / img.name)
    return d


def test_ctrl_c_mid_batch(dsb_pairs, tmp_path: Path, patched_load, capsys) -> None:  # noqa: ANN001
    """Ctrl+C during the second image: exit 130, the first mask written, no partial file."""
    _interrupt_second_image(patched_load, _keyboard_interrupt)
    d = _three_images(dsb_pairs, tmp_path)
    out = tmp_path / "out"
    rc = main(["segment", str(d), "--out", str(out), "--diameter", "24"])
    err = capsys.readouterr().err
    assert rc == 130 and "cancelled" in err and "Traceback" not in err
    assert len(list(out.glob("*_masks.tif"))) == 1
    assert not list(out.rglob("*.part"))


def test_a_real_ctrl_c_stops_at_the_next_step_and_records_what_was_done(dsb_pairs, tmp_path: Path, patched_load,
                                                                        capsys) -> None:  # noqa: ANN001
    """A real SIGINT during the second image (as a terminal's Ctrl-C): the image stops at the
    segmenter's next check, the table and run record list the image done, exit 130; the same
    command again keeps that mask and finishes the batch."""
    import json
    import signal

    from openpyxl import load_workbook

    real = _interrupt_second_image(patched_load, _ctrl_c)
    d = _three_images(dsb_pairs, tmp_path)
    out = tmp_path / "out"
    before = signal.getsignal(signal.SIGINT)
    rc = main(["segment", str(d), "--out", str(out), "--diameter", "24"])
    err = capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is before  # Ctrl-C is Python's again once the command returns
    assert rc == 130 and "Traceback" not in err, err
    assert "cancelling:" in err and "cancelled: 1 of 3 image(s) done" in err
    assert "measurements.xlsx and efficell_run.json" in err
    assert len(list(out.glob("*_masks.tif"))) == 1 and not list(out.rglob("*.part"))
    record = json.loads((out / "efficell_run.json").read_text())
    assert len(record["files"]) == 1 and record["files"][0]["ok"]
    assert load_workbook(out / "measurements.xlsx")["Images"].max_row == 2  # a header and the image done

    patched_load.segment = real
    rc = main(["segment", str(d), "--out", str(out), "--diameter", "24"])
    err = capsys.readouterr().err
    assert rc == 0 and f"3 of 3 image(s) segmented into {out} (1 kept" in err, err
    assert len(json.loads((out / "efficell_run.json").read_text())["files"]) == 3


def test_a_ctrl_c_before_the_first_image_is_done_records_nothing(dsb_pairs, tmp_path: Path, patched_load,
                                                                capsys) -> None:  # noqa: ANN001
    """No empty table or run record (which would also push a later run's to ``_2`` names)."""
    _interrupt_second_image(patched_load, _ctrl_c, at=1)
    out = tmp_path / "out"
    rc = main(["segment", str(_three_images(dsb_pairs, tmp_path)), "--out", str(out), "--diameter", "24"])
    err = capsys.readouterr().err
    assert rc == 130 and "cancelled: 0 of 3 image(s) done" in err and "recorded in" not in err, err
    assert sorted(p.name for p in out.iterdir()) == []

def test_a_second_ctrl_c_stops_at_once() -> None:
    """The first Ctrl-C sets the token and says so; the second raises KeyboardInterrupt."""
    import io
    import signal

    from efficell_app.cli.interrupt import ctrl_c_cancels

    err = io.StringIO()
    with pytest.raises(KeyboardInterrupt), ctrl_c_cancels(CancelToken(), err, "stopping…") as token:
        signal.raise_signal(signal.SIGINT)
        assert token.cancelled and "cancelling: stopping… (Ctrl-C again to stop at once)" in err.getvalue()
        signal.raise_signal(signal.SIGINT)


def test_a_real_ctrl_c_in_a_project_run_keeps_what_was_recorded(dsb_pairs, tmp_path: Path, patched_load,
                                                                 capsys) -> None:  # noqa: ANN001
    """``segment --project``: Ctrl-C during the second image stops it at the next step (no result
    for it), the first stays recorded, exit 130; ``--only-new`` then finishes the run."""
    from efficell_app.project import Project

    real = _interrupt_second_image(patched_load, _ctrl_c)
    with Project.create(tmp_path / "p") as p:
        p.add_files([img for img, _ in dsb_pairs[:3]], "plate")
    rc = main(["segment", "--project", str(tmp_path / "p"), "--diameter", "24"])
    err = capsys.readouterr().err
    assert rc == 130 and "Traceback" not in err and "cancelled after 1 image(s)" in err, err
    with Project.open(tmp_path / "p") as p:
        assert sorted(r.status for r in p.list_images()) == ["new", "new", "segmented"]
    patched_load.segment = real
    assert main(["segment", "--project", str(tmp_path / "p"), "--diameter", "24", "--only-new"]) == 0
    assert "2 of 2 image(s) segmented" in capsys.readouterr().err


def test_the_lines_within_an_image_say_how_far_it_is_and_its_time_left(monkeypatch) -> None:
    """A slide takes minutes: every 5 s (not sooner) a line with the share done and the image's time left."""
    import io
    from types import SimpleNamespace

    import efficell_app.cli.segment as cli_segment
    import efficell_app.core.progress as progress

    clock = [100.0]
    fake = SimpleNamespace(monotonic=lambda: clock[0])
    monkeypatch.setattr(cli_segment, "time", fake)
    monkeypatch.setattr(progress, "time", fake)
    err = io.StringIO()
    within = cli_segment._Within(err)
    for t, index, name, fraction in ((100, 1, "a.tif", 0.0), (103, 1, "a.tif", 0.1), (110, 1, "a.tif", 0.25),
                                     (112, 1, "a.tif", 0.3), (120, 2, "b.tif", 0.0), (126, 2, "b.tif", 0.5),
                                     (140, 2, "b.tif", 1.0)):
        clock[0] = float(t)
        within(index, 2, name, fraction)
    assert err.getvalue().splitlines() == ["  1/2 a.tif: 25% of the image, about 30 s left for it",
                                           "  2/2 b.tif: 50% of the image, about 6 s left for it"]
