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


def test_a_read_only_index_is_not_called_damaged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlite3

    from efficell_app.project import store as store_module

    root = tmp_path / "P"
    Project.create(root).close()
    real_access = os.access
    monkeypatch.setattr(store_module.os, "access",  # as root every file is writable: stand in for chmod a-w
                        lambda path, mode: False if Path(path).name == "project.efficell" else real_access(path, mode))
    real_connect = sqlite3.connect

    def read_only(*a, **k):  # noqa: ANN002, ANN003, ANN202 - what SQLite answers for a read-only index
        conn = real_connect(*a, **k)

        class Refusing:
            def __getattr__(self, name: str):  # noqa: ANN204
                return getattr(conn, name)

            def execute(self, sql: str, *args):  # noqa: ANN002, ANN202
                if "journal_mode" in sql:
                    raise sqlite3.OperationalError("disk I/O error")
                return conn.execute(sql, *args)

        return Refusing()

    monkeypatch.setattr(store_module.sqlite3, "connect", read_only)
    with pytest.raises(ProjectError) as err:
        Project.open(root)
    assert "read-only" in str(err.value) and "damaged" not in str(err.value).replace("nothing is damaged", "")


def test_moved_originals_are_found_again(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    from efficell_app.cli import main

    raw = _images(tmp_path / "raw" / "day1", 3)
    root = tmp_path / "P"
    with Project.create(root) as p:
        ids = p.add_folder(raw, "day1").added
        p.save_annotation(ids[0], np.ones((32, 32), np.int32))
    moved = tmp_path / "archive" / "2026" / "day1"
    moved.parent.mkdir(parents=True)
    os.rename(raw, moved)
    tifffile.imwrite(moved / "img2.tif", np.zeros((32, 32), np.uint8))  # a different image under an old name
    assert main(["project", "relink", str(root), str(tmp_path / "archive")]) == 1
    out = capsys.readouterr()
    assert "2 image(s) found again" in out.out and "img2.tif: a file of that name is there, but not the image" in out.err
    with Project.open(root) as p:
        assert [r.path.name for r in p.missing_images()] == ["img2.tif"]
        assert p.labels_for(ids[0]).origin.startswith("annotation")  # its annotation went with it
        assert p.get_image(ids[0]).path == moved / "img0.tif"
    assert main(["project", "relink", str(root), str(tmp_path / "nowhere")]) == 2


def test_an_original_changed_on_disk_is_refused_not_measured(tmp_path: Path) -> None:
    from efficell_app.core.errors import ImageReadError
    from efficell_app.tasks.export import export_project

    raw = _images(tmp_path / "raw", 2)  # two images of one size
    with Project.create(tmp_path / "P") as p:
        a, b = p.add_folder(raw, "s").added
        for i in (a, b):
            run = p.start_run({"method": "threshold"}, {"encoder": "test"}, "s")
            p.record_result(i, (p.read_image(i).data[0] > 100).astype(np.int32), {}, {}, run_id=run)
        os.rename(raw / "img0.tif", raw / "x.tif")  # the two originals swapped on disk
        os.rename(raw / "img1.tif", raw / "img0.tif")
        os.rename(raw / "x.tif", raw / "img1.tif")
        with pytest.raises(ImageReadError, match="changed since it was added"):
            p.read_image(a)
        report = export_project(p, tmp_path / "cells.xlsx")
        assert report.n_images == 0 and len(report.errors) == 2 and "changed since" in report.errors[0]
