"""The real images ``benchmarks/gpu.py`` runs on, packed small enough to travel to a GPU machine.

    python3 benchmarks/gpu_data.py prepare     # pack (below) and fetch the wheels the GPU machine lacks into .whl/
    python3 benchmarks/gpu_data.py pack [--data ../shared/data] [--out .gpu_data]

copies a fixed subset of ``../shared/data`` into ``.gpu_data/`` (ignored by git; about 22 MB, so
that it fits the GPU machine's 64 MiB carry limit with the repository): 200 DSB2018 fluorescence
images (CC0), the four quadrant tiles of 6 Usiigaci phase-contrast fields (MIT), and the first 5
images of the DSB2018 training split with their masks (the few-shot set). MoNuSeg is not carried:
its licence is non-commercial and the timings do not need a third modality. Files are copied
byte for byte (they are already deflate-compressed TIFFs); ``manifest.json`` lists each with its
sha256 and licence.

At run time :func:`images_1024` turns them into full-size test images: each Usiigaci field
(4 tiles, 1022 x 1024) padded to 1024 x 1024 and in 4 orientations, and mosaics of DSB2018
images (as ``benchmarks/speed.py`` makes them) for the rest.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data"
DEFAULT_PACK = ROOT / ".gpu_data"
N_DSB = 200
USIIGACI_SETS = ("set01", "set06", "set11", "set16", "set21", "set26")
LICENCES = {"dsb2018_fluo": "CC0 (2018 Data Science Bowl, BBBC038)", "usiigaci_phase": "MIT (Usiigaci, Tsai et al. 2019)"}


def _sha256(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def fewshot_stems() -> list[str]:
    """The first 5 images of the DSB2018 training split (what benchmarks/fewshot.py trains K=5 on)."""
    split = json.loads((ROOT / "resources" / "models" / "data_split.json").read_text())["split"]
    return split["dsb2018_fluo"]["train"][:5]


def pack(data: Path, out: Path) -> dict:
    """Copy the subset into ``out`` (replacing what was there); returns the manifest."""
    if not (data / "dsb2018_fluo" / "images").is_dir():
        raise SystemExit(f"{data}: no dsb2018_fluo/images here (give --data, the shared data folder)")
    if out.exists():
        shutil.rmtree(out)
    files = []

    def copy(src: Path, rel: str, ds: str) -> None:
        dst = out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        files.append({"file": rel, "source": str(src.relative_to(data)), "sha256": _sha256(dst), "licence": LICENCES[ds]})

    dsb = sorted((data / "dsb2018_fluo" / "images").glob("*.tif"))
    step = max(1, len(dsb) // N_DSB)
    for p in dsb[::step][:N_DSB]:
        copy(p, f"dsb/{p.name}", "dsb2018_fluo")
    for s in USIIGACI_SETS:
        for q in ("r0c0", "r0c1", "r1c0", "r1c1"):
            copy(data / "usiigaci_phase" / "images" / f"{s}_{q}.tif", f"usiigaci/{s}_{q}.tif", "usiigaci_phase")
    for s in fewshot_stems():
        for kind in ("images", "masks"):
            copy(data / "dsb2018_fluo" / kind / f"{s}.tif", f"fewshot/{kind}/{s}.tif", "dsb2018_fluo")
    manifest = {"made_by": "benchmarks/gpu_data.py pack", "files": files,
                "bytes": sum((out / f["file"]).stat().st_size for f in files)}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def check(pack_dir: Path) -> None:
    """Raise SystemExit naming the first missing or changed file of the pack."""
    mf = pack_dir / "manifest.json"
    if not mf.is_file():
        raise SystemExit(f"{pack_dir}: no manifest.json (run: python3 benchmarks/gpu_data.py pack)")
    for f in json.loads(mf.read_text())["files"]:
        p = pack_dir / f["file"]
        if not p.is_file() or _sha256(p) != f["sha256"]:
            raise SystemExit(f"{p}: missing or changed since packing (run: python3 benchmarks/gpu_data.py pack)")


def _read(p: Path):  # noqa: ANN202 - (H, W) array
    import tifffile

    a = tifffile.imread(p)
    return a if a.ndim == 2 else a[..., 0]


def _field(pack_dir: Path, s: str):  # noqa: ANN202 - one Usiigaci field, 1022 x 1024
    import numpy as np

    q = {k: _read(pack_dir / "usiigaci" / f"{s}_{k}.tif") for k in ("r0c0", "r0c1", "r1c0", "r1c1")}
    return np.block([[q["r0c0"], q["r0c1"]], [q["r1c0"], q["r1c1"]]])


def images_1024(pack_dir: Path, n: int, size: int = 1024) -> list:
    """``n`` real ``size`` x ``size`` images as ImageData: Usiigaci fields (4 orientations each) first, then DSB mosaics."""
    import numpy as np

    from benchmarks.mosaic import tile_mosaic
    from efficell_app.core.images import ImageData

    out = []
    for s in USIIGACI_SETS:
        f = _field(pack_dir, s)
        f = np.pad(f, ((0, max(0, size - f.shape[0])), (0, max(0, size - f.shape[1]))), mode="reflect")[:size, :size]
        for k in range(4):
            if len(out) < n // 4:  # a quarter of the set is phase contrast
                out.append(ImageData(np.ascontiguousarray(np.rot90(f, k))[None], path=Path(f"{s}_rot{90 * k}.tif")))
    dsb = [_read(p) for p in sorted((pack_dir / "dsb").glob("*.tif"))]
    j = 0
    while len(out) < n:
        out.append(ImageData(tile_mosaic(dsb, size, 7 * j)[None], path=Path(f"dsb_mosaic_{j:03d}.tif")))
        j += 1
    return out


def fewshot_pairs(pack_dir: Path) -> list[tuple[Path, Path]]:
    return [(pack_dir / "fewshot" / "images" / f"{s}.tif", pack_dir / "fewshot" / "masks" / f"{s}.tif")
            for s in fewshot_stems()]


# Pure-Python packages the GPU machine's image lacks (platformdirs) or may hold in another version
# (timm: the encoders are built with the version tested here). Carried as wheels in .whl/.
WHEELS = ("timm==1.0.31", "platformdirs==4.14.9")


def fetch_wheels(dest: Path) -> None:
    """Download :data:`WHEELS` for the GPU machine's Python 3.12 (see the device README's note on wheels)."""
    import subprocess

    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("*.whl"):
        old.unlink()
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
           "--implementation", "cp", "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux2014_x86_64",
           "-d", str(dest), *WHEELS]
    subprocess.run(cmd, check=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=["prepare", "pack", "check"])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--out", type=Path, default=DEFAULT_PACK)
    a = p.parse_args()
    if a.command in ("pack", "prepare"):
        m = pack(a.data, a.out)
        print(f"{a.out}: {len(m['files'])} files, {m['bytes'] / 2**20:.1f} MiB")
        if a.command == "prepare":
            fetch_wheels(ROOT / ".whl")
            print(f"{ROOT / '.whl'}: " + ", ".join(p.name for p in sorted((ROOT / ".whl").glob("*.whl"))))
    else:
        check(a.out)
        print(f"{a.out}: complete")
    return 0


if __name__ == "__main__":
    sys.exit(main())
