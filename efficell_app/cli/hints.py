"""What the command line adds to a library's message: the option that fixes it. Library messages
name no option because the window shows them too (it asks with a dialog, or names its Settings)."""

from __future__ import annotations

from ..core.device import DeviceUnavailable
from ..core.image_data import PlanesNeeded


def with_options(exc: BaseException) -> str:
    """``str(exc)``, with the options that choose a stack's plane or name the device when they help."""
    if isinstance(exc, PlanesNeeded):
        return f"{exc} ({exc.command_line})"
    if isinstance(exc, DeviceUnavailable):
        return f"--device {exc.device}: {exc}"
    return str(exc)
