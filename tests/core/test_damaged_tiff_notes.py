"""A TIFF read although its reader complained (a tag pointing past the end of a cut file) says so
beside the result, naming the file; tifffile's own log lines (no file name, twice) stay off the terminal."""

from __future__ import annotations

import logging
import struct
from pathlib import Path

import numpy as np
import tifffile

from efficell_app.core.batch import expand_scenes
from efficell_app.core.images import _short, read_image


def _tag_past_the_end(path: Path) -> None:
    tifffile.imwrite(path, (np.arange(64 * 64) % 200).astype(np.uint8).reshape(64, 64), description="x" * 500,
                     metadata=None)
    data = bytearray(path.read_bytes())
    entry = data.find(b"\x0e\x01\x02\x00")  # the ImageDescription (270, ASCII) entry of the first IFD
    data[entry + 8:entry + 12] = struct.pack("<I", 10_000_000)  # its value now lies past the end of the file
    path.write_bytes(bytes(data))


def test_complaints_become_a_note_naming_the_file(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    path = tmp_path / "cut.ome.tif"
    _tag_past_the_end(path)
    terminal = logging.StreamHandler()  # what the command line sets up: warnings to stderr
    logging.getLogger().addHandler(terminal)
    try:
        assert expand_scenes([path]) == [(path, None, None)]
        img = read_image(path)
    finally:
        logging.getLogger().removeHandler(terminal)
    assert img.data.shape == (1, 64, 64)
    assert any("may be damaged or truncated" in n and "invalid value offset" in n for n in img.notes), img.notes
    assert "tifffile" not in capsys.readouterr().err  # nothing of the reader's own went to the terminal


def test_short_reasons_leave_raw_bytes_out() -> None:
    assert _short("Invalid ChunkMap signature b'~j\\x7f\\x00\\xaagh' in file 'x.nd2'") == \
        "Invalid ChunkMap signature (raw bytes) in file 'x.nd2'"
