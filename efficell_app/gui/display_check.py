"""Before Qt starts: can its window-system plugin load here? Qt aborts the process (exit 134) when
it cannot; EffiCell says instead which system library is missing and how to install it."""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Mapping
from pathlib import Path

# What Qt 6's X11 (xcb) plugin loads on Debian/Ubuntu beyond a minimal system (docs/install.md).
QT_XCB_PACKAGES = ("libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 "
                   "libxcb-shape0 libxcb-xinerama0 libxcb-xkb1 libxkbcommon-x11-0 libegl1 libgl1 libfontconfig1 "
                   "libdbus-1-3")


def xcb_plugin() -> Path | None:
    """Qt's xcb platform plugin of the installed PySide6 (None where there is none)."""
    try:
        import PySide6
    except ImportError:
        return None
    plugin = Path(PySide6.__file__).parent / "Qt" / "plugins" / "platforms" / "libqxcb.so"
    return plugin if plugin.is_file() else None


def display_problem(env: Mapping[str, str] | None = None, plugin: Path | None = None) -> str | None:
    """Why the window cannot open on this Linux desktop, as a message for the user; None when it can
    (or when Qt will not use the X11 plugin: another OS, Wayland, or QT_QPA_PLATFORM set to another)."""
    env = os.environ if env is None else env
    if not sys.platform.startswith("linux"):
        return None
    platform = env.get("QT_QPA_PLATFORM", "").split(":")[0].strip()
    if platform not in ("", "xcb") or (not platform and env.get("WAYLAND_DISPLAY")):
        return None
    if not env.get("DISPLAY"):
        return ("EffiCell cannot open its window: no display (DISPLAY is not set). Start it from a desktop "
                "session, or use the command line: efficell --help")
    plugin = plugin or xcb_plugin()
    if plugin is None:
        return None
    try:
        ctypes.CDLL(str(plugin), mode=ctypes.RTLD_LOCAL)
    except OSError as exc:
        return ("EffiCell cannot open its window: Qt's X11 platform plugin cannot load "
                f"({str(exc).split(': cannot open')[0]} is missing, or the plugin is damaged).\n"
                f"On Debian/Ubuntu install the libraries Qt needs:\n  sudo apt install {QT_XCB_PACKAGES}\n"
                "The command line works without them: efficell --help")
    if x_server_reachable(env["DISPLAY"]) is False:
        return (f"EffiCell cannot open its window: no X server answers at DISPLAY={env['DISPLAY']} (not running, "
                "or this user may not use it). Start EffiCell from the desktop session itself, or use the "
                "command line: efficell --help")
    return None


def x_server_reachable(display: str) -> bool | None:
    """Whether an X server accepts a connection at ``display``, asked as Qt's plugin asks (``xcb_connect``);
    None when libxcb is not there to ask."""
    try:
        xcb = ctypes.CDLL("libxcb.so.1")
    except OSError:
        return None
    xcb.xcb_connect.restype = ctypes.c_void_p
    xcb.xcb_connect.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
    xcb.xcb_connection_has_error.argtypes = [ctypes.c_void_p]
    xcb.xcb_disconnect.argtypes = [ctypes.c_void_p]
    conn = xcb.xcb_connect(display.encode(), None)  # never NULL: a failed connection reports its error
    try:
        return xcb.xcb_connection_has_error(conn) == 0
    finally:
        xcb.xcb_disconnect(conn)
