"""Issue 18, case 3: adapters with broken weights are refused, with the file named.

An adapter whose tensors hold NaN (header intact), whose tensor bytes changed after it was
saved (checksum), or that is truncated is refused by ``efficell segment --model``,
``efficell train --init``, ``Project.add_adapter`` and ``Project.import_adapter``; a training
whose weights become non-finite stops with an error and writes nothing. Adapters are written
with the usual file mode (0644 under a 022 umask), like masks.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import tifffile

from efficell_app.core.errors import AdapterError, EffiCellError
from efficell_app.core.model.adapter_io import META_KEY, check_adapter_file, load_adapter, read_adapter_meta
from efficell_app.project import Project


def _rewrite(src: Path, dest: Path, change) -> Path:  # noqa: ANN001
    """A copy of adapter ``src`` whose tensors went through ``change(name, array) -> array``; header kept."""
    from safetensors.torch import load_file, save_file

    state = load_file(str(src))
    state = {k: change(k, v) for k, v in state.items()}
    save_file(state, str(dest), metadata={META_KEY: read_adapter_meta(src).to_json()})
    return dest


def _nan_first(name: str, t):  # noqa: ANN001, ANN202
    if t.is_floating_point() and not getattr(_nan_first, "done", False):
        _nan_first.done = True  # type: ignore[attr-defined]
        t = t.clone()
        t.view(-1)[0] = float("nan")
    return t


def _nan_adapter(src: Path, dest: Path) -> Path:
    _nan_first.done = False  # type: ignore[attr-defined]
    return _rewrite(src, dest, _nan_first)


def _nudged_adapter(src: Path, dest: Path) -> Path:
    """Finite weights, one value changed after saving (what a flipped bit on disk does)."""
    def nudge(name: str, t):  # noqa: ANN001, ANN202
        if t.is_floating_point() and t.numel() > 3:
            t = t.clone()
            t.view(-1)[3] += 0.5
        return t

    return _rewrite(src, dest, nudge)


def test_nan_weights_are_refused_on_load(random_adapter_file: Path, tmp_path: Path) -> None:
    bad = _nan_adapter(random_adapter_file, tmp_path / "nan.safetensors")
    with pytest.raises(AdapterError) as err:
        load_adapter(bad, "efficell_compact", "random")
    assert str(bad) in str(err.value) and "not finite" in str(err.value)


def test_changed_weights_fail_the_checksum(random_adapter_file: Path, tmp_path: Path) -> None:
    assert read_adapter_meta(random_adapter_file).tensors_sha256  # recorded at save time
    check_adapter_file(random_adapter_file)  # the saved file passes
    bad = _nudged_adapter(random_adapter_file, tmp_path / "nudged.safetensors")
    with pytest.raises(AdapterError) as err:
        load_adapter(bad, "efficell_compact", "random")
    assert str(bad) in str(err.value) and "checksum" in str(err.value)


def test_truncated_and_nan_adapters_are_refused_by_the_project(random_adapter_file: Path, tmp_path: Path) -> None:
    raw = random_adapter_file.read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(raw[: len(raw) - 100])  # header intact, the last tensor cut short
    nan = _nan_adapter(random_adapter_file, tmp_path / "nan.safetensors")
    with Project.create(tmp_path / "P") as p:
        for bad, words in ((truncated, "truncated"), (nan, "not finite")):
            for add in (p.add_adapter, p.import_adapter):
                with pytest.raises(AdapterError) as err:
                    add(bad)
                assert str(bad) in str(err.value) and words in str(err.value)
        assert p.list_adapters() == []
        assert list((p.root / "adapters").iterdir()) == []
        info = p.add_adapter(random_adapter_file)  # a sound adapter is still accepted
        assert info.path.is_file()


def test_adapter_file_mode_is_like_masks(random_adapter_file: Path, tmp_path: Path) -> None:
    import torch

    from efficell_app.core.model import build_adapters
    from efficell_app.core.model.adapter_io import save_adapter

    umask = os.umask(0o022)
    try:
        meta = read_adapter_meta(random_adapter_file)
        torch.manual_seed(0)
        ad = build_adapters(meta.in_channels, meta.stride)
        out = tmp_path / "a.safetensors"
        save_adapter(out, ad, meta)
    finally:
        os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644


def test_save_refuses_non_finite_weights(random_adapter_file: Path, tmp_path: Path) -> None:
    import torch

    from efficell_app.core.model import build_adapters
    from efficell_app.core.model.adapter_io import save_adapter

    meta = read_adapter_meta(random_adapter_file)
    ad = build_adapters(meta.in_channels, meta.stride)
    with torch.no_grad():
        next(p for p in ad.parameters() if p.numel() > 1).view(-1)[1] = float("inf")
    out = tmp_path / "inf.safetensors"
    with pytest.raises(AdapterError, match="not finite"):
        save_adapter(out, ad, meta)
    assert list(tmp_path.iterdir()) == []


def test_training_that_diverges_stops_with_an_error(tmp_path: Path, dsb_pairs) -> None:  # noqa: ANN001
    import torch

    from efficell_app.core.encoders import build_encoder
    from efficell_app.core.images import read_image, read_mask
    from efficell_app.core.training import TrainConfig, train_adapter

    torch.set_num_threads(1)
    torch.manual_seed(0)
    pairs = [(read_image(i), read_mask(m)) for i, m in dsb_pairs[:2]]
    out = tmp_path / "diverged.safetensors"
    cfg = TrainConfig(train=pairs, out=out, encoder=build_encoder("efficell_compact", weights=None, small=True),
                      init_adapter=None, epochs=2, batch_size=2, crop=64, target_diameter=12.0, device="cpu",
                      lr=1e10, val_fraction=0.0, tune_thresholds=False)
    with pytest.raises(EffiCellError, match="not finite|diverged"):
        for _ in train_adapter(cfg):
            pass
    assert not out.exists() and not list(tmp_path.glob("*.part"))


# ----------------------------------------------------------------------------- the real command


def _builtin() -> Path:
    from efficell_app.core.pipeline import default_adapter_path

    path = default_adapter_path()
    if not path.exists():
        pytest.skip("built-in model not installed")
    return path


def _efficell(*args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "efficell_app", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_segment_and_train_refuse_a_nan_adapter(tmp_path: Path, dsb_pairs) -> None:  # noqa: ANN001
    bad = _nan_adapter(_builtin(), tmp_path / "nan weights.safetensors")
    img = tmp_path / "in" / "a.tif"
    img.parent.mkdir()
    shutil.copy(dsb_pairs[0][0], img)
    out = tmp_path / "out"
    proc = _efficell("segment", str(img), "--out", str(out), "--model", str(bad), "--device", "cpu")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and str(bad) in errors[0] and "not finite" in errors[0], proc.stderr
    assert not out.exists() or not list(out.iterdir())

    masks = tmp_path / "masks"
    masks.mkdir()
    tifffile.imwrite(masks / "a.tif", tifffile.imread(dsb_pairs[0][1]))
    adapter = tmp_path / "trained.safetensors"
    proc = _efficell("train", "--images", str(img.parent), "--masks", str(masks), "--out", str(adapter),
                     "--init", str(bad), "--epochs", "1", "--device", "cpu")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert str(bad) in proc.stderr and "not finite" in proc.stderr
    assert not adapter.exists()
    assert proc.stdout.strip() == ""  # no result line
