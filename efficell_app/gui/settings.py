"""Application preferences stored with QSettings (device, threads, pixel size, recent projects)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QSettings

from ..core.measure import MIN_OBJECT_PX

ORG = "EffiCell"
APP = "EffiCell"
MAX_RECENT = 8


def qsettings() -> QSettings:
    """The app's settings store; tests isolate it through ``EFFICELL_HOME``."""
    home = os.environ.get("EFFICELL_HOME")
    if home:
        return QSettings(str(Path(home) / "efficell_gui.ini"), QSettings.Format.IniFormat)
    return QSettings(ORG, APP)


@dataclass
class Preferences:
    """User preferences shown in the settings dialog."""

    device: str = "auto"  # "auto" | "cpu" | "cuda:N" | "mps"
    run_on: str = ""  # "" = this computer, else a Dask cluster spec (tasks.cluster: local[:N], tcp://..., slurm[:N])
    threads: int = 0  # 0 = automatic (all cores but one, so the window stays responsive)
    pixel_size_um: float = 0.0  # 0 = unknown (measurements in pixels)
    cache_dir: str = ""  # "" = the default weights cache
    auto_segment: bool = True  # segment images as soon as they are added
    min_object_px: int = MIN_OBJECT_PX  # smaller objects are not measured

    def __post_init__(self) -> None:
        self.min_object_px = max(0, int(self.min_object_px))

    @classmethod
    def load(cls) -> Preferences:
        s = qsettings()
        d = cls()
        return cls(
            device=str(s.value("prefs/device", d.device)),
            run_on=str(s.value("prefs/run_on", d.run_on) or ""),
            threads=_int(s.value("prefs/threads", d.threads)),
            pixel_size_um=_float(s.value("prefs/pixel_size_um", d.pixel_size_um)),
            cache_dir=str(s.value("prefs/cache_dir", d.cache_dir) or ""),
            auto_segment=_bool(s.value("prefs/auto_segment", d.auto_segment)),
            min_object_px=_int(s.value("prefs/min_object_px", d.min_object_px)),
        )

    def save(self) -> None:
        s = qsettings()
        s.setValue("prefs/device", self.device)
        s.setValue("prefs/run_on", self.run_on)
        s.setValue("prefs/threads", int(self.threads))
        s.setValue("prefs/pixel_size_um", float(self.pixel_size_um))
        s.setValue("prefs/cache_dir", self.cache_dir)
        s.setValue("prefs/auto_segment", bool(self.auto_segment))
        s.setValue("prefs/min_object_px", int(self.min_object_px))
        s.sync()

    def effective_threads(self) -> int:
        """Torch threads for background work: leave one core to the window."""
        if self.threads > 0:
            return self.threads
        return max(1, (os.cpu_count() or 2) - 1)


def apply_environment(prefs: Preferences) -> None:
    """Preferences the core reads from the environment (the weights cache folder)."""
    if prefs.cache_dir:
        os.environ["EFFICELL_WEIGHTS_DIR"] = prefs.cache_dir


def recent_projects() -> list[str]:
    value = qsettings().value("recent/projects", [])
    if isinstance(value, str):
        value = [value]
    return [str(v) for v in (value or []) if v]


def add_recent_project(path: str | Path) -> list[str]:
    path = str(Path(path))
    items = [p for p in recent_projects() if p != path]
    items.insert(0, path)
    items = items[:MAX_RECENT]
    s = qsettings()
    s.setValue("recent/projects", items)
    s.sync()
    return items


def welcome_wanted() -> bool:
    """Show the welcome dialog at start: no recent projects, not turned off by the user or
    ``$EFFICELL_NO_WELCOME`` (tests and scripts set it)."""
    if os.environ.get("EFFICELL_NO_WELCOME"):
        return False
    return not _bool(qsettings().value("welcome/dont_show", False)) and not recent_projects()


def set_welcome_wanted(on: bool) -> None:
    """"Don't show again" (``on=False``) or show it again at the next start without projects."""
    s = qsettings()
    s.setValue("welcome/dont_show", not on)
    s.sync()


def _int(v: object) -> int:
    try:
        return int(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0


def _float(v: object) -> float:
    try:
        return float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.0


def _bool(v: object) -> bool:
    if isinstance(v, str):
        return v.lower() in ("1", "true", "yes")
    return bool(v)
