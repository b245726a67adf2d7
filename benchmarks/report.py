"""Assemble docs/benchmarks.md from the sections the benchmark scripts write to benchmarks/results/*.md.

Each benchmark writes its own section (with the machine and the command) and then calls
``write_report()``, so docs/benchmarks.md always holds the latest measurement of every benchmark.
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
ORDER = ["accuracy", "speed", "fewshot_rest", "fewshot_rest_keep_trained", "fewshot", "gpu", "project_vs_cli", "measure", "project", "window", "viewer_large", "large_images", "bundle"]


def machine() -> str:
    """One line describing this machine: CPU model, cores, memory, OS, torch."""
    from efficell_app.core.device import cpu_name

    cpu = cpu_name()
    mem = ""
    try:
        kb = int(next(ln for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal")).split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        pass
    try:
        import torch

        tv = f", torch {torch.__version__}"
    except ImportError:
        tv = ""
    return f"{cpu}, {os.cpu_count()} cores{mem}, {platform.system()} {platform.release()}{tv}"


def load_average() -> str:
    try:
        return " / ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def write_section(name: str, text: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.md"
    path.write_text(text.rstrip() + "\n")
    write_report()
    return path


def write_report() -> Path:
    parts = ["# EffiCell benchmarks", "",
             "Every number below was measured by the script named in its section, on the machine it names. "
             "Re-run a script to refresh its section; `python benchmarks/report.py` reassembles this page.", ""]
    names = [n for n in ORDER if (RESULTS / f"{n}.md").exists()]
    names += sorted(p.stem for p in RESULTS.glob("*.md") if p.stem not in ORDER)
    for n in names:
        parts.append((RESULTS / f"{n}.md").read_text().rstrip())
        parts.append("")
    try:
        rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        rev = ""
    parts.append(f"_Assembled {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}{' at commit ' + rev if rev else ''}._")
    out = ROOT / "docs" / "benchmarks.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(parts) + "\n")
    return out


if __name__ == "__main__":
    print(write_report())
