"""The progress line of a batch command (segment, measure): one per image, one home for its form."""

from __future__ import annotations

from typing import TextIO

BAR_WIDTH = 24


def progress_line(stream: TextIO, index: int, total: int, name: str, status: str) -> None:
    """``[#####...] k/n name: status`` for image ``index`` of ``total``; on a terminal the line is
    redrawn in place (and ended after the last image), in a log file each image has its own."""
    tty = stream.isatty()
    done = int(BAR_WIDTH * index / max(total, 1))
    line = f"[{'#' * done}{'.' * (BAR_WIDTH - done)}] {index}/{total} {name}: {status}"
    print(("\r" + line.ljust(100)) if tty else line, file=stream, end="" if tty and index < total else "\n", flush=True)
