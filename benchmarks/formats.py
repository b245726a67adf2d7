"""Reading cost of each microscope format: time to open a file and read one plane (one scene, the
plane or projection a user would choose), against the same pixels saved as a plain TIFF.

    python benchmarks/formats.py [--formats ../shared/formats] [--repeat 7]

For every readable scene of every file of ``../shared/formats`` (tests/data/formats_expected.json
says which plane is read) it times, in this process after one warm-up read:

* ``EffiCell``: ``scene_names`` + ``read_image`` (what adding the file to a project costs);
* ``TIFF``: ``read_image`` of the same (C, Y, X) pixels written with tifffile (the fast path);
* ``bioio``: where bioio and its plugins are installed (an optional comparison; EffiCell does not
  need them): ``BioImage(path)``, ``set_scene``, ``get_image_data`` of the same plane, or the error
  it gives. Its pixels are compared with EffiCell's.

Also the first import of each reader library (a fresh process each). Writes the ``formats`` section
of docs/benchmarks.md. Not run by CI.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report import load_average, machine, write_section  # noqa: E402
from efficell_app.core.images import PlaneChoice, read_image, scene_names  # noqa: E402

LIBRARIES = {"czi": "pylibCZIrw.czi", "nd2": "nd2", "lif": "liffile", "oib": "oiffile", "dv": "mrc", "tiff": "tifffile"}


def timed(fn, repeat: int) -> float:  # noqa: ANN001
    fn()  # warm-up (file cache, lazy imports)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def _forget() -> None:
    """Drop the parsed CZI metadata EffiCell keeps for the last files: each timed read is a first read."""
    from efficell_app.core.readers import zeiss

    zeiss._CACHE.clear()


def bioio_plane(path: Path, scene: int, planes: PlaneChoice) -> np.ndarray:
    from bioio import BioImage

    img = BioImage(path)
    img.set_scene(scene)
    img.physical_pixel_sizes, img.channel_names  # noqa: B018 - the metadata EffiCell reads too
    dims = img.dims
    sel = {}
    if "T" in dims.order and dims.T > 1:
        sel["T"] = planes.t or 0
    rgb = "S" in dims.order
    order = "CYX" + ("S" if rgb else "")
    if "Z" in dims.order and dims.Z > 1:
        if planes.z == "max":
            return np.asarray(img.get_image_data("CZYX" + order[3:], **sel)).max(axis=1)
        sel["Z"] = planes.z
    arr = np.asarray(img.get_image_data(order, **sel))
    return np.moveaxis(arr[0], -1, 0) if rgb else arr  # RGB samples as EffiCell's three channels


def import_seconds(module: str) -> float:
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip()) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--formats", type=Path, default=ROOT.parent / "shared" / "formats")
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("bioio").setLevel(logging.CRITICAL)  # it logs every plugin it tries
    table = json.loads((ROOT / "tests" / "data" / "formats_expected.json").read_text(encoding="utf-8"))
    table.pop("_about")
    try:
        import bioio  # noqa: F401

        has_bioio = True
    except ImportError:
        has_bioio = False
    rows = []
    tmp = Path(tempfile.mkdtemp())
    for name, entry in table.items():
        path = args.formats / name
        p = entry.get("planes", {})
        planes = PlaneChoice(z=p.get("z"), t=p.get("t"))
        names = scene_names(path)
        for k, want in enumerate(entry["images"]):
            if "refused" in want:
                continue
            scene = k if len(names) > 1 else None
            img = read_image(path, planes, scene=scene)
            ms = timed(lambda p=path, pl=planes, s=scene: (_forget(), scene_names(p), read_image(p, pl, scene=s)), args.repeat)
            import tifffile

            plain = tmp / f"{len(rows)}.tif"
            tifffile.imwrite(plain, np.asarray(img.data))
            ms_tiff = timed(lambda p=plain: read_image(p), args.repeat)
            bio = "not installed"
            if has_bioio:
                try:
                    ms_bio = timed(lambda p=path, s=k, pl=planes: bioio_plane(p, s, pl), args.repeat)
                    got = bioio_plane(path, k, planes)
                    same = got.shape == img.data.shape and np.array_equal(got, img.data)
                    bio = f"{ms_bio:.1f}" + ("" if same else " (pixels differ)")
                except Exception as exc:  # noqa: BLE001 - the comparison records bioio's failure
                    bio = f"fails: {type(exc).__name__}"
            label = name + (f" [{names[k]}]" if scene is not None else "")
            shape = "×".join(map(str, img.data.shape))
            rows.append(f"| `{label}` | {shape} {img.data.dtype} | {ms:.1f} | {ms_tiff:.1f} | {ms / ms_tiff:.1f}× | {bio} |")
            print(rows[-1], flush=True)
    imports = {fmt: import_seconds(mod) for fmt, mod in LIBRARIES.items()}
    if has_bioio:
        imports["bioio"] = import_seconds("bioio")
    cmd = "python benchmarks/formats.py" + (f" --repeat {args.repeat}" if args.repeat != 7 else "")
    text = [
        "## Reading microscope formats (open + read one plane)",
        "",
        f"`{cmd}` on {machine()}; load average {load_average()} (a shared machine: times are noisy, "
        "the ratios matter). Median of "
        f"{args.repeat} reads after a warm-up, in ms: *EffiCell* = `scene_names` + `read_image` of one scene "
        "(the plane or projection in `tests/data/formats_expected.json`; the CZI metadata cache emptied before each "
        "read, so a CZI's XML is parsed once per timed read, as when a new file is added); *TIFF* = `read_image` of the same "
        "pixels saved as a plain TIFF; *bioio* = `BioImage` + `set_scene` + pixel size and channel names + "
        "`get_image_data` of the same plane "
        + ("(bioio " + _version("bioio") + " with its plugins, installed beside EffiCell for this comparison only)"
           if has_bioio else "(not installed here)") + ". Refused scenes (LIF tile/XZ/lambda scans) are not listed.",
        "",
        "| file [scene] | pixels read (C×Y×X) | EffiCell | TIFF | ratio | bioio |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        "First import of each reader (fresh process, ms): "
        + ", ".join(f"{fmt} ({LIBRARIES.get(fmt, fmt)}) {ms:.0f}" for fmt, ms in imports.items())
        + ". EffiCell imports a reader only when it opens a file of that format.",
    ]
    path = write_section("formats", "\n".join(text))
    print(f"wrote {path}")


def _version(dist: str) -> str:
    from importlib.metadata import version

    try:
        return version(dist)
    except Exception:  # noqa: BLE001
        return "?"


if __name__ == "__main__":
    main()
