"""Bad input at every entry point: the readers, the CLI (segment, train, eval, measure) and the project store.

The policy, one row per kind of bad file. ``ok``: read as is; ``warn:W``: read, with a warning
containing W; ``no:W``: refused with a one-line reason containing W that follows the file's path.
The same file is tried as an image (``read_image``, ``efficell segment``/``train``/``measure``,
``Project.add_files``/``add_folder``) and as a mask of a 48x48 image (``read_mask``,
``import_masks``, ``efficell train``/``eval``/``measure``, mask import into a project).

=====================  ==================================  =======================================  ==============================
file                   what it is                          as an image                              as a mask of a 48x48 image
=====================  ==================================  =======================================  ==============================
truncated.tif          a TIFF cut to a third               no: damaged or truncated                 no: damaged
empty.tif              0 bytes                             no: 0 bytes                              no: 0 bytes
png_named.tif          a PNG saved as .tif                 warn: is a PNG image (read by content)   ok (read by content)
tiff_named.png         a TIFF saved as .png                warn: is a TIFF image (read by content)  ok (read by content)
text.jpg               a text file named .jpg              no: content is not TIFF, PNG, JPEG, BMP  no: content is not TIFF, ...
bool.tif               boolean TIFF                        no: binary (boolean)                     ok (each blob one cell)
complex64.tif          complex64 TIFF                      no: complex                              no: unsupported type complex64
complex128.tif         complex128 TIFF                     no: complex                              no: unsupported type complex128
tiny2x2.tif            2x2 pixels                          no: 2x2 pixels                           no: mask is 2x2 but its image is 48x48
line1x10000.tif        1x10,000 pixels                     no: 1x10000 pixels                       no: mask is 1x10000 but its image ...
zstack3d.tif           ImageJ z-stack ZYX (5 planes)       no: 5 z-planes  (--z max: ok)            no: must be 2-D
planes3d.tif           7 planes, no metadata               no: channels, z-planes or time points    no: must be 2-D
                                                           (--z max: ok, read as z-planes)
zc4d.tif               ImageJ ZCYX                         no: 4 z-planes  (--z max: ok)            no: must be 2-D
plain4d.tif            4-D, no metadata                    no: cannot be interpreted (always)       no: must be 2-D
tzc5d.tif              ImageJ TZCYX                        no: 2 time points (--z max --t 0: ok)    no: must be 2-D
plain5d.tif            5-D, no metadata                    no: cannot be interpreted (always)       no: must be 2-D
somenan.tif            float with NaN, +Inf, -Inf          warn: NaN/infinite pixel(s) replaced     no: non-integer labels
allnan.tif             every pixel NaN                     no: every pixel is NaN or infinite       no: non-integer labels
allinf.tif             every pixel +Inf                    no: every pixel is NaN or infinite       no: non-integer labels
constant.tif           every pixel 7                       warn: constant (0 cells)                 ok (one cell)
negative.tif           int16 labels with -1                ok (an int16 image)                      no: negative labels
float15.tif            float32 labels with 1.5             ok (a float image)                       no: non-integer labels
float_whole.tif        float32 labels 1.0, 2.0             ok                                       ok
smaller.tif            a 24x48 label image                 ok                                       no: mask is 24x48 but its image is 48x48
=====================  ==================================  =======================================  ==============================

Adapters given to ``segment --model`` / ``train --init`` (refused: ``error: <adapter>: <reason>``, exit 1,
nothing written): 0 bytes, text, truncated, safetensors without EffiCell metadata, metadata that does not
match the tensors, trained for another encoder, for other weights of the same encoder, for an unknown encoder.

A mask of another size reads "mask is HxW but its image is HxW" (``efficell measure``: "mask is HxW pixels but
its image <image path> is HxW", as its image may live in another folder).

A stack is refused by the readers in words a window can show (no command-line option); ``efficell
segment`` adds the options that choose a plane (``--z N or --z max``, ``--t N``).

Every command: exit 1 when some input failed (0 when none did), one ``error: <path>: <reason>`` line per
bad file (``efficell train``: ``warning: <path>: <reason>; skipped``, then it trains on the usable pairs),
no traceback, the rest of the batch done, no partial or temporary files, existing files kept. Every path
here is long (> 250 characters) and holds non-ASCII characters.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tifffile

from efficell_app.cli import main
from efficell_app.core.errors import InputError
from efficell_app.core.images import PlaneChoice, read_image, read_mask
from efficell_app.core.mask_import import import_masks
from efficell_app.core.pipeline import Segmenter

SIDE = 48  # every good image is SIDE x SIDE
STACKS = PlaneChoice(z="max", t=0)  # the plane choice that makes the z/t stacks readable

# file -> (outcome as an image, outcome as a mask of a SIDE x SIDE image); see the table above
CASES: dict[str, tuple[str, str]] = {
    "truncated.tif": ("no:damaged or truncated", "no:damaged"),
    "empty.tif": ("no:0 bytes", "no:0 bytes"),
    "png_named.tif": ("warn:is a PNG image", "ok"),
    "tiff_named.png": ("warn:is a TIFF image", "ok"),
    "text.jpg": ("no:content is not TIFF, PNG, JPEG or BMP", "no:content is not TIFF, PNG, JPEG or BMP"),
    "bool.tif": ("no:binary (boolean)", "ok"),
    "complex64.tif": ("no:complex", "no:unsupported type complex64"),
    "complex128.tif": ("no:complex", "no:unsupported type complex128"),
    "tiny2x2.tif": ("no:2x2 pixels", "no:mask is 2x2"),
    "line1x10000.tif": ("no:1x10000 pixels", "no:mask is 1x10000"),
    "zstack3d.tif": ("no:5 z-planes", "no:must be 2-D"),
    "planes3d.tif": ("no:channels, z-planes or time points", "no:must be 2-D"),
    "zc4d.tif": ("no:4 z-planes", "no:must be 2-D"),
    "plain4d.tif": ("no:cannot be interpreted", "no:must be 2-D"),
    "tzc5d.tif": ("no:2 time points", "no:must be 2-D"),
    "plain5d.tif": ("no:cannot be interpreted", "no:must be 2-D"),
    "somenan.tif": ("warn:NaN/infinite pixel(s) replaced", "no:non-integer labels"),
    "allnan.tif": ("no:every pixel is NaN or infinite", "no:non-integer labels"),
    "allinf.tif": ("no:every pixel is NaN or infinite", "no:non-integer labels"),
    "constant.tif": ("warn:constant", "ok"),
    "negative.tif": ("ok", "no:negative labels"),
    "float15.tif": ("ok", "no:non-integer labels"),
    "float_whole.tif": ("ok", "ok"),
    "smaller.tif": ("ok", f"no:mask is 24x{SIDE}"),
}
# what `efficell segment` adds to a stack's reason: the options that choose its plane
CLI_OPTIONS = {"zstack3d.tif": "(--z N or --z max)", "zc4d.tif": "(--z N or --z max)",
               "tzc5d.tif": "(--z N or --z max and --t N)", "planes3d.tif": "(--z N|max or --t N)"}
# with --z max --t 0 these stacks are read; everything else keeps its outcome
WITH_PLANES = {"zstack3d.tif": "ok", "planes3d.tif": "ok", "zc4d.tif": "ok", "tzc5d.tif": "ok"}
GOOD = ("good_é 細胞 1.tif", "good_é 細胞 2.tif")  # good images, each with a mask good_..._masks.tif


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> object:
    """One torch thread: the machine is shared, and these images are tiny."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _outcome(spec: str) -> tuple[str, str]:
    kind, _, words = spec.partition(":")
    return kind, words


def _cells() -> tuple[np.ndarray, np.ndarray]:
    """A SIDE x SIDE uint16 image of bright disks on a noisy background, and its label image."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:SIDE, :SIDE]
    labels = np.zeros((SIDE, SIDE), np.int32)
    for i, (cy, cx) in enumerate([(10, 10), (10, 34), (30, 20), (36, 38), (24, 6)], start=1):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= 25] = i
    img = (200 + 50 * rng.random((SIDE, SIDE)) + 1500 * (labels > 0)).astype(np.uint16)
    return img, labels


def _write_cases(d: Path) -> None:
    """Write every file of CASES (and the GOOD images with their masks) into ``d``."""
    from PIL import Image

    img, labels = _cells()
    for name in GOOD:
        tifffile.imwrite(d / name, img)
        tifffile.imwrite(d / name.replace(".tif", "_masks.tif"), labels.astype(np.uint16))
    tifffile.imwrite(d / "big.tif", np.tile(img, (4, 4)))
    raw = (d / "big.tif").read_bytes()
    (d / "truncated.tif").write_bytes(raw[: len(raw) // 3])
    (d / "big.tif").unlink()
    (d / "empty.tif").write_bytes(b"")
    Image.fromarray((img // 8).astype(np.uint8)).save(d / "png_named.tif", format="PNG")
    tifffile.imwrite(d / "tiff_named.png", img)
    (d / "text.jpg").write_text("this is not an image\n", encoding="utf-8")
    tifffile.imwrite(d / "bool.tif", labels > 0)
    tifffile.imwrite(d / "complex64.tif", img.astype(np.complex64))
    tifffile.imwrite(d / "complex128.tif", img.astype(np.complex128))
    tifffile.imwrite(d / "tiny2x2.tif", img[:2, :2])
    tifffile.imwrite(d / "line1x10000.tif", np.arange(10_000, dtype=np.uint16)[None])
    tifffile.imwrite(d / "zstack3d.tif", np.stack([img] * 5), imagej=True, metadata={"axes": "ZYX"})
    tifffile.imwrite(d / "planes3d.tif", np.stack([img] * 7))
    tifffile.imwrite(d / "zc4d.tif", np.stack([np.stack([img] * 2)] * 4), imagej=True, metadata={"axes": "ZCYX"})
    tifffile.imwrite(d / "plain4d.tif", np.stack([np.stack([img] * 3)] * 2), photometric="minisblack")
    tifffile.imwrite(d / "tzc5d.tif", np.broadcast_to(img, (2, 3, 2, SIDE, SIDE)).copy(), imagej=True,
                     metadata={"axes": "TZCYX"})
    tifffile.imwrite(d / "plain5d.tif", np.broadcast_to(img, (2, 3, 2, SIDE, SIDE)).copy(), photometric="minisblack")
    f = img.astype(np.float32)
    f[3, 3], f[10, 20], f[30, 31] = np.nan, np.inf, -np.inf
    tifffile.imwrite(d / "somenan.tif", f)
    tifffile.imwrite(d / "allnan.tif", np.full((SIDE, SIDE), np.nan, np.float32))
    tifffile.imwrite(d / "allinf.tif", np.full((SIDE, SIDE), np.inf, np.float32))
    tifffile.imwrite(d / "constant.tif", np.full((SIDE, SIDE), 7, np.uint16))
    neg = labels.astype(np.int16)
    neg[labels == 2] = -1
    tifffile.imwrite(d / "negative.tif", neg)
    tifffile.imwrite(d / "float15.tif", np.where(labels == 1, 1.5, labels).astype(np.float32))
    tifffile.imwrite(d / "float_whole.tif", labels.astype(np.float32))
    tifffile.imwrite(d / "smaller.tif", labels[:24].astype(np.uint16))


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder, deep under non-ASCII names (every path > 250 characters), holding every case file."""
    d = tmp_path_factory.mktemp("bad") / "données_画像 ü"
    for i in range(4):
        d = d / (f"niveau_{i}_細胞_" + "x" * 40)
    d.mkdir(parents=True)
    _write_cases(d)
    assert min(len(str(p)) for p in d.iterdir()) > 250
    return d


def _copy(src: Path, names: list[str], dest: Path, rename: Callable[[str], str] = lambda n: n) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for n in names:
        shutil.copy(src / n, dest / rename(n))
    return dest


def _lines(err: str, prefix: str, path: Path) -> list[str]:
    return [ln for ln in err.splitlines() if ln.startswith(f"{prefix}: {path}: ")]


def _check_error(err: str, path: Path, words: str) -> None:
    """Exactly one ``error: <path>: <reason>`` line, whose reason holds ``words``."""
    mine = _lines(err, "error", path)
    assert len(mine) == 1, (path.name, err)
    assert words.lower() in mine[0].split(f"{path}: ", 1)[1].lower(), (path.name, mine[0])


def _no_leftovers(folder: Path) -> None:
    assert not [p for p in folder.rglob("*") if p.name.endswith(".part") or p.name.startswith(".")], list(folder.rglob("*"))


def _expect(call: Callable[[], object], spec: str, path: Path) -> object:
    """Run a reader call and check it against a policy cell."""
    kind, words = _outcome(spec)
    if kind == "no":
        with pytest.raises(InputError) as info:
            call()
        msg = str(info.value)
        assert msg.startswith(f"{path}: ") and "\n" not in msg, msg
        assert words.lower() in info.value.reason.lower(), msg
        return None
    return call()


# ----------------------------------------------------------------------------- (a) the readers


@pytest.mark.parametrize("name", list(CASES))
def test_readers(name: str, cases: Path) -> None:
    path = cases / name
    as_image, as_mask = CASES[name]
    img = _expect(lambda: read_image(path), as_image, path)
    if img is not None:
        kind, words = _outcome(as_image)
        assert img.data.ndim == 3 and min(img.shape) >= 8
        if kind == "warn":
            assert any(words.lower() in n.lower() for n in img.notes), img.notes
        else:
            assert img.notes == []
    planes_spec = WITH_PLANES.get(name, as_image)
    img = _expect(lambda: read_image(path, planes=STACKS), planes_spec, path)
    if img is not None and name in WITH_PLANES:
        assert img.shape == (SIDE, SIDE)
    for reader in (read_mask, import_masks):
        labels = _expect(lambda r=reader: r(path, shape=(SIDE, SIDE)), as_mask, path)
        if labels is not None:
            assert labels.shape == (SIDE, SIDE) and labels.dtype == np.int32 and labels.min() >= 0


def test_mask_reader_keeps_a_one_pixel_high_mask_2d(cases: Path) -> None:
    assert read_mask(cases / "line1x10000.tif").shape == (1, 10_000)


# ----------------------------------------------------------------------------- (b) the CLI: segment


@pytest.fixture()
def patched_load(monkeypatch: pytest.MonkeyPatch, random_segmenter) -> Segmenter:
    monkeypatch.setattr(Segmenter, "load", classmethod(lambda cls, *a, **k: random_segmenter))
    return random_segmenter


@pytest.mark.parametrize("planes", [(), ("--z", "max", "--t", "0")], ids=["no-plane-choice", "z-max-t-0"])
def test_segment_cli(planes: tuple[str, ...], cases: Path, tmp_path: Path, patched_load, capsys) -> None:
    names = [*GOOD, *CASES]
    src = _copy(cases, names, tmp_path / "données in")
    out = tmp_path / "sortie ü"
    out.mkdir()
    (out / "keep.txt").write_text("the user's own file")
    rc = main(["segment", str(src), "--out", str(out), "--diameter", "24", "--no-measure", *planes])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err, err
    done = 0
    for name in names:
        spec = (WITH_PLANES.get(name) if planes else None) or CASES.get(name, ("ok", ""))[0]
        kind, words = _outcome(spec)
        mask = out / f"{Path(name).stem}_masks.tif"
        if kind == "no":
            _check_error(err, src / name, words)
            if not planes and name in CLI_OPTIONS:
                _check_error(err, src / name, CLI_OPTIONS[name])
            assert not mask.exists()
            continue
        done += 1
        assert not _lines(err, "error", src / name), err
        assert tifffile.imread(mask).shape == read_image(src / name, planes=STACKS).shape
        warned = _lines(err, "warning", src / name)
        assert (len(warned) == 1 and words.lower() in warned[0].lower()) if kind == "warn" else not warned, (name, err)
    assert tifffile.imread(out / "constant_masks.tif").max() == 0
    assert f"{done} of {len(names)} image(s) segmented" in err
    assert (out / "keep.txt").read_text() == "the user's own file"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["keep.txt", "efficell_run.json"] + [p.name for p in out.glob("*_masks.tif")])
    _no_leftovers(out)


# ----------------------------------------------------------------------------- adapters


def _rewrite_meta(src: Path, dest: Path, **changes: object) -> Path:
    """A copy of adapter ``src`` with its metadata changed (tensors kept)."""
    from safetensors.torch import load_file, save_file

    from efficell_app.core.model.adapter_io import META_KEY, read_adapter_meta

    meta = json.loads(read_adapter_meta(src).to_json())
    meta.update(changes)
    save_file(load_file(str(src)), str(dest), metadata={META_KEY: json.dumps(meta)})
    return dest


def _bad_adapter(kind: str, folder: Path, base: Path) -> Path:
    """A bad adapter file of ``kind``; ``base`` is a good adapter for the encoder in use."""
    import torch
    from safetensors.torch import save_file

    from efficell_app.core.model.adapter_io import read_adapter_meta

    path = folder / f"{kind} 適配器.safetensors"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("this is not an adapter, just a note\n", encoding="utf-8")
    elif kind == "truncated":
        raw = base.read_bytes()
        path.write_bytes(raw[: len(raw) * 2 // 3])
    elif kind == "no-metadata":
        save_file({"w": torch.zeros(3)}, str(path))
    elif kind == "edited":
        _rewrite_meta(base, path, in_channels=[c + 8 for c in read_adapter_meta(base).in_channels])
    elif kind == "other-encoder":
        _rewrite_meta(base, path, encoder="dinov2_vit_s14")
    elif kind == "other-weights":
        _rewrite_meta(base, path, encoder_sha256="0" * 64)
    elif kind == "unknown-encoder":
        _rewrite_meta(base, path, encoder="no_such_encoder_v9")
    return path


ADAPTER_WORDS = {  # kind -> words of the reason, for segment --model (S) and train --init (T)
    "empty": ("truncated or empty", "truncated or empty"),
    "text": ("not a safetensors adapter file", "not a safetensors adapter file"),
    "truncated": ("damaged", "damaged"),
    "no-metadata": ("not an EffiCell adapter", "not an EffiCell adapter"),
    "edited": ("do not match", "do not match"),
    "other-encoder": ("encoder this adapter needs cannot be loaded: dinov2_vit_s14", "trained for encoder 'dinov2_vit_s14', not 'efficell_compact'"),
    "other-weights": ("other weights", "other weights"),
    "unknown-encoder": ("does not know", "trained for encoder 'no_such_encoder_v9'"),
}


@pytest.fixture()
def light_dinov2(monkeypatch: pytest.MonkeyPatch) -> None:
    """dinov2_vit_s14 builds a tiny stand-in backbone (its weights are not installed in tests either way)."""
    import dataclasses

    import torch

    from efficell_app.core.encoders import registry

    spec = registry.get_spec("dinov2_vit_s14")
    monkeypatch.setitem(registry._REGISTRY, spec.name, dataclasses.replace(spec, builder=lambda small=False: torch.nn.Identity()))


@pytest.mark.parametrize("kind", list(ADAPTER_WORDS))
def test_segment_cli_bad_model(kind: str, cases: Path, tmp_path: Path, light_dinov2, capsys) -> None:
    """The real Segmenter.load: the built-in encoder and a damaged or foreign adapter."""
    from efficell_app.core.pipeline import default_adapter_path

    if not default_adapter_path().exists():
        pytest.skip("built-in model not installed")
    adapter = _bad_adapter(kind, cases.parent, default_adapter_path())
    out = tmp_path / "out"
    rc = main(["segment", str(cases / GOOD[0]), "--out", str(out), "--model", str(adapter), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err, err
    _check_error(err, adapter, ADAPTER_WORDS[kind][0])
    assert len([ln for ln in err.splitlines() if ln.startswith("error:")]) == 1
    assert not out.exists()


# ----------------------------------------------------------------------------- train


@pytest.fixture()
def tiny_training(monkeypatch: pytest.MonkeyPatch):
    """``efficell train`` with the small random compact encoder, 64-pixel crops, on the CPU."""
    import torch

    from efficell_app.cli import train as train_cli
    from efficell_app.core.encoders import build_encoder

    real = train_cli.config_from_args

    def config(args):
        cfg, problems = real(args)
        torch.manual_seed(0)
        enc = build_encoder("efficell_compact", weights=None, small=True)
        return replace(cfg, encoder=enc, crop=64, device="cpu", batch_size=2), problems

    monkeypatch.setattr(train_cli, "config_from_args", config)


def _train_args(images: Path, masks: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--images", str(images), "--masks", str(masks), "--out", str(out), "--epochs", "1",
            "--diameter", "10", *extra]


def test_train_cli(cases: Path, tmp_path: Path, tiny_training, capsys) -> None:
    """Bad images (with good masks) and bad masks (of good images) are named and skipped; the rest trains."""
    img, _ = _cells()
    images, masks = tmp_path / "images ü", tmp_path / "masks ü"
    _copy(cases, list(GOOD), images)
    _copy(cases, [g.replace(".tif", "_masks.tif") for g in GOOD], masks)
    bad_images = [n for n, (as_image, _) in CASES.items() if as_image.startswith("no:")]
    _copy(cases, bad_images, images)
    for n in bad_images:  # each bad image gets a good mask
        shutil.copy(cases / GOOD[0].replace(".tif", "_masks.tif"), masks / f"{Path(n).stem}_masks.tif")
    bad_masks = [n for n, (_, as_mask) in CASES.items() if as_mask.startswith("no:") and n not in bad_images]
    for n in bad_masks:  # each bad mask belongs to a good image
        tifffile.imwrite(images / f"img_{Path(n).stem}.tif", img)
        shutil.copy(cases / n, masks / f"img_{Path(n).stem}_masks{Path(n).suffix}")
    out = tmp_path / "modèle.safetensors"
    rc = main(_train_args(images, masks, out, "--init", "none"))
    cap = capsys.readouterr()
    assert rc == 1 and "Traceback" not in cap.err, cap.err
    result = json.loads(cap.out.strip().splitlines()[-1])
    assert result["images"] == len(GOOD) and out.is_file()
    for n in bad_images:
        words = _outcome(CASES[n][0])[1]
        _check_skip(cap.err, images / n, words)
    for n in bad_masks:
        words = _outcome(CASES[n][1])[1]
        _check_skip(cap.err, masks / f"img_{Path(n).stem}_masks{Path(n).suffix}", words)
    assert len(result["skipped"]) == len(bad_images) + len(bad_masks)
    _no_leftovers(tmp_path)


def _check_skip(err: str, path: Path, words: str) -> None:
    mine = _lines(err, "warning", path)
    assert len(mine) == 1 and words.lower() in mine[0].lower() and "skipped" in mine[0], (path.name, err)


def test_train_cli_nothing_usable_writes_nothing(cases: Path, tmp_path: Path, tiny_training, capsys) -> None:
    images, masks = tmp_path / "images", tmp_path / "masks"
    _copy(cases, ["truncated.tif", "allnan.tif"], images)
    _copy(cases, ["float15.tif", "negative.tif"], masks)
    out = tmp_path / "a.safetensors"
    rc = main(_train_args(images, masks, out, "--init", "none"))
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err and "no usable training images" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "masks"]


@pytest.mark.parametrize("kind", list(ADAPTER_WORDS))
def test_train_cli_bad_init(kind: str, cases: Path, tmp_path: Path, tiny_training, random_adapter_file: Path,
                            capsys) -> None:
    images = _copy(cases, [GOOD[0]], tmp_path / "images")
    masks = _copy(cases, [GOOD[0].replace(".tif", "_masks.tif")], tmp_path / "masks")
    adapter = _bad_adapter(kind, tmp_path, random_adapter_file)
    out = tmp_path / "new.safetensors"
    rc = main(_train_args(images, masks, out, "--init", str(adapter)))
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err, err
    _check_error(err, adapter, ADAPTER_WORDS[kind][1])
    assert not out.exists()
    _no_leftovers(tmp_path)


# ----------------------------------------------------------------------------- eval


def test_eval_cli(cases: Path, tmp_path: Path, capsys) -> None:
    """Each case as a prediction of a good ground truth (and the file-level ones as a ground truth too)."""
    gt, pred = tmp_path / "vérité", tmp_path / "prédiction"
    gt.mkdir()
    pred.mkdir()
    good_mask = cases / GOOD[0].replace(".tif", "_masks.tif")
    mask_cases = [n for n in CASES if Path(n).suffix in (".tif", ".png")]  # eval reads .tif/.tiff/.png
    for n in mask_cases:
        shutil.copy(good_mask, gt / f"p_{Path(n).stem}.tif")
        shutil.copy(cases / n, pred / f"p_{Path(n).stem}{Path(n).suffix}")
    as_gt = ["truncated.tif", "empty.tif", "negative.tif"]  # bad ground truth, good prediction
    for n in as_gt:
        shutil.copy(cases / n, gt / f"g_{n}")
        shutil.copy(good_mask, pred / f"g_{n}")
    rc = main(["eval", "--gt", str(gt), "--pred", str(pred), "--json"])
    cap = capsys.readouterr()
    assert rc == 1 and "Traceback" not in cap.err, cap.err
    doc = json.loads(cap.out)
    scored = {r["stem"] for r in doc["per_image"]}
    for n in mask_cases:
        kind, words = _outcome(CASES[n][1])
        stem = f"p_{Path(n).stem}"
        if kind == "no":
            _check_error(cap.err, pred / f"{stem}{Path(n).suffix}", words)
            assert stem not in scored
        else:
            assert stem in scored
    for n in as_gt:
        _check_error(cap.err, gt / f"g_{n}", _outcome(CASES[n][1])[1])
    assert len(doc["problems"]) == len([ln for ln in cap.err.splitlines() if ln.startswith("error:")])


# ----------------------------------------------------------------------------- measure


@pytest.mark.parametrize("fmt", [".csv", ".xlsx"])
def test_measure_cli(fmt: str, cases: Path, tmp_path: Path, capsys) -> None:
    """Bad images with good masks, and good images with bad masks: named; the rest measured into one table."""
    img, labels = _cells()
    images, masks = tmp_path / "images ü", tmp_path / "masks ü"
    _copy(cases, list(GOOD), images)
    _copy(cases, [g.replace(".tif", "_masks.tif") for g in GOOD], masks)
    expect: dict[Path, str] = {}
    for n, (as_image, as_mask) in CASES.items():
        shutil.copy(cases / n, images / n)
        h, w = (SIDE, SIDE) if as_image.startswith("no:") else read_image(cases / n).shape
        tifffile.imwrite(masks / f"{Path(n).stem}_masks.tif", labels[:h, :w].astype(np.uint16))
        expect[images / n] = as_image
        if n.endswith((".tif", ".png")):
            tifffile.imwrite(images / f"m_{Path(n).stem}.tif", img)
            shutil.copy(cases / n, masks / f"m_{Path(n).stem}_masks{Path(n).suffix}")
            expect[masks / f"m_{Path(n).stem}_masks{Path(n).suffix}"] = as_mask
    out = tmp_path / f"résultats{fmt}"
    rc = main(["measure", "--images", str(images), "--masks", str(masks), "--out", str(out)])
    cap = capsys.readouterr()
    assert rc == 1 and "Traceback" not in cap.err, cap.err
    n_ok = len(GOOD)
    for path, spec in expect.items():
        kind, words = _outcome(spec)
        if kind == "no":
            _check_error(cap.err, path, words)
        else:
            n_ok += 1
            assert not _lines(cap.err, "error", path), cap.err
    measured = _measured_images(out)
    assert len(measured) == n_ok, (sorted(measured), cap.err)
    assert not [n for n in measured if n in CASES and CASES[n][0].startswith("no:")]
    _no_leftovers(tmp_path)


def _measured_images(out: Path) -> set[str]:
    """Names of the images in the per-image table of a measurement output."""
    import pandas as pd

    from efficell_app.core.export import companion_paths

    if out.suffix == ".csv":
        table = pd.read_csv(companion_paths(out)[0])
    else:
        table = pd.read_excel(out, sheet_name="Images")
    return set(table["image"])


def test_measure_cli_all_bad_keeps_existing_table(cases: Path, tmp_path: Path, capsys) -> None:
    images = _copy(cases, ["truncated.tif", "empty.tif"], tmp_path / "images")
    good_mask = GOOD[0].replace(".tif", "_masks.tif")
    masks = _copy(cases, [good_mask], tmp_path / "masks", rename=lambda n: "truncated_masks.tif")
    _copy(cases, [good_mask], masks, rename=lambda n: "empty_masks.tif")
    out = tmp_path / "table.csv"
    out.write_text("the user's earlier table\n")
    rc = main(["measure", "--images", str(images), "--masks", str(masks), "--out", str(out), "--overwrite"])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err and "nothing written" in err, err
    assert out.read_text() == "the user's earlier table\n"


# ----------------------------------------------------------------------------- (c) the project store


@pytest.fixture()
def project(tmp_path: Path):
    from efficell_app.project import Project

    p = Project.create(tmp_path / "projet 細胞")
    yield p
    p.close()


@pytest.mark.parametrize("how", ["add_files-copy", "add_folder"])
def test_project_add(how: str, cases: Path, project, tmp_path: Path) -> None:
    src = _copy(cases, [*GOOD, *CASES], tmp_path / "expérience")
    if how == "add_folder":
        report = project.add_folder(src, "plaque 1")
    else:
        report = project.add_files(sorted(src.iterdir()), "plaque 1", copy=True)
    skipped = {Path(p).name: why for p, why in report.skipped}
    added = {r.path.name for r in project.list_images("plaque 1")}
    for name, (as_image, _) in CASES.items():
        kind, words = _outcome(as_image)
        if kind == "no":
            assert name in skipped and words.lower() in skipped[name].lower() and "\n" not in skipped[name], (name, skipped)
            assert name not in added
        else:
            assert name in added and name not in skipped
    assert set(GOOD) <= added
    if how == "add_files-copy":  # nothing half-copied, nothing of a skipped file left in the project
        copied = {p.name for p in (project.root / "images").rglob("*") if p.is_file()}
        assert copied == added
        _no_leftovers(project.root / "images")
    # the stacks, added again with a plane choice
    stacks = [src / n for n in WITH_PLANES]
    report = project.add_files(stacks, "piles", planes=STACKS)
    assert report.n_added == len(WITH_PLANES) and not report.skipped
    assert {(r.height, r.width) for r in project.list_images("piles")} == {(SIDE, SIDE)}


@pytest.mark.parametrize("name", [n for n in CASES if Path(n).suffix in (".tif", ".png", ".jpg")])
def test_project_mask_import(name: str, cases: Path, project, tmp_path: Path) -> None:
    """A case file imported as the annotation of a good image: refused ones change nothing."""
    _, labels = _cells()
    src = _copy(cases, [GOOD[0]], tmp_path / "in")
    image_id = project.add_files([src / GOOD[0]], "s").added[0]
    first = project.save_annotation(image_id, labels)
    kind, words = _outcome(CASES[name][1])
    path = cases / name
    if kind == "no":
        with pytest.raises(InputError) as info:
            import_masks(path, (SIDE, SIDE))
        assert str(info.value).startswith(f"{path}: ") and words.lower() in info.value.reason.lower()
    else:
        imported = import_masks(path, (SIDE, SIDE))
        project.save_annotation(image_id, imported, note=f"imported {name}")
        assert np.array_equal(project.load_annotation(image_id) > 0, imported > 0)
    history = project.annotation_history(image_id)
    assert len(history) == (1 if kind == "no" else 2) and history[-1 if kind == "no" else 0].version >= first.version
    if kind == "no":
        assert np.array_equal(project.load_annotation(image_id), labels)
    _no_leftovers(project.root / "annotations")


@pytest.mark.parametrize("bad,words", [
    (lambda m: np.where(m == 1, 1.5, m).astype(np.float32), "whole numbers"),
    (lambda m: np.where(m == 2, -1, m), "negative"),
    (lambda m: m[:24], "24x48 but its image is 48x48"),
    (lambda m: np.stack([m, m]), "2-D"),
    (lambda m: m.astype(np.complex64), "whole numbers"),
], ids=["float-1.5", "negative", "smaller", "3-D", "complex"])
def test_project_save_annotation_refuses_bad_labels(bad, words: str, cases: Path, project, tmp_path: Path) -> None:
    _, labels = _cells()
    src = _copy(cases, [GOOD[0]], tmp_path / "in")
    image_id = project.add_files([src / GOOD[0]], "s").added[0]
    project.save_annotation(image_id, labels)
    with pytest.raises(ValueError, match=words):
        project.save_annotation(image_id, bad(labels))
    assert len(project.annotation_history(image_id)) == 1
    assert np.array_equal(project.load_annotation(image_id), labels)
    assert len(list((project.root / "annotations").rglob("*.tif"))) == 1
    _no_leftovers(project.root / "annotations")
