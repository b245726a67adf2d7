"""Build hook: the top-level ``resources/`` folder (built-in model, sample images, icons) travels
inside the wheel as ``efficell_app/resources`` so a plain ``pip install`` finds it
(``core/resources.py``). Everything else is in pyproject.toml."""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", "*.part", ".*")


class BuildPyWithResources(build_py):
    """build_py, then copy resources/ into the built package (not in editable mode: there
    ``resources_dir()`` finds the checkout's folder)."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        src = ROOT / "resources"
        if not src.is_dir():
            raise SystemExit(f"{src} is missing: the built-in model and samples cannot be packaged")
        dst = Path(self.build_lib) / "efficell_app" / "resources"
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(src, dst, ignore=SKIP)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        extra = []
        if not getattr(self, "editable_mode", False):
            base = Path(self.build_lib) / "efficell_app" / "resources"
            extra = [str(base / p.relative_to(ROOT / "resources")) for p in (ROOT / "resources").rglob("*")
                     if p.is_file() and "__pycache__" not in p.parts and not p.name.startswith(".")]
        return super().get_outputs(include_bytecode) + extra


setup(cmdclass={"build_py": BuildPyWithResources})
