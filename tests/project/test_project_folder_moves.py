"""The project folder renamed while open, a copying add killed midway: nothing is written where the
project no longer is, and nothing is left where the project does not know it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tifffile

from efficell_app.project import Project
from efficell_app.project.errors import ProjectError


def _images(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = np.zeros((32, 32), np.uint8)
        img[4 + i:14, 4:14] = 200
        tifffile.imwrite(folder / f"img{i}.tif", img)
    return folder


def test_renamed_while_open_saves_nothing_at_the_old_place(tmp_path: Path) -> None:
    old, new = tmp_path / "lab" / "P", tmp_path / "lab" / "P renamed"
    p = Project.create(old)
    (image_id,) = p.add_folder(_images(tmp_path / "imgs", 1), "s").added
    p.save_annotation(image_id, np.ones((32, 32), np.int32))
    os.rename(old, new)  # the user renames the folder in the file manager while the window has it open
    with pytest.raises(ProjectError, match="moved, renamed or deleted while it was open"):
        p.save_annotation(image_id, np.full((32, 32), 2, np.int32))
    with pytest.raises(ProjectError, match="moved, renamed"):
        p.record_result(image_id, np.ones((32, 32), np.int32), {}, {})
    p.close()
    assert not old.exists()  # no old folder made again (before: the annotation and a backup went there)
    with Project.open(new) as again:
        found = again.labels_for(image_id)
        assert found is not None and found.labels.max() == 1 and found.origin.startswith("annotation")


def test_a_copying_add_killed_midway_leaves_no_stray_copies(tmp_path: Path) -> None:
    src = _images(tmp_path / "raw", 8)
    root = tmp_path / "P"
    Project.create(root).close()
    script = textwrap.dedent(f"""
        import os
        from efficell_app.project import Project, images
        real, calls = images._copy_in, []
        def copy_then_die(a, b):
            real(a, b)
            calls.append(b)
            if len(calls) == 5:
                os._exit(9)  # killed after five copies, before their rows were committed
        images._copy_in = copy_then_die
        Project.open({str(root)!r}).add_folder({str(src)!r}, "exp", copy=True)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 9, proc.stderr
    assert len(list((root / "images").rglob("*.tif"))) == 5  # the copies the killed run made
    with Project.open(root) as p:  # tidied at open: the unrecorded copies go
        assert p.list_images() == [] and list((root / "images").rglob("*.tif")) == []
        assert len(p.add_folder(src, "exp", copy=True).added) == 8
        names = sorted(f.name for f in (root / "images").rglob("*.tif"))
        assert names == [f"img{i}.tif" for i in range(8)]  # no img0_2.tif beside a stray img0.tif
    assert sorted(f.name for f in src.iterdir()) == names  # the originals untouched
