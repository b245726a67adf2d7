"""``efficell --selftest``: is this installation working, and which device did it find?

The self-test loads the built-in model, segments a bundled sample image
(``resources/samples/``) at a fixed cell diameter and compares the result with a stored
expectation (``selftest_expected.json`` + the label image it names):

* the number of cells must be within the stored tolerance, and
* AP at IoU 0.5 against the stored label image must be at least ``min_ap50`` (0.9),

so small numeric differences between CPUs, GPUs and torch builds pass while a broken
model, a broken bundle (missing files, wrong library) or a different model fail. It also
reports the device found: CUDA / Apple MPS / CPU, GPU names and memory, the torch build and
its CUDA version, and the CPU threads.

    rep = selftest_report()          # a dict (the GUI's Help menu shows it; takes seconds:
    print(format_report(rep))        # run it in a worker thread, not on the GUI thread)
    code = run_selftest()            # prints the report, returns 0 (pass) or 1 (fail)

The expectation is regenerated from the current built-in model with
``python resources/samples/make_selftest_expectation.py`` (uses :func:`make_expectation`).
"""

from __future__ import annotations

import json
import logging
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import __version__
from .core.errors import EffiCellError, InputError

log = logging.getLogger(__name__)

EXPECTATION_FILE = "selftest_expected.json"
FORMAT = "efficell-selftest-expectation"
FORMAT_VERSION = 1
DEFAULT_SAMPLE = "images/nuclei_fluo_0402a81e.tif"
DEFAULT_MIN_AP50 = 0.9


class SelftestError(InputError):
    """The expectation files are missing or damaged ("path: reason")."""


@dataclass(frozen=True)
class Expectation:
    """What the built-in model gave on the sample when the expectation was made."""

    image: str  # relative to the expectation's folder
    labels: str  # label image (uint16 tiff), relative to the expectation's folder
    n_cells: int
    n_cells_tolerance: int
    min_ap50: float
    diameter: float  # fixed diameter (px) the sample is segmented at
    model: dict[str, Any]  # identity of the model that made it (adapter/encoder sha256)
    created: str = ""
    made_with: dict[str, Any] | None = None  # app version, torch, device (information only)
    ap50_vs_annotation: float | None = None  # how good the model is on this sample (information only)

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION, **asdict(self)}, indent=1, sort_keys=True)


def default_expectation_path() -> Path:
    """``resources/samples/selftest_expected.json`` (in a checkout or inside the bundle)."""
    from .core.resources import samples_dir

    return samples_dir() / EXPECTATION_FILE


def load_expectation(path: str | Path) -> Expectation:
    """Read and check an expectation file; :class:`SelftestError` names the file and the problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise SelftestError(path, "the self-test expectation is missing (reinstall EffiCell, or run "
                                  "resources/samples/make_selftest_expectation.py in a source checkout)") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise SelftestError(path, f"cannot read the self-test expectation ({exc})") from exc
    try:
        d = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SelftestError(path, f"the self-test expectation is damaged (not valid JSON: {exc.msg} at line {exc.lineno})") from exc
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise SelftestError(path, f"not a self-test expectation (format is not '{FORMAT}')")
    if int(d.get("format_version", 0)) > FORMAT_VERSION:
        raise SelftestError(path, f"written by a newer EffiCell (format {d.get('format_version')}, this one reads {FORMAT_VERSION})")
    try:
        exp = Expectation(image=str(d["image"]), labels=str(d["labels"]), n_cells=int(d["n_cells"]),
                          n_cells_tolerance=int(d["n_cells_tolerance"]), min_ap50=float(d["min_ap50"]),
                          diameter=float(d["diameter"]), model=dict(d.get("model") or {}), created=str(d.get("created", "")),
                          made_with=d.get("made_with"), ap50_vs_annotation=d.get("ap50_vs_annotation"))
    except (KeyError, TypeError, ValueError) as exc:
        raise SelftestError(path, f"the self-test expectation is damaged (bad or missing field {exc})") from exc
    if exp.n_cells < 1 or exp.n_cells_tolerance < 0 or not 0.0 < exp.min_ap50 <= 1.0 or exp.diameter <= 0:
        raise SelftestError(path, "the self-test expectation is damaged (n_cells, tolerance, min_ap50 or diameter out of range)")
    return exp


def _device_lines(dev: dict[str, Any]) -> list[str]:
    """Plain-language device summary: what was found, and why not a GPU when there is none."""
    build = f"torch {dev.get('torch')} ({'CUDA ' + str(dev['cuda_build']) if dev.get('cuda_build') else 'CPU-only build'})"
    lines = []
    if dev.get("gpus"):
        for g in dev["gpus"]:
            lines.append(f"GPU {g['index']}: {g['name']}, {g['memory_gb']} GB")
    if dev.get("device") == "cuda":
        lines.insert(0, "device: CUDA GPU")
    elif dev.get("device") == "mps":
        lines.insert(0, "device: Apple GPU (MPS)")
    else:
        why = ("this EffiCell carries a CPU-only torch; install the CUDA bundle on a PC with an NVIDIA GPU"
               if not dev.get("cuda_build") else "no CUDA GPU found (no NVIDIA GPU, or its driver is too old for CUDA "
                                                 f"{dev.get('cuda_build')})")
        lines.insert(0, f"device: CPU ({why})")
    lines.append(f"build: {build}; CPU threads: {dev.get('cpu_threads')}")
    return lines


def _environment() -> dict[str, Any]:
    from .core.resources import resources_dir

    return {"app_version": __version__, "frozen": bool(getattr(sys, "frozen", False)),
            "python": platform.python_version(), "platform": platform.platform(), "executable": sys.executable,
            "resources": str(resources_dir())}


def selftest_report(segmenter: Any | None = None, expectation: str | Path | None = None,
                    device: str = "auto") -> dict[str, Any]:
    """Run the self-test and return everything as a JSON-ready dict (never raises for a failed check).

    ``segmenter``: a loaded :class:`~efficell_app.core.pipeline.Segmenter` (None: the built-in
    model on ``device``). ``expectation``: the expectation file (None: the bundled one).
    Keys: ``ok``, ``summary``, ``checks`` (list of ``{name, ok, detail}``), ``device``
    (:func:`~efficell_app.core.inference.device_report`), ``device_lines``, ``model``,
    ``result`` (n_cells, expected, ap50, seconds) and the environment (``app_version``, ...).
    """
    rep: dict[str, Any] = {**_environment(), "checks": [], "device": None, "device_lines": [], "model": None, "result": None}
    checks: list[dict[str, Any]] = rep["checks"]

    def check(name: str, ok: bool, detail: str) -> bool:
        checks.append({"name": name, "ok": bool(ok), "detail": detail})
        log.info("selftest %s %s: %s", name, "ok" if ok else "FAILED", detail)
        return ok

    t0 = time.time()
    try:
        from .core.inference import device_report

        rep["device"] = device_report()
        rep["device_lines"] = _device_lines(rep["device"])
        check("device", True, rep["device_lines"][0].removeprefix("device: "))
    except Exception as exc:  # noqa: BLE001 - a broken torch install is exactly what the self-test must report
        check("device", False, f"torch does not load ({type(exc).__name__}: {exc})")
        return _finish(rep, t0)

    exp_path = Path(expectation) if expectation is not None else default_expectation_path()
    try:
        exp = load_expectation(exp_path)
        from .core.images import read_image, read_mask

        img = read_image(exp_path.parent / exp.image)
        expected = read_mask(exp_path.parent / exp.labels, img.shape)
        check("sample", True, f"{exp.image}: {img.shape[1]}x{img.shape[0]} px, {exp.n_cells} cells expected")
    except EffiCellError as exc:
        check("sample", False, str(exc))
        return _finish(rep, t0)

    try:
        t_load = time.time()
        if segmenter is None:
            from .core.pipeline import Segmenter

            segmenter = Segmenter.load(None, device=device)
        rep["model"] = segmenter.identity
        check("model", True, f"{rep['model'].get('encoder')} + {rep['model'].get('adapter')} on {segmenter.device} "
                             f"(loaded in {time.time() - t_load:.1f} s)")
    except (EffiCellError, ValueError) as exc:
        check("model", False, str(exc))
        return _finish(rep, t0)

    want = exp.model.get("adapter_sha256")
    have = rep["model"].get("adapter_sha256")
    if want and have and want != have:
        check("model identity", False, f"{exp_path}: the expectation was made with another model (adapter sha256 "
                                        f"{want[:12]}, this one is {have[:12]}); regenerate it with "
                                        "resources/samples/make_selftest_expectation.py")
        return _finish(rep, t0)

    try:
        t_seg = time.time()
        res = segmenter.segment(img, diameter=exp.diameter)
        seconds = time.time() - t_seg
    except Exception as exc:  # noqa: BLE001 - any failure of the model run is a failed self-test, reported in words
        check("segmentation", False, f"segmenting {exp.image} failed ({type(exc).__name__}: {exc})")
        return _finish(rep, t0)
    check("segmentation", True, f"{res.n_cells} cells in {seconds:.2f} s on {res.settings.get('device')}")

    from .core.metrics import match_stats

    ap50 = match_stats(expected, res.labels, (0.5,))[0.5].ap
    rep["result"] = {"n_cells": res.n_cells, "expected_n_cells": exp.n_cells, "tolerance": exp.n_cells_tolerance,
                     "ap50": round(ap50, 4), "min_ap50": exp.min_ap50, "seconds": round(seconds, 3),
                     "device": res.settings.get("device"), "diameter": exp.diameter}
    check("cell count", abs(res.n_cells - exp.n_cells) <= exp.n_cells_tolerance,
          f"{res.n_cells} cells, expected {exp.n_cells} ± {exp.n_cells_tolerance}")
    check("agreement", ap50 >= exp.min_ap50, f"AP@0.5 vs the stored result {ap50:.3f} (needs ≥ {exp.min_ap50:.2f})")
    return _finish(rep, t0, complete=True)


def _finish(rep: dict[str, Any], t0: float, complete: bool = False) -> dict[str, Any]:
    failed = [c for c in rep["checks"] if not c["ok"]]
    rep["ok"] = complete and not failed
    rep["seconds"] = round(time.time() - t0, 2)
    rep["summary"] = ("PASS: EffiCell works on this computer" if rep["ok"]
                      else f"FAIL ({failed[0]['name']}): {failed[0]['detail']}" if failed else "FAIL: self-test incomplete")
    return rep


def format_report(rep: dict[str, Any]) -> str:
    """The report as plain text (the CLI prints it; the GUI shows it in a dialog)."""
    lines = [f"EffiCell {rep.get('app_version')} self-test", f"  {'bundle' if rep.get('frozen') else 'python'}: "
             f"Python {rep.get('python')} on {rep.get('platform')}"]
    lines += [f"  {s}" for s in (rep.get("device_lines") or [])[1:]]  # the first is the device check's detail
    for c in rep.get("checks", []):
        lines.append(f"  [{'ok' if c['ok'] else 'FAIL'}] {c['name']}: {c['detail']}")
    lines.append(f"{rep.get('summary')} ({rep.get('seconds')} s)")
    return "\n".join(lines)


def run_selftest() -> int:
    """Print the self-test report to stdout; the reason of a failure also to stderr. Returns 0 / 1."""
    rep = selftest_report()
    print(format_report(rep), flush=True)
    if not rep["ok"]:
        print(f"selftest {rep['summary']}", file=sys.stderr)
        return 1
    return 0


def make_expectation(segmenter: Any, image: str | Path, out_dir: str | Path, diameter: float | None = None,
                     annotation: str | Path | None = None, min_ap50: float = DEFAULT_MIN_AP50) -> Path:
    """Segment ``image`` with ``segmenter`` and write ``selftest_expected.json`` + its label image to ``out_dir``.

    ``diameter`` None: taken from ``annotation`` (human labels of the sample) when given, else
    estimated by the model. ``image`` must lie inside ``out_dir`` (paths are stored relative).
    Raises :class:`SelftestError` when the model finds no cells (no useful expectation).
    """
    import datetime

    import numpy as np
    import tifffile

    from .core.fileio import atomic_write_text, atomic_write_with
    from .core.images import read_image, read_mask
    from .core.metrics import match_stats
    from .core.training_data import object_diameter

    out_dir, image = Path(out_dir).resolve(), Path(image).resolve()
    try:
        rel_image = image.relative_to(out_dir).as_posix()
    except ValueError as exc:
        raise SelftestError(image, f"the sample image must lie inside {out_dir}") from exc
    img = read_image(image)
    gt = read_mask(annotation, img.shape) if annotation is not None else None
    if diameter is None:
        diameter = object_diameter(gt) if gt is not None and gt.max() > 0 else segmenter.segment(img).diameter
    if not diameter or diameter <= 0:
        raise SelftestError(image, "no cell diameter: give one, or an annotation of the sample")
    res = segmenter.segment(img, diameter=float(diameter))
    if res.n_cells < 1:
        raise SelftestError(image, "the model found no cells in the sample; it cannot serve as a self-test")
    labels_name = "selftest_expected_labels.tif"
    labels = res.labels.astype(np.uint16 if res.n_cells < 65536 else np.uint32)
    atomic_write_with(out_dir / labels_name, lambda p: tifffile.imwrite(p, labels, compression="zlib"))
    import torch

    exp = Expectation(image=rel_image, labels=labels_name, n_cells=res.n_cells,
                      n_cells_tolerance=max(2, int(round(0.1 * res.n_cells))), min_ap50=min_ap50,
                      diameter=round(float(diameter), 3),
                      model={k: segmenter.identity.get(k) for k in ("encoder", "encoder_sha256", "adapter", "adapter_sha256")},
                      created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                      made_with={"app_version": __version__, "torch": torch.__version__, "device": res.settings.get("device"),
                                 "platform": platform.platform()},
                      ap50_vs_annotation=round(match_stats(gt, res.labels, (0.5,))[0.5].ap, 4) if gt is not None else None)
    path = out_dir / EXPECTATION_FILE
    atomic_write_text(path, exp.to_json() + "\n")
    return path
