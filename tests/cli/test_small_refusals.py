"""Issue 18, case 7 (low): symlink loops, folders named like images, unreadable files, plane options,
huge float values, and output files of ``measure`` and ``train`` (through the real command)."""

from __future__ import annotations

import builtins
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from efficell_app.cli import main

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="symlinks, tmpfs")


def _efficell(*args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "efficell_app", *args], capture_output=True, text=True,
                          timeout=timeout)


def _cells(seed: int = 0, shape: tuple[int, int] = (64, 64)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 30, shape).astype(np.uint16)
    lab = np.zeros(shape, np.uint16)
    for k, (y, x) in enumerate([(10, 10), (30, 40), (50, 20)], start=1):
        lab[y - 5:y + 5, x - 5:x + 5] = k
        img[y - 5:y + 5, x - 5:x + 5] += 200
    return img, lab


@pytest.fixture()
def pair(tmp_path: Path) -> tuple[Path, Path]:
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    img, lab = _cells()
    tifffile.imwrite(images / "a.tif", img)
    tifffile.imwrite(masks / "a.tif", lab)
    return images, masks


def _errors(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.startswith("error:")]


def test_measure_names_a_symlink_loop_and_measures_the_rest(pair: tuple[Path, Path], tmp_path: Path) -> None:
    images, masks = pair
    os.symlink("loop.tif", images / "loop.tif")  # points at itself
    out = tmp_path / "m.csv"
    proc = _efficell("measure", "--images", str(images), "--masks", str(masks), "--out", str(out))
    assert "Traceback" not in proc.stderr and proc.returncode == 1, proc.stderr
    errors = _errors(proc.stderr)
    assert len(errors) == 1 and str(images / "loop.tif") in errors[0] and "link" in errors[0]
    assert list(pd.read_csv(tmp_path / "m_images.csv")["image"]) == ["a.tif"]


def test_a_folder_named_like_an_image_is_named_not_dropped(pair: tuple[Path, Path], tmp_path: Path) -> None:
    images, masks = pair
    (images / "dir.tif").mkdir()
    out = tmp_path / "m.csv"
    proc = _efficell("measure", "--images", str(images), "--masks", str(masks), "--out", str(out))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    errors = _errors(proc.stderr)
    assert len(errors) == 1 and str(images / "dir.tif") in errors[0] and "folder" in errors[0]


@pytest.mark.parametrize("command", ["segment", "measure", "train"])
def test_bad_plane_numbers_are_usage_errors(command: str, pair: tuple[Path, Path], tmp_path: Path) -> None:
    images, masks = pair
    args = {"segment": ["segment", str(images), "--out", str(tmp_path / "o")],
            "measure": ["measure", "--images", str(images), "--masks", str(masks), "--out", str(tmp_path / "m.csv")],
            "train": ["train", "--images", str(images), "--masks", str(masks), "--out", str(tmp_path / "a.safetensors")],
            }[command]
    for bad in (["--z", "abc"], ["--t", "x1"], ["--z", "-2"]):
        proc = _efficell(*args, *bad)
        assert proc.returncode == 2, (bad, proc.stderr)
        assert "invalid literal" not in proc.stderr and "Traceback" not in proc.stderr
        assert f"{bad[0]} must be" in proc.stderr, proc.stderr


def test_measure_reads_stacks_with_z_and_t(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    img, lab = _cells()
    stack = np.stack([img // 2, img, img // 4])  # 3 z-planes
    tifffile.imwrite(images / "zs.tif", stack, imagej=True, metadata={"axes": "ZYX"})
    tifffile.imwrite(masks / "zs.tif", lab)
    out = tmp_path / "m.csv"
    assert main(["measure", "--images", str(images), "--masks", str(masks), "--out", str(out)]) == 1
    # the reader's message names no option (the window shows it too); the command line adds its own
    assert "3 z-planes; choose a z-plane or the maximum projection (--z N or --z max)" in capsys.readouterr().err
    assert main(["measure", "--images", str(images), "--masks", str(masks), "--out", str(out), "--z", "1"]) == 0
    cells = pd.read_csv(out)
    assert len(cells) == 3 and cells["ch0_max"].max() == img.max()
    assert main(["measure", "--images", str(images), "--masks", str(masks), "--out", str(out), "--z", "max",
                 "--overwrite"]) == 0


def test_train_reads_stacks_with_z(tmp_path: Path) -> None:
    from efficell_app.cli import build_parser
    from efficell_app.cli.train import config_from_args

    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    img, lab = _cells()
    tifffile.imwrite(images / "zs.tif", np.stack([img, img // 2]), imagej=True, metadata={"axes": "ZYX"})
    tifffile.imwrite(masks / "zs.tif", lab)
    args = build_parser().parse_args(["train", "--images", str(images), "--masks", str(masks), "--out",
                                      str(tmp_path / "a.safetensors"), "--z", "max", "--encoder-weights", "none"])
    cfg, problems = config_from_args(args)
    assert problems == []
    (image, mask), = cfg.train
    # a time series of z-stacks read with --z alone: skipped, named with the option still needed
    tifffile.imwrite(images / "tz.tif", np.stack([np.stack([img, img])] * 3), imagej=True, metadata={"axes": "TZYX"})
    tifffile.imwrite(masks / "tz.tif", lab)
    problems = config_from_args(args)[1]
    assert len(problems) == 1 and "tz.tif" in problems[0] and problems[0].endswith("3 time points; choose a time "
                                                                                  "point (--t N); skipped"), problems
    assert np.array_equal(image.data[0], img)  # the maximum projection, read with the plane choice
    assert Path(mask).name == "zs.tif"


def test_permission_denied_is_reported_as_such(pair: tuple[Path, Path], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # noqa: ANN001
    """As root every file is readable, so the refusal of the OS is stood in for here."""
    images, masks = pair
    locked = images / "a.tif"
    real_open = builtins.open

    def refusing_open(file, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
        if isinstance(file, (str, os.PathLike)) and Path(file) == locked:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *a, **k)

    monkeypatch.setattr(builtins, "open", refusing_open)
    rc = main(["measure", "--images", str(images), "--masks", str(masks), "--out", str(tmp_path / "m.csv")])
    err = capsys.readouterr().err
    assert rc == 1
    (line,) = _errors(err)[:1]
    assert str(locked) in line and "permission denied" in line and "damaged" not in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_permission_denied_for_real(pair: tuple[Path, Path], tmp_path: Path) -> None:
    images, masks = pair
    (images / "a.tif").chmod(0)
    proc = _efficell("measure", "--images", str(images), "--masks", str(masks), "--out", str(tmp_path / "m.csv"))
    assert proc.returncode == 1 and "permission denied" in proc.stderr and "damaged" not in proc.stderr


def test_huge_float_values_are_measured_without_overflow(tmp_path: Path) -> None:
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    _, lab = _cells()
    rng = np.random.default_rng(1)
    img = 1e303 + rng.random(lab.shape) * 1e301
    tifffile.imwrite(images / "huge.tif", img.astype(np.float64))
    tifffile.imwrite(masks / "huge.tif", lab)
    out = tmp_path / "m.csv"
    proc = _efficell("measure", "--images", str(images), "--masks", str(masks), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "overflow" not in proc.stderr and "Warning" not in proc.stderr, proc.stderr
    cells = pd.read_csv(out)
    for k in (1, 2, 3):
        inside = img[lab == k]
        row = cells[cells["cell_id"] == k].iloc[0]
        assert row["ch0_std"] == pytest.approx((inside / 1e303).std() * 1e303, rel=1e-6)  # numpy's own overflows
        assert row["ch0_mean"] == pytest.approx((inside / 1e303).mean() * 1e303, rel=1e-9)


def test_measure_out_is_not_replaced_without_overwrite(pair: tuple[Path, Path], tmp_path: Path) -> None:
    images, masks = pair
    for name in ("m.xlsx", "m.csv"):
        out = tmp_path / name
        out.write_bytes(b"last week's table")
        proc = _efficell("measure", "--images", str(images), "--masks", str(masks), "--out", str(out))
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        errors = _errors(proc.stderr)
        assert len(errors) == 1 and str(out) in errors[0] and "--overwrite" in errors[0]
        assert out.read_bytes() == b"last week's table"
        proc = _efficell("measure", "--images", str(images), "--masks", str(masks), "--out", str(out), "--overwrite")
        assert proc.returncode == 0, proc.stderr
        assert out.read_bytes() != b"last week's table"


def test_measure_tidies_temporary_files_of_an_interrupted_run(pair: tuple[Path, Path], tmp_path: Path) -> None:
    images, masks = pair
    stale = [tmp_path / ".m.k2j4h1.csv.part", tmp_path / ".m_images.x8f0aa.csv.part",
             tmp_path / ".m_settings.0qpw7e.json.part"]
    old = time.time() - 3600
    for f in stale:
        f.write_bytes(b"half a table")
        os.utime(f, (old, old))
    other = tmp_path / ".notes.abc.txt.part"  # not one of ours
    other.write_bytes(b"x")
    assert main(["measure", "--images", str(images), "--masks", str(masks), "--out", str(tmp_path / "m.csv")]) == 0
    assert not any(f.exists() for f in stale) and other.exists()


@contextlib.contextmanager
def _read_only_disk(folder: Path) -> Iterator[Path]:
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here ({mounted.stderr.strip()})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.mark.parametrize("where", ["missing folder", "read-only folder"])
def test_train_checks_its_output_folder_before_training(where: str, pair: tuple[Path, Path], tmp_path: Path) -> None:
    images, masks = pair
    with contextlib.ExitStack() as stack:
        if where == "missing folder":
            out = tmp_path / "no such folder" / "a.safetensors"
            words = "does not exist"
        else:
            out = stack.enter_context(_read_only_disk(tmp_path / "ro")) / "a.safetensors"
            words = "read-only"
        t0 = time.monotonic()
        proc = _efficell("train", "--images", str(images), "--masks", str(masks), "--out", str(out),
                         "--minutes", "30", "--device", "cpu")
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        errors = _errors(proc.stderr)
        assert len(errors) == 1 and str(out) in errors[0] and words in errors[0], proc.stderr
        assert "caching features" not in proc.stderr and "training" not in proc.stderr.replace("efficell train", "")
        assert time.monotonic() - t0 < 120


def test_an_absent_device_is_named_with_the_option_only_on_the_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from efficell_app.cli.hints import with_options
    from efficell_app.core.device import DeviceUnavailable, choose_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceUnavailable) as info:
        choose_device("cuda")
    assert "--" not in str(info.value) and "no CUDA GPU found" in str(info.value)  # the window's words
    assert with_options(info.value).startswith("--device cuda: no CUDA GPU found")
    from efficell_app.tasks import describe_error

    assert describe_error(info.value).startswith("the device chosen in Settings (cuda) cannot be used: no CUDA GPU")
