"""Without the system libraries Qt's X11 plugin needs, ``efficell`` says which one is missing and
how to install it, and exits 1, instead of Qt's abort (exit 134)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from efficell_app.gui.display_check import display_problem, xcb_plugin

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Qt's xcb plugin is Linux-only")


def test_messages_for_each_case(tmp_path: Path) -> None:
    broken = tmp_path / "libqxcb.so"
    broken.write_bytes(b"not a shared library")
    msg = display_problem({"DISPLAY": ":0"}, broken)
    assert msg is not None and "sudo apt install libxcb-cursor0" in msg and "efficell --help" in msg
    assert "DISPLAY is not set" in (display_problem({}, broken) or "")
    # Qt will not use the X11 plugin: nothing to check
    assert display_problem({"QT_QPA_PLATFORM": "offscreen"}, broken) is None
    assert display_problem({"WAYLAND_DISPLAY": "wayland-0", "DISPLAY": ":0"}, broken) is None
    assert display_problem({"QT_QPA_PLATFORM": "xcb", "DISPLAY": ":0"}, broken) is not None


def test_efficell_without_qt_libraries_exits_with_a_message() -> None:
    import ctypes

    plugin = xcb_plugin()
    if plugin is None:
        pytest.skip("PySide6 has no xcb plugin here")
    try:
        ctypes.CDLL(str(plugin))
    except OSError as exc:
        missing = str(exc).split(":")[0]
    else:
        pytest.skip("Qt's X11 libraries are installed here: the plugin loads")
    env = {k: v for k, v in os.environ.items() if k not in ("QT_QPA_PLATFORM", "WAYLAND_DISPLAY")}
    env["DISPLAY"] = ":99"
    run = subprocess.run([sys.executable, "-m", "efficell_app"], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, (run.returncode, run.stderr[-500:])  # not 134 (abort)
    assert missing in run.stderr and "sudo apt install" in run.stderr


def test_efficell_with_no_x_server_at_display_exits_with_a_message() -> None:
    """DISPLAY names a server that is not running (an ssh session without forwarding, a stale
    variable): a message and exit 1, not Qt's abort."""
    plugin = xcb_plugin()
    if plugin is None:
        pytest.skip("PySide6 has no xcb plugin here")
    try:
        import ctypes

        ctypes.CDLL(str(plugin))
    except OSError:
        pytest.skip("Qt's X11 libraries are missing here (the test above covers that)")
    assert display_problem({"DISPLAY": ":987"}) is not None  # no server at :987
    env = {k: v for k, v in os.environ.items() if k not in ("QT_QPA_PLATFORM", "WAYLAND_DISPLAY")}
    env["DISPLAY"] = ":987"
    run = subprocess.run([sys.executable, "-m", "efficell_app"], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, (run.returncode, run.stderr[-500:])
    assert "no X server answers at DISPLAY=:987" in run.stderr
